"""SessionManager: the handshake and session life cycle of one link, apart from its datagram path.

It admits or refuses a peer, feeds TLS 1.3 over the reliable channel, sends and installs datagram
keys, rekeys and ends sessions, and keeps the amplification budget of an unauthenticated peer. It owns
the pending handshakes and the live session; `LinkCore` (core.py) keeps what happens to datagrams once
keys are in use (sealing, paths, probes, first copy wins) and is reached only through the callables
given here, so this class runs alone in a test with two lists and a virtual clock. Sans-I/O like the
core: bytes and `now` in, frames and events out through those callables.
"""

from __future__ import annotations

import os
import ssl
from collections import Counter, deque
from collections.abc import Callable

from telesurg.link import wire
from telesurg.link.config import LinkSettings
from telesurg.link.epochs import KEY_BYTES
from telesurg.link.events import Event, HandshakeComplete, PeerRefused, SessionClosed, SessionEventReceived
from telesurg.link.gate import HandshakeGate
from telesurg.link.session import KEYS, RECORD_CLOSE, RECORD_EVENT, RECORD_KEYS, Addr, Session
from telesurg.link.tls import TlsChannel, TlsFailure

# A handshaking client pads what it sends on each path to this many bytes: the server answers an
# unauthenticated peer with no more bytes than it received, and its first flight is ~1 KB per path.
HANDSHAKE_PAD_TO = 1200
MAX_HELD = 64
Outgoing = tuple[str, bytes, Addr | None]  # (path, datagram, peer address learnt on it or None)


class SessionManager:
    """The pending handshakes and the live session of one link (client or server side).

    The datagram layer hands it: `send`, to queue one datagram on a path; `emit`, to hand an event to
    the application; `on_start(now)`, called when a session goes live (fresh sequence numbers and
    replay windows, path monitors restarted); `on_end()`, called when the live session ends (queued
    video dropped). Every call may move `next_timer()`; the caller re-reads it after each.
    """

    def __init__(self, settings: LinkSettings, ctx: ssl.SSLContext, *, is_client: bool, counters: Counter[str],
                 send: Callable[[Outgoing], None], emit: Callable[[Event], None],
                 on_start: Callable[[float], None], on_end: Callable[[], None]) -> None:
        self.settings = settings
        self.is_client = is_client
        self.counters = counters
        self._ctx = ctx
        self._gate = HandshakeGate(settings)
        self._path_names: tuple[str, ...] = tuple(settings.path_names)
        self._send, self._emit, self._on_start, self._on_end = send, emit, on_start, on_end
        self.live: Session | None = None
        self.pending: dict[int, Session] = {}
        self.closed_sids: deque[int] = deque(maxlen=8)  # recently ended sessions
        self.peer_name: str | None = None
        self.peer_fingerprint: str | None = None
        self._queued_events: list[bytes] = []  # session events sent before the session is established
        self._reconnecting = False  # client: a new handshake after the peer went away (settings.reconnect)
        self._closed_by_us = False

    @property
    def established(self) -> bool:
        return self.live is not None and self.live.established

    # -- calls from the application, through the core ---------------------------------------------
    def connect(self, now: float) -> None:
        """Client: start (or restart) the handshake with a fresh random session id."""
        self.pending.clear()
        sid = int.from_bytes(os.urandom(8), "big")
        session = Session(sid, TlsChannel(self._ctx, is_client=True), now, self.settings.epoch_grace_s)
        session.tls.start()
        session.rel.send(session.tls.take_output())
        self.pending[sid] = session
        self.flush(session, now)

    def send_event(self, payload: bytes, now: float) -> None:
        """Reliable, ordered, through TLS; queued until the session is established."""
        session = self.live
        if session is None or not session.established:
            self._queued_events.append(payload)
            return
        session.write_record(RECORD_EVENT, payload)
        self.flush(session, now)

    def close(self, reason: str, now: float) -> None:
        """Forget every session for good: no reconnect after (the core has told the peer)."""
        self._closed_by_us = True
        self._reconnecting = False
        self.pending.clear()
        self.end(reason, now)

    # -- timers ------------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        times: list[float] = []
        session = self.live
        if session is not None:
            # a rekey waits while the previous one is unconfirmed (a silent peer): its deadline, already
            # past, would otherwise make the driver call handle_timer in a busy loop
            rekey = session.next_rekey if session.pending_send is None else None
            for t in (session.rel.next_timer(), rekey):
                if t is not None:
                    times.append(t)
        for pending in self.pending.values():
            times.append(pending.started + self.settings.handshake_timeout_s)
            t = pending.rel.next_timer()
            if t is not None:
                times.append(t)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Rekey when due, retransmit, and give up on handshakes older than handshake_timeout_s."""
        session = self.live
        if session is not None:
            if session.next_rekey is not None and now >= session.next_rekey and session.pending_send is None:
                self._rekey(session, now)
            self.flush(session, now)
        for sid, pending in list(self.pending.items()):
            if now >= pending.started + self.settings.handshake_timeout_s:  # the sum next_timer uses
                del self.pending[sid]
                self.counters["handshake_timeout"] += 1
                if self.is_client:
                    self._emit(SessionClosed("handshake_timeout", now, sid))
                    if self._reconnecting and not self.pending:
                        self.connect(now)  # the peer is still away: try again
            else:
                self.flush(pending, now)

    # -- datagrams the core routes here ------------------------------------------------------------
    def receive_handshake(self, data: bytes, kind: int, sid: int, path: str, now: float,
                          addr: Addr | None) -> None:
        """One plaintext handshake datagram (HS_DATA, HS_ACK, HS_PAD); raises wire.WireError to refuse."""
        session = self.pending.get(sid)
        if session is None and self.live is not None and self.live.sid == sid:
            session = self.live
        if session is not None and session.epochs.can_send:
            raise wire.WireError("late_handshake")  # keys are in use: plaintext frames could be forged
        body = memoryview(data)[wire.OUTER.size:]
        if session is None:
            if self.is_client or kind != wire.Kind.HS_DATA:
                raise wire.WireError("session")
            seq, _ = wire.parse_rel_data(body)
            if seq != 0:
                raise wire.WireError("session")
            refusal = None if self._gate.source_allowed(addr) else "cidr"
            source = addr[0] if addr is not None else f"path:{path}"
            refusal = refusal or self._gate.admit(source, len(self.pending), now)
            if refusal is not None:
                self._refuse(refusal, path, addr, now, sid)
                return
            session = Session(sid, TlsChannel(self._ctx, is_client=False), now, self.settings.epoch_grace_s)
            self.pending[sid] = session
        if addr is not None:
            session.addrs[path] = addr
        session.bytes_in += len(data)
        if path not in session.heard:
            session.heard.append(path)
        if kind == wire.Kind.HS_PAD:
            pass  # its only use is the bytes it brought
        elif kind == wire.Kind.HS_ACK:
            session.rel.on_ack(*wire.parse_rel_ack(body), now)
        else:
            seq, chunk = wire.parse_rel_data(body)
            self.feed_tls(session, session.rel.on_data(seq, chunk), path, addr, now)
        if self.flush_if_current(session, now) and session.held:
            self._send_within_budget(session, [])

    def feed_tls(self, session: Session, chunks: list[bytes], path: str, addr: Addr | None, now: float) -> None:
        """Reliable-channel chunks in order, from handshake datagrams or (keys in use) sealed ones."""
        try:
            for chunk in chunks:
                records = session.tls.feed(chunk)
                out = session.tls.take_output()
                if out:
                    session.rel.send(out)
                if session.tls.handshake_done and not session.verified and not self._on_tls_done(
                        session, path, addr, now):
                    return
                for record in records:
                    self._on_app_bytes(session, record, now)
        except TlsFailure as exc:
            self._fail(session, exc.reason, path, addr, now)

    def send_keys_confirmed(self, session: Session, now: float) -> None:
        """The peer sealed a datagram with the epoch of our pending send key, so it holds that key: use it."""
        if session.pending_send is None:
            return
        session.epochs.install_send(*session.pending_send)
        session.pending_send = None
        if not session.established and session is self.live:
            self._on_established(session, now)

    # -- TLS and session life cycle ----------------------------------------------------------------
    def _on_tls_done(self, session: Session, path: str, addr: Addr | None, now: float) -> bool:
        session.verified = True
        pins = self.settings.allowed_fingerprints
        if pins and session.tls.peer_fingerprint not in pins:
            self._fail(session, "fingerprint", path, addr, now)
            return False
        if not self.is_client:  # the server chooses the session's datagram keys
            self._activate(session, now)
            self._new_epoch(session, 1)
        return True

    def _new_epoch(self, session: Session, epoch: int) -> None:
        c2s, s2c = os.urandom(KEY_BYTES), os.urandom(KEY_BYTES)
        session.epochs.install_recv(epoch, c2s)
        session.pending_send = (epoch, s2c)
        session.write_record(RECORD_KEYS, KEYS.pack(epoch, c2s, s2c))

    def _rekey(self, session: Session, now: float) -> None:
        self._new_epoch(session, session.epochs.send_epoch + 1)
        session.next_rekey = now + self.settings.rekey_s
        self.counters["rekeys"] += 1

    def _on_app_bytes(self, session: Session, data: bytes, now: float) -> None:
        for record_type, body in session.read_records(data):
            if record_type == RECORD_KEYS and self.is_client and len(body) == KEYS.size:
                epoch, c2s, s2c = KEYS.unpack(body)
                session.epochs.install_recv(epoch, s2c)
                session.epochs.install_send(epoch, c2s)
                if session is not self.live:
                    self._activate(session, now)
                if not session.established:
                    self._on_established(session, now)
            elif record_type == RECORD_EVENT and session is self.live:
                self._emit(SessionEventReceived(body, now, session.sid))
            elif record_type == RECORD_CLOSE and session is self.live:
                self.end("peer_closed: " + body.decode(errors="replace"), now)
                return
            else:
                self.counters["protocol"] += 1

    def _activate(self, session: Session, now: float) -> None:
        """The session becomes the live one (authenticated; keys being handed over), replacing any other."""
        if self.live is not None and self.live is not session:
            self._emit(SessionClosed("replaced", now, self.live.sid))
        self.live = session
        self.pending.pop(session.sid, None)
        self.peer_name, self.peer_fingerprint = session.tls.peer_name, session.tls.peer_fingerprint
        if not self.is_client:
            session.next_rekey = now + self.settings.rekey_s
        self._on_start(now)

    def _on_established(self, session: Session, now: float) -> None:
        session.established = True
        session.silence_from = now
        self._reconnecting = False
        self._emit(HandshakeComplete(session.tls.peer_name, session.tls.peer_fingerprint, now, session.sid))
        queued, self._queued_events = self._queued_events, []
        for payload in queued:
            session.write_record(RECORD_EVENT, payload)

    def _refuse(self, reason: str, path: str, addr: Addr | None, now: float, sid: int = 0) -> None:
        self.counters[reason] += 1
        self._emit(PeerRefused(reason, path, addr, now, sid))

    def _fail(self, session: Session, reason: str, path: str, addr: Addr | None, now: float) -> None:
        """Handshake or TLS failure: count, report, flush the TLS alert once, forget the session."""
        self._refuse(reason, path, addr, now, session.sid)
        alert = session.tls.take_output()
        if alert:
            session.rel.send(alert)
            self.flush(session, now)
        self.pending.pop(session.sid, None)
        if session is self.live:
            self.end(reason, now)
        elif self.is_client:
            self._emit(SessionClosed(reason, now, session.sid))

    def end(self, reason: str, now: float) -> None:
        """End the live session (if any); a client whose peer went away starts a new handshake."""
        live = self.live
        ended = live is not None and live.established
        if live is not None:
            self.closed_sids.append(live.sid)
            self._emit(SessionClosed(reason, now, live.sid))
        self.live = None
        self._on_end()
        peer_went_away = reason == "peer_silent" or (reason.startswith("peer_closed") and not reason.endswith("replaced"))
        if ended and peer_went_away and self.is_client and self.settings.reconnect and not self._closed_by_us:
            self.counters["reconnects"] += 1
            self._reconnecting = True
            self.connect(now)

    # -- reliable frames out -----------------------------------------------------------------------
    def flush_if_current(self, session: Session, now: float) -> bool:
        """Flush a session that is still live or pending (not one just failed or replaced)."""
        if session is self.live or session.sid in self.pending:
            self.flush(session, now)
            return True
        return False

    def flush(self, session: Session, now: float) -> None:
        """Put due reliable frames and any owed ack on every path (sealed once keys are in use)."""
        frames = session.rel.frames_due(now)
        ack = session.rel.take_ack()
        if not frames and ack is None:
            return
        send = self._send
        if session.epochs.can_send:
            inners = [wire.REL_DATA.pack(seq).join((bytes([wire.Inner.REL_DATA]), chunk)) for seq, chunk in frames]
            if ack is not None:
                inners.append(bytes([wire.Inner.REL_ACK]) + wire.REL_ACK.pack(*ack))
            for path in self._path_names:
                for inner in inners:
                    send((path, session.epochs.seal(inner), session.addrs.get(path)))
            return
        datagrams = [wire.encode_hs_data(session.sid, seq, chunk) for seq, chunk in frames]
        if ack is not None:
            datagrams.append(wire.encode_hs_ack(session.sid, *ack))
        if self.is_client:
            for path in self._path_names:
                for datagram in datagrams:
                    send((path, datagram, session.addrs.get(path)))
                if not session.verified:  # pay in advance for the server's reply: it sends no more than this
                    size = sum(len(d) for d in datagrams)
                    send((path, wire.encode_hs_pad(session.sid, HANDSHAKE_PAD_TO - size), None))
            return
        paths = [*session.heard, *(p for p in self._path_names if p not in session.heard)]
        self._send_within_budget(session, [(path, d, session.addrs.get(path)) for path in paths for d in datagrams])

    def _send_within_budget(self, session: Session, new: list[Outgoing]) -> None:
        """Server: until the peer is authenticated, send it no more bytes than it sent (an attacker with a
        spoofed source address gets no amplification); what does not fit waits for the peer's next bytes
        (its padding arrives right behind its ClientHello), oldest first, the paths heard from first."""
        if session.verified:  # what was held is redundant: the peer finished TLS, so it had our flight
            for item in new:
                self._send(item)
            session.held = []
            return
        queue = session.held + new if session.held else new
        held: list[Outgoing] = []
        for item in queue:
            if not held and session.bytes_out + len(item[1]) <= session.bytes_in:
                session.bytes_out += len(item[1])
                self._send(item)
            else:
                held.append(item)
        if len(held) > MAX_HELD:
            self.counters["handshake_budget_dropped"] += len(held) - MAX_HELD
            held = held[-MAX_HELD:]  # retransmissions replace what was held: keep the newest
        session.held = held
