"""The handshake and session half of LinkCore: TLS 1.3 over the reliable channel, key epochs, refusals.

A mixin so that `core.py` keeps the datagram path (send, receive, timers, first-copy-wins) and this
module keeps what happens before and around it: admitting or refusing a peer, feeding TLS, sending
and installing datagram keys, rekeying, and ending sessions. Both halves share one object's state.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from telesurg.link import wire
from telesurg.link.epochs import KEY_BYTES
from telesurg.link.events import (
    HandshakeComplete,
    MessageClass,
    PeerRefused,
    SessionClosed,
    SessionEventReceived,
)
from telesurg.link.replay import ReplayWindow
from telesurg.link.session import KEYS, RECORD_CLOSE, RECORD_EVENT, RECORD_KEYS, Addr, Session
from telesurg.link.tls import TlsChannel, TlsFailure

if TYPE_CHECKING:
    from telesurg.link.core import LinkCore

log = logging.getLogger("telesurg.link.core")
# A handshaking client pads what it sends on each path to this many bytes: the server answers an
# unauthenticated peer with no more bytes than it received, and its first flight is ~1 KB per path.
HANDSHAKE_PAD_TO = 1200
MAX_HELD = 64


class HandshakeMixin:
    """Methods of `LinkCore` (see core.py) that run the handshake and the session lifecycle."""

    def _receive_handshake(self: LinkCore, data: bytes, kind: int, sid: int, path: str, now: float,
                           addr: Addr | None) -> None:
        session = self._pending.get(sid)
        if session is None and self._session is not None and self._session.sid == sid:
            session = self._session
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
            refusal = refusal or self._gate.admit(source, len(self._pending), now)
            if refusal is not None:
                self._refuse(refusal, path, addr, now, sid)
                return
            session = Session(sid, TlsChannel(self._ctx, is_client=False), now, self.settings.epoch_grace_s)
            self._pending[sid] = session
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
            self._feed_tls(session, session.rel.on_data(seq, chunk), path, addr, now)
        if session is self._session or session.sid in self._pending:
            self._flush_reliable(session, now)
            if session.held:
                self._send_within_budget(session, [])

    # -- TLS and session life cycle ---------------------------------------------------------------
    def _feed_tls(self: LinkCore, session: Session, chunks: list[bytes], path: str, addr: Addr | None,
                  now: float) -> None:
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

    def _on_tls_done(self: LinkCore, session: Session, path: str, addr: Addr | None, now: float) -> bool:
        session.verified = True
        pins = self.settings.allowed_fingerprints
        if pins and session.tls.peer_fingerprint not in pins:
            self._fail(session, "fingerprint", path, addr, now)
            return False
        if not self.is_client:  # the server chooses the session's datagram keys
            self._activate(session, now)
            self._new_epoch(session, 1)
        return True

    def _new_epoch(self: LinkCore, session: Session, epoch: int) -> None:
        c2s, s2c = os.urandom(KEY_BYTES), os.urandom(KEY_BYTES)
        session.epochs.install_recv(epoch, c2s)
        session.pending_send = (epoch, s2c)
        session.write_record(RECORD_KEYS, KEYS.pack(epoch, c2s, s2c))

    def _rekey(self: LinkCore, session: Session, now: float) -> None:
        self._new_epoch(session, session.epochs.send_epoch + 1)
        session.next_rekey = now + self.settings.rekey_s
        self.counters["rekeys"] += 1

    def _on_app_bytes(self: LinkCore, session: Session, data: bytes, now: float) -> None:
        for record_type, body in session.read_records(data):
            if record_type == RECORD_KEYS and self.is_client and len(body) == KEYS.size:
                epoch, c2s, s2c = KEYS.unpack(body)
                session.epochs.install_recv(epoch, s2c)
                session.epochs.install_send(epoch, c2s)
                if session is not self._session:
                    self._activate(session, now)
                if not self._established:
                    self._on_established(session, now)
            elif record_type == RECORD_EVENT and session is self._session:
                self._events.append(SessionEventReceived(body, now, session.sid))
            elif record_type == RECORD_CLOSE and session is self._session:
                self._end_session("peer_closed: " + body.decode(errors="replace"), now)
                return
            else:
                self.counters["protocol"] += 1

    def _activate(self: LinkCore, session: Session, now: float) -> None:
        if self._session is not None and self._session is not session:
            self._events.append(SessionClosed("replaced", now, self._session.sid))
        self._session = session
        self._established = False
        self._pending.pop(session.sid, None)
        self._seq = [0, 0, 0, 0]
        self._dedup = [ReplayWindow() for _ in MessageClass]
        self.peer_name, self.peer_fingerprint = session.tls.peer_name, session.tls.peer_fingerprint
        if not self.is_client:
            session.next_rekey = now + self.settings.rekey_s
        for mon in self._paths.values():
            mon.start(now)

    def _on_established(self: LinkCore, session: Session, now: float) -> None:
        self._established = True
        self._established_at = now
        self._reconnecting = False
        self._events.append(HandshakeComplete(session.tls.peer_name, session.tls.peer_fingerprint, now,
                                              session.sid))
        queued, self._queued_events = self._queued_events, []
        for payload in queued:
            session.write_record(RECORD_EVENT, payload)

    def _refuse(self: LinkCore, reason: str, path: str, addr: Addr | None, now: float, sid: int = 0) -> None:
        self.counters[reason] += 1
        self._events.append(PeerRefused(reason, path, addr, now, sid))

    def _fail(self: LinkCore, session: Session, reason: str, path: str, addr: Addr | None, now: float) -> None:
        """Handshake or TLS failure: count, report, flush the TLS alert once, forget the session."""
        self._refuse(reason, path, addr, now, session.sid)
        alert = session.tls.take_output()
        if alert:
            session.rel.send(alert)
            self._flush_reliable(session, now)
        self._pending.pop(session.sid, None)
        if session is self._session:
            self._end_session(reason, now)
        elif self.is_client:
            self._events.append(SessionClosed(reason, now, session.sid))

    def _end_session(self: LinkCore, reason: str, now: float) -> None:
        self._timer_dirty = True
        ended = self._session is not None and self._established
        if self._session is not None:
            self._closed_sids.append(self._session.sid)
            self._events.append(SessionClosed(reason, now, self._session.sid))
        self._session = None
        self._established = False
        self._video.clear()
        peer_went_away = reason == "peer_silent" or (reason.startswith("peer_closed") and not reason.endswith("replaced"))
        if ended and peer_went_away and self.is_client and self.settings.reconnect and not self._closed_by_us:
            self.counters["reconnects"] += 1
            self._reconnecting = True
            self.connect(now)

    def _flush_reliable(self: LinkCore, session: Session, now: float) -> None:
        """Put due reliable frames and any owed ack on every path (sealed once keys are in use)."""
        frames = session.rel.frames_due(now)
        ack = session.rel.take_ack()
        if not frames and ack is None:
            return
        self._timer_dirty = True  # frames just sent have retransmission deadlines now
        if session.epochs.can_send:
            inners = [wire.REL_DATA.pack(seq).join((bytes([wire.Inner.REL_DATA]), chunk)) for seq, chunk in frames]
            if ack is not None:
                inners.append(bytes([wire.Inner.REL_ACK]) + wire.REL_ACK.pack(*ack))
            for path in self._path_names:
                for inner in inners:
                    self._out.append((path, session.epochs.seal(inner), session.addrs.get(path)))
            return
        datagrams = [wire.encode_hs_data(session.sid, seq, chunk) for seq, chunk in frames]
        if ack is not None:
            datagrams.append(wire.encode_hs_ack(session.sid, *ack))
        if self.is_client:
            for path in self._path_names:
                for datagram in datagrams:
                    self._out.append((path, datagram, session.addrs.get(path)))
                if not session.verified:  # pay in advance for the server's reply: it sends no more than this
                    size = sum(len(d) for d in datagrams)
                    self._out.append((path, wire.encode_hs_pad(session.sid, HANDSHAKE_PAD_TO - size), None))
            return
        paths = [*session.heard, *(p for p in self._path_names if p not in session.heard)]
        self._send_within_budget(session, [(path, d, session.addrs.get(path)) for path in paths for d in datagrams])

    def _send_within_budget(self: LinkCore, session: Session, new: list[tuple[str, bytes, Addr | None]]) -> None:
        """Server: until the peer is authenticated, send it no more bytes than it sent (an attacker with a
        spoofed source address gets no amplification); what does not fit waits for the peer's next bytes
        (its padding arrives right behind its ClientHello), oldest first, the paths heard from first."""
        if session.verified:  # what was held is redundant: the peer finished TLS, so it had our flight
            self._out.extend(new)
            session.held = []
            return
        queue = session.held + new if session.held else new
        held: list[tuple[str, bytes, Addr | None]] = []
        for item in queue:
            if not held and session.bytes_out + len(item[1]) <= session.bytes_in:
                session.bytes_out += len(item[1])
                self._out.append(item)
            else:
                held.append(item)
        if len(held) > MAX_HELD:
            self.counters["handshake_budget_dropped"] += len(held) - MAX_HELD
            held = held[-MAX_HELD:]  # retransmissions replace what was held: keep the newest
        session.held = held
