"""LinkCore: the sans-I/O secure multi-path link (one instance per peer session).

Datagrams in (with `now`, the path name and the source address), datagrams, events and timers out;
it never reads a clock or touches a socket. TLS 1.3 (mutual, allowlisted certificates) runs over a
reliable channel sent on every path; the server then sends random per-session AES-GCM keys through
TLS, and messages travel as sealed datagrams, each copied onto the paths, first copy delivered.
The handshake and the session life cycle are handshake.py's SessionManager; the paths, paths.py's PathSet.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections import Counter, deque
from collections.abc import Sequence

from telesurg.link import wire
from telesurg.link.clock_offset import ClockOffsetFilter
from telesurg.link.config import LinkConfig, LinkSettings
from telesurg.link.events import Event, MessageClass, MessageReceived, PathStateChanged
from telesurg.link.handshake import Outgoing, SessionManager
from telesurg.link.keys import Identity
from telesurg.link.paths import PathMonitor, PathSet, PathState, PathStats, ProbeOutcome
from telesurg.link.replay import ReplayWindow
from telesurg.link.session import Addr, Session
from telesurg.link.tls import make_context

__all__ = ["LinkCore", "MessageClass", "PathState", "PathStats"]
log = logging.getLogger(__name__)

_MSG_HEAD = wire.MSG.size
# The local clock stepped back (a site's wall clock set): a datagram heard this much earlier than the
# last one on its path. Datagrams are read in order, so any earlier `now` is a step; 1 ms spares the
# float noise of a clock made of a monotonic reading plus an offset.
LOCAL_STEP_BACK_S = 0.001
# Plain ints and a value->member tuple for the per-datagram path: an IntEnum attribute read costs
# ~0.2 µs and MessageClass(n) ~0.5 µs on CPython 3.11, a tuple index ~0.02 µs.
_CLASSES: tuple[MessageClass, ...] = tuple(sorted(MessageClass))
_CONTROL, _VIDEO, _EVENT = int(MessageClass.CONTROL), int(MessageClass.VIDEO), int(MessageClass.EVENT)
_SEALED = int(wire.Kind.SEALED)
_I_MSG, _I_PROBE, _I_PROBE_REPLY = int(wire.Inner.MSG), int(wire.Inner.PROBE), int(wire.Inner.PROBE_REPLY)
_I_REL_DATA, _I_REL_ACK, _I_CLOSE = int(wire.Inner.REL_DATA), int(wire.Inner.REL_ACK), int(wire.Inner.CLOSE)
_MSG_PACK = wire.MSG.pack
_MSG_UNPACK = wire.MSG.unpack_from


class LinkCore:
    def __init__(self, config: LinkConfig | LinkSettings, identity: Identity, *, is_client: bool,
                 seed: int | None = None, ctx: ssl.SSLContext | None = None) -> None:
        self.settings = config.to_settings() if isinstance(config, LinkConfig) else config
        self.identity = identity
        self.is_client = is_client
        self._rng = random.Random(seed)  # non-cryptographic choices only; keys always come from os.urandom
        self._pathset = PathSet(self.settings.path_names, self.settings)
        self._path_names, self._paths = self._pathset.names, self._pathset.monitors  # read per datagram
        self._events: deque[Event] = deque()
        self._out_control: list[Outgoing] = []
        self._out: list[Outgoing] = []  # never rebound: the session manager queues with its append
        self._video: deque[tuple[int, bytes]] = deque()
        self._seq = [0, 0, 0, 0]
        self._dedup = [ReplayWindow() for _ in MessageClass]
        # get_timer() is asked after every datagram; it is recomputed only when something that feeds it
        # may have changed (see _receive_sealed for the one change the message fast path allows).
        self._timer_dirty = True
        self._timer_at: float | None = None
        self.counters: Counter[str] = Counter()
        # a path's newest probe sample is evidence about the peer's clock while the path is not yet DOWN
        self._clock = ClockOffsetFilter(self._path_names, self.settings.down_after_s, self.counters)
        self._timer_called_at: float | None = None  # the last handle_timer's now while established
        # handshakes and the live session; every call into it may move its timers (see get_timer)
        self._sessions = SessionManager(
            # a LinkHub shares one context between its cores: building one writes and reads key files
            self.settings, ctx or make_context(identity, self.settings.peer_certs_pem, is_client=is_client),
            is_client=is_client, counters=self.counters, send=self._out.append, emit=self._events.append,
            on_start=self._session_started, on_end=self._session_ended)

    @classmethod
    def in_memory(cls, identity: Identity, peer_certs_pem: Sequence[bytes], *, is_client: bool,
                  path_names: Sequence[str] = ("a", "b"), seed: int | None = None, **tuning: object) -> LinkCore:
        """Build from in-memory certificates (tests, embedded demos): no files needed."""
        settings = LinkSettings(path_names=list(path_names), peer_certs_pem=list(peer_certs_pem), **tuning)
        return cls(settings, identity, is_client=is_client, seed=seed)

    # -- public state ----------------------------------------------------------------------------
    @property
    def established(self) -> bool:
        return self._sessions.established

    @property
    def path_names(self) -> tuple[str, ...]:
        return self._path_names

    @property
    def session_id(self) -> int | None:
        session = self._sessions.live
        return session.sid if session else None

    @property
    def peer_name(self) -> str | None:
        return self._sessions.peer_name

    @property
    def peer_fingerprint(self) -> str | None:
        return self._sessions.peer_fingerprint

    @property
    def _session(self) -> Session | None:
        """The live session (authenticated; keys maybe not yet confirmed), for the hub and tests."""
        return self._sessions.live

    @property
    def _pending(self) -> dict[int, Session]:
        """Handshakes under way (not live yet), by session id, for the hub and tests."""
        return self._sessions.pending

    def path_stats(self) -> dict[str, PathStats]:
        return self._pathset.stats()

    def path_states(self) -> dict[str, PathState]:
        """Just each path's state: `path_stats` without the figures (percentiles), for frequent polls."""
        return self._pathset.states()

    def clock_offset(self) -> float | None:
        """peer_clock - local_clock in seconds, from the probe exchange with the smallest RTT (NTP style).
        Cached: the app asks once per received message, samples arrive at the probe rate."""
        return self._clock.offset

    def freshness_offset(self) -> float | None:
        """The offset to judge a command's age with (robot side): `clock_offset()` moved toward the
        peer's clock being ahead (the command older) by the largest peer clock step the newest probes
        cannot rule out (link/clock_offset.py)."""
        return self._clock.freshness_offset

    def record_probe_outcomes(self, maxlen: int = 200_000) -> None:
        """Keep every probe's outcome (answered or timed out) until `drain_probe_outcomes`: per-path
        samples for qualification, where messages only show the path whose copy arrived first."""
        self._pathset.record_outcomes(maxlen)

    def drain_probe_outcomes(self) -> list[ProbeOutcome]:
        return self._pathset.drain_outcomes()

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def counters_total(self) -> Counter[str]:
        """A copy of the counters: the same call as `LinkHub.counters_total`, so callers can use either."""
        return Counter(self.counters)

    # -- sending ---------------------------------------------------------------------------------
    def connect(self, now: float) -> None:
        """Client: start (or restart) the handshake with a fresh random session id."""
        if not self.is_client:
            raise RuntimeError("connect() is for the client side; the server answers handshakes")
        self._timer_dirty = True
        self._sessions.connect(now)

    def send(self, msg_class: MessageClass, payload: bytes, now: float) -> int | None:
        """Queue one message on every usable path; its sequence number, or None if dropped."""
        if msg_class == _EVENT:
            self.send_event(payload, now)
            return None
        session = self._sessions.live
        if session is None or not session.established:
            self.counters["not_established"] += 1
            return None
        if len(payload) > wire.MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD ({wire.MAX_PAYLOAD})")
        seq = self._seq[msg_class]
        if msg_class == _VIDEO:
            if len(self._video) >= self.settings.video_queue_max:
                self.counters["video_dropped"] += 1
                return None
            self._seq[msg_class] = seq + 1
            self._video.append((seq, payload))
            return seq
        self._seq[msg_class] = seq + 1
        inner = _MSG_PACK(_I_MSG, msg_class, seq) + payload
        seal, addrs = session.epochs.seal, session.addrs
        if msg_class == _CONTROL:
            # Control goes on every path, DOWN ones included: the first command after a recovery gets
            # through without waiting for the probes to notice, and a copy costs ~100 bytes.
            out = self._out_control
            for path in self._path_names:
                out.append((path, seal(inner), addrs.get(path)))
            survivor = self._pathset.sole_survivor(now)
            if survivor is not None:
                # One path left: a second copy on it turns its random loss p into p² (0.1 % -> 1e-6),
                # so a single-path outage does not cost commands to the survivor's background loss.
                out.append((survivor, seal(inner), addrs.get(survivor)))
                self.counters["control_redundant_copies"] += 1
        else:
            for path in self._pathset.live():
                self._out.append((path, seal(inner), addrs.get(path)))
        return seq

    def send_event(self, payload: bytes, now: float) -> None:
        """Reliable, ordered, through TLS; queued until the session is established."""
        self._timer_dirty = True
        self._sessions.send_event(payload, now)

    def close(self, now: float, reason: str = "local_close") -> None:
        """Tell the peer (best effort, on every path) and forget the session; never reconnects after."""
        self._timer_dirty = True
        session = self._sessions.live
        if session is not None and session.established:
            inner = bytes([wire.Inner.CLOSE]) + reason.encode()[:200]
            for path in self._path_names:
                self._out_control.append((path, session.epochs.seal(inner), session.addrs.get(path)))
        self._sessions.close(reason, now)

    def datagrams_to_send(self, now: float) -> list[tuple[str, bytes]]:
        out = self.datagrams_to_send_addressed(now)
        return [(path, data) for path, data, _ in out] if out else []  # mostly empty: no copy then

    def datagrams_to_send_addressed(self, now: float) -> list[tuple[str, bytes, Addr | None]]:
        """Like datagrams_to_send, plus the peer address learnt for that path (None: use the configured one)."""
        out = self._out_control
        if not out and not self._out and not self._video:
            return []  # nothing queued: the common case after a received message
        self._out_control = []
        if self._out:
            out.extend(self._out)
            self._out.clear()
        session = self._sessions.live
        if self._video and session is not None and session.established:
            paths = list(self._pathset.live())
            while self._video:
                seq, payload = self._video.popleft()
                inner = _MSG_PACK(_I_MSG, _VIDEO, seq) + payload
                for path in paths:
                    out.append((path, session.epochs.seal(inner), session.addrs.get(path)))
        return out

    # -- what the session manager tells the datagram path ----------------------------------------
    def _session_started(self, now: float) -> None:
        """A session went live: its messages number from 0 and its paths are probed from now."""
        self._seq = [0, 0, 0, 0]
        self._dedup = [ReplayWindow() for _ in MessageClass]
        self._pathset.start(now)

    def _session_ended(self) -> None:
        self._timer_dirty = True
        self._video.clear()  # sealed for nobody now; never sent under the next session's keys

    # -- timers ----------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """Earliest deadline; the cached value unless something that feeds it may have changed."""
        if self._timer_dirty:
            self._timer_at = self._compute_timer()
            self._timer_dirty = False
        return self._timer_at

    def _compute_timer(self) -> float | None:
        session = self._sessions.live
        probing = session is not None and session.epochs.can_send
        times = (self._sessions.next_timer(), self._pathset.next_timer() if probing else None)
        return min((t for t in times if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        self._timer_dirty = True
        session = self._sessions.live
        called_at, self._timer_called_at = self._timer_called_at, (now if self._sessions.established else None)
        if session is not None and called_at is not None and now - called_at > self.settings.session_timeout_s / 2:
            # With a session the probes wake us every 1/probe_hz: a longer gap is time we did not listen
            # (the local clock stepped forward, or the process stalled), not the peer's silence. Counted
            # as silence, a 10 s step ended the session at once, and a robot's console, still hearing
            # it, learnt that only after its own session timeout.
            self._local_clock_stepped(session, now)
        if session is not None and session.established and \
                now - self._pathset.last_heard(session.silence_from) >= self.settings.session_timeout_s:
            self.counters["peer_silent"] += 1
            self._sessions.end("peer_silent", now)
            session = self._sessions.live  # None, or the reconnect's pending handshake is not live yet
        if session is not None:
            for name, mon in self._paths.items():
                change = mon.update(now)
                if change is not None:
                    self._events.append(PathStateChanged(name, change[0], change[1], now, session.sid))
                if session.epochs.can_send and mon.next_probe_at is not None and now >= mon.next_probe_at:
                    probe = wire.PROBE.pack(wire.Inner.PROBE, mon.new_probe(now), now)
                    self._out.append((name, session.epochs.seal(probe), session.addrs.get(name)))
        self._sessions.handle_timer(now)  # rekey, retransmit, handshake timeouts

    # -- receiving -------------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, path: str, now: float, addr: Addr | None = None) -> bool:
        """Process one datagram; True when it authenticated. Never raises: bad input is counted."""
        try:
            if path not in self._paths:
                self.counters["unknown_path"] += 1
                return False
            kind, sid = wire.parse_outer(data)
            if kind == _SEALED:
                return self._receive_sealed(data, sid, path, now, addr)
            self._timer_dirty = True
            self._sessions.receive_handshake(data, kind, sid, path, now, addr)
        except wire.WireError as exc:
            self.counters[exc.reason] += 1
        except Exception:  # a bug must not take the link down: count it, log it, keep going
            self._timer_dirty = True
            self.counters["internal_error"] += 1
            log.exception("unexpected error while receiving a datagram on %s", path)
        return False

    def _receive_sealed(self, data: bytes, sid: int, path: str, now: float, addr: Addr | None) -> bool:
        sessions = self._sessions
        session = sessions.live
        if session is None or session.sid != sid:
            session = sessions.pending.get(sid)
            if session is None:
                # copies still in flight on the slower path when a session ends are not an attack
                raise wire.WireError("after_close" if sid in sessions.closed_sids else "session")
        epoch, inner = session.epochs.open(data, now)
        mon = self._paths[path]
        if mon.last_heard is not None and now < mon.last_heard - LOCAL_STEP_BACK_S:
            self._local_clock_stepped(session, now)
        self._hear(mon, now)
        if addr is not None:
            session.addrs[path] = addr
        if session.pending_send is not None and epoch >= session.pending_send[0]:
            self._timer_dirty = True
            sessions.send_keys_confirmed(session, now)  # the client proved it holds the new keys
        kind = inner[0] if inner else 0
        if kind == _I_MSG:
            self._on_message(inner, path, now, sid)
            if session.rel.idle:  # the hot path: no deadline moved, a flush would do nothing
                return True
        elif kind == _I_PROBE and len(inner) == wire.PROBE.size:
            _, probe_id, t1 = wire.PROBE.unpack(inner)
            if session.epochs.can_send:
                reply = wire.PROBE_REPLY.pack(wire.Inner.PROBE_REPLY, probe_id, t1, now)
                self._out.append((path, session.epochs.seal(reply), session.addrs.get(path)))
        elif kind == _I_PROBE_REPLY and len(inner) == wire.PROBE_REPLY.size:
            _, probe_id, t1, t2 = wire.PROBE_REPLY.unpack(inner)
            rtt = mon.on_reply(probe_id, t1, now, t2)
            if rtt is not None:
                self._clock.add(path, rtt, ((t2 - t1) + (t2 - now)) / 2.0, mon._jitter, now)
        elif kind == _I_REL_DATA:
            seq, chunk = wire.parse_rel_data(memoryview(inner)[1:])
            sessions.feed_tls(session, session.rel.on_data(seq, chunk), path, addr, now)
        elif kind == _I_REL_ACK:
            session.rel.on_ack(*wire.parse_rel_ack(memoryview(inner)[1:]), now)
        elif kind == _I_CLOSE:
            if session is sessions.live:
                sessions.end("peer_closed: " + inner[1:].decode(errors="replace"), now)
            return True
        else:
            self.counters["malformed"] += 1
        self._timer_dirty = True  # probe and reliable-channel frames move deadlines
        sessions.flush_if_current(session, now)
        return True

    def _local_clock_stepped(self, session: Session, now: float) -> None:
        """The local clock jumped. Back: every deadline set before lies in the future by the step's size,
        so probes (hence the clock offset) would stop for that long, and replies to probes sent before
        would give negative RTTs. Forward: every path looks silent since. Either way: probe again now,
        count silence from now, bring deadlines back to now at the latest, and forget the offset: every
        sample describes a clock that no longer exists (None makes the robot reject commands as
        unprovably fresh until the next probe reply, one RTT later, instead of judging them with an
        offset off by the step until the filter sees it)."""
        self._timer_dirty = True
        self.counters["clock_steps"] += 1
        for mon in self._paths.values():
            mon.clock_stepped(now)
        self._clock.forget()
        session.silence_from = now
        self._timer_called_at = now
        session.rel.clock_stepped(now)
        if session.next_rekey is not None:
            session.next_rekey = min(session.next_rekey, now + self.settings.rekey_s)

    def _hear(self, mon: PathMonitor, now: float) -> None:
        """Mark the path heard. That moves only its DOWN deadline (normally later), so the cached timer
        stays exact unless that deadline was, or now is, the earliest one."""
        if self._timer_dirty:
            mon.heard(now)
            return
        cached, before = self._timer_at, mon.down_deadline()
        mon.heard(now)
        after = mon.down_deadline()
        if (before is not None and (cached is None or before <= cached)) or \
                (after is not None and (cached is None or after < cached)):
            self._timer_dirty = True

    def _on_message(self, inner: bytes, path: str, now: float, sid: int) -> None:
        if len(inner) < _MSG_HEAD:
            self.counters["malformed"] += 1
            return
        _, msg_class, seq = _MSG_UNPACK(inner)
        if msg_class > _VIDEO:
            self.counters["malformed"] += 1
            return
        reason = self._dedup[msg_class].check_and_accept(seq)
        if reason is not None:
            self.counters["duplicates" if reason == "replay" else "stale"] += 1
            return
        self._events.append(MessageReceived(_CLASSES[msg_class], seq, inner[_MSG_HEAD:], path, now, sid))
