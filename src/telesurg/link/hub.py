"""LinkHub: the robot's side of several link sessions at once (one console per session), sans-I/O.

Each session is a server-side `LinkCore` of its own (its own TLS, keys, replay windows, paths), all on
the same UDP ports: the hub routes each datagram by the session id of its outer header, with one dict
lookup, and admits new handshakes through one hub-wide `HandshakeGate`, so the half-open bound holds
across all sessions. It presents LinkCore's driver-facing calls, so `LinkEndpoint` drives either.
A console that connects again (same certificate name) replaces its old session: the old one is closed
and unrouted first, and its `SessionClosed("replaced")` comes before the new `HandshakeComplete`.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections import Counter, deque
from collections.abc import Sequence
from typing import NamedTuple

from telesurg.link import wire
from telesurg.link.config import LinkConfig, LinkSettings
from telesurg.link.core import LinkCore
from telesurg.link.events import Event, HandshakeComplete, MessageClass, PeerRefused
from telesurg.link.gate import HandshakeGate
from telesurg.link.keys import Identity
from telesurg.link.paths import PathMonitor, PathStats, ProbeOutcome
from telesurg.link.session import Addr
from telesurg.link.tls import make_context

__all__ = ["HubSession", "LinkHub"]
log = logging.getLogger(__name__)

_HS_DATA = int(wire.Kind.HS_DATA)
_EVENT = int(MessageClass.EVENT)
_CLOSED_MEMORY = 64  # recently ended sessions whose late datagrams count as "after_close", not "session"


class HubSession(NamedTuple):
    sid: int
    peer_name: str | None
    established: bool
    core: LinkCore


class LinkHub:
    """Many server-side link sessions behind one set of paths; see the module docstring."""

    is_client = False

    def __init__(self, config: LinkConfig | LinkSettings, identity: Identity, *, seed: int | None = None,
                 ctx: ssl.SSLContext | None = None) -> None:
        self.settings = config.to_settings() if isinstance(config, LinkConfig) else config
        self.identity = identity
        # shared by the cores; `ctx`: one already made for this identity and peers (a simulation
        # building thousands of hubs), as LinkCore takes it
        self._ctx = ctx or make_context(identity, self.settings.peer_certs_pem, is_client=False)
        self._gate = HandshakeGate(self.settings)
        self._path_names: tuple[str, ...] = tuple(self.settings.path_names)
        self._seeds = random.Random(seed) if seed is not None else None
        self._cores: dict[int, LinkCore] = {}  # sid -> core, pending or established: the routing table
        self._half_open: dict[int, float] = {}  # sid -> start of a handshake not yet established
        self._by_name: dict[str, int] = {}  # peer name -> sid of its established session
        self._recent: dict[int, None] = {}  # established sids, oldest first (an ordered set)
        self._closed: dict[int, None] = {}  # recently ended sids, oldest first
        self._events: deque[Event] = deque()
        self._out: list[tuple[str, bytes, Addr | None]] = []  # last words of dropped cores (close, alert)
        self._now = 0.0
        self._record_outcomes: int | None = None
        self._outcomes: list[ProbeOutcome] = []
        self.counters: Counter[str] = Counter()  # the hub's own, plus those of every core it dropped

    @classmethod
    def in_memory(cls, identity: Identity, peer_certs_pem: Sequence[bytes], *,
                  path_names: Sequence[str] = ("a", "b"), seed: int | None = None, **tuning: object) -> LinkHub:
        """Build from in-memory certificates (tests, embedded demos): no files needed."""
        settings = LinkSettings(path_names=list(path_names), peer_certs_pem=list(peer_certs_pem), **tuning)
        return cls(settings, identity, seed=seed)

    # -- public state ----------------------------------------------------------------------------
    @property
    def path_names(self) -> tuple[str, ...]:
        return self._path_names

    @property
    def established(self) -> bool:
        """Any session established (what `LinkEndpoint.wait_established` waits for)."""
        return bool(self._recent)

    @property
    def half_open(self) -> int:
        return len(self._half_open)

    @property
    def session_id(self) -> int | None:
        """The most recently established session's id (single-console callers)."""
        return next(reversed(self._recent), None)

    @property
    def peer_name(self) -> str | None:
        core = self._latest()
        return core.peer_name if core is not None else None

    def sessions(self) -> list[HubSession]:
        """Established sessions, oldest first."""
        return [HubSession(sid, core.peer_name, core.established, core)
                for sid in self._recent if (core := self._cores.get(sid)) is not None]

    def core_of(self, sid: int) -> LinkCore | None:
        return self._cores.get(sid)

    def __len__(self) -> int:
        return len(self._cores)

    def counters_total(self) -> Counter[str]:
        """Hub counters plus every live core's: nothing is lost when cores come and go."""
        total = Counter(self.counters)
        for core in self._cores.values():
            total.update(core.counters)
        return total

    def clock_offset(self, sid: int | None = None) -> float | None:
        """Peer clock minus ours for session `sid` (None: the most recently established session)."""
        core = self._latest() if sid is None else self._cores.get(sid)
        return core.clock_offset() if core is not None else None

    def path_stats(self, sid: int | None = None) -> dict[str, PathStats]:
        """Per-path figures of session `sid` (None: the most recent); idle figures when there is none."""
        core = self._latest() if sid is None else self._cores.get(sid)
        if core is None:
            return {name: PathMonitor(name, self.settings).stats() for name in self._path_names}
        return core.path_stats()

    def record_probe_outcomes(self, maxlen: int = 200_000) -> None:
        self._record_outcomes = maxlen
        for core in self._cores.values():
            core.record_probe_outcomes(maxlen)

    def drain_probe_outcomes(self) -> list[ProbeOutcome]:
        out, self._outcomes = self._outcomes, []
        for core in self._cores.values():
            out.extend(core.drain_probe_outcomes())
        return out

    def next_event(self) -> Event | None:
        if self._events:
            return self._events.popleft()
        # Asked once more after every datagram: a cheap scan for what a core queued (or a core that
        # ended) while the application called it directly, through core_of() or sessions().
        for core in self._cores.values():
            if core._events or core._session is None:
                for sid, each in list(self._cores.items()):
                    self._settle(sid, each, self._now)
                return self._events.popleft() if self._events else None
        return None

    # -- sending ---------------------------------------------------------------------------------
    def send(self, msg_class: MessageClass, payload: bytes, now: float) -> int | None:
        """Broadcast to every established session (telemetry, video); how many took it, or None."""
        if msg_class == _EVENT:
            return self.send_event(payload, now)
        self._now = now
        reached = 0
        for core in self._cores.values():
            if core.established and core.send(msg_class, payload, now) is not None:
                reached += 1
        if not reached and not self._recent:
            self.counters["not_established"] += 1
        return reached or None

    def send_to(self, sid: int, msg_class: MessageClass, payload: bytes, now: float) -> int | None:
        """Send to one session; the message seq, or None if dropped (unknown sid counted "no_session")."""
        core = self._cores.get(sid)
        if core is None:
            self.counters["no_session"] += 1
            return None
        self._now = now
        return core.send(msg_class, payload, now)

    def send_event(self, payload: bytes, now: float) -> int | None:
        """Reliable event to every established session; how many, or None (dropped, not queued for
        sessions that do not exist yet: a console joining later must not get stale events)."""
        self._now = now
        reached = 0
        for core in self._cores.values():
            if core.established:
                core.send_event(payload, now)
                reached += 1
        if not reached:
            self.counters["not_established"] += 1
        return reached or None

    def send_event_to(self, sid: int, payload: bytes, now: float) -> bool:
        """Reliable event to one session (queued there until it is established); False if unknown."""
        core = self._cores.get(sid)
        if core is None:
            self.counters["no_session"] += 1
            return False
        self._now = now
        core.send_event(payload, now)
        return True

    def close_session(self, sid: int, now: float, reason: str = "local_close") -> bool:
        """End one session (e.g. a console the supervisor dismisses); False if unknown."""
        core = self._cores.get(sid)
        if core is None:
            return False
        self._now = now
        core.close(now, reason)
        self._drop(sid, core, now)
        return True

    def close(self, now: float, reason: str = "local_close") -> None:
        """Close every session (each peer told, best effort) and forget them all."""
        for sid in list(self._cores):
            self.close_session(sid, now, reason)

    def datagrams_to_send(self, now: float) -> list[tuple[str, bytes]]:
        out = self.datagrams_to_send_addressed(now)
        return [(path, data) for path, data, _ in out] if out else []  # mostly empty: no copy then

    def datagrams_to_send_addressed(self, now: float) -> list[tuple[str, bytes, Addr | None]]:
        out = self._out
        if out:
            self._out = []
        for core in self._cores.values():
            queued = core.datagrams_to_send_addressed(now)
            if queued:
                if out:
                    out.extend(queued)
                else:
                    out = queued
        return out

    # -- timers ----------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """Earliest deadline of all cores (each cached in its core) and of the half-open handshakes."""
        best: float | None = None
        for core in self._cores.values():
            t = core.get_timer()
            if t is not None and (best is None or t < best):
                best = t
        if self._half_open:
            t = min(self._half_open.values()) + self.settings.handshake_timeout_s
            if best is None or t < best:
                best = t
        return best

    def handle_timer(self, now: float) -> None:
        self._now = now
        for sid, core in list(self._cores.items()):
            if self._cores.get(sid) is not core:
                continue  # dropped meanwhile (replaced by a session completing in this loop)
            t = core.get_timer()
            if t is not None and t <= now:
                core.handle_timer(now)
                self._settle(sid, core, now)
        timeout = self.settings.handshake_timeout_s
        for sid, started in list(self._half_open.items()):
            # Authenticated but never confirmed the keys (a console gone in between): its core would
            # retransmit them forever and hold a half-open slot, so end it here.
            core = self._cores.get(sid)
            if core is not None and now >= started + timeout:  # the very sum get_timer() returns
                self.counters["handshake_timeout"] += 1
                core.close(now, "handshake_timeout")
                core._events.clear()  # never established: the application has not heard of this sid
                self._drop(sid, core, now)

    # -- receiving -------------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, path: str, now: float, addr: Addr | None = None) -> bool:
        """Route one datagram to its session's core by session id; True when it authenticated.
        Never raises, like LinkCore: bad input is counted."""
        try:
            kind, sid = wire.parse_outer(data)
            self._now = now
            core = self._cores.get(sid)
            if core is None:
                return self._open(data, kind, sid, path, now, addr)
            ok = core.receive_datagram(data, path, now, addr)
            if core._events or core._session is None:  # the usual case: one message to move, still live
                self._settle(sid, core, now)
            return ok
        except wire.WireError as exc:
            self.counters[exc.reason] += 1
        except Exception:  # a bug must not take every console's link down: count it, log it, keep going
            self.counters["internal_error"] += 1
            log.exception("unexpected error while routing a datagram on %s", path)
        return False

    def _open(self, data: bytes, kind: int, sid: int, path: str, now: float, addr: Addr | None) -> bool:
        """A datagram of no live session: a new handshake through the gate, else counted."""
        if sid in self._closed:
            self.counters["after_close"] += 1
            return False
        if path not in self._path_names:
            self.counters["unknown_path"] += 1
            return False
        if kind != _HS_DATA or wire.parse_rel_data(memoryview(data)[wire.OUTER.size:])[0] != 0:
            raise wire.WireError("session")  # counted by receive_datagram
        refusal = None if self._gate.source_allowed(addr) else "cidr"
        source = addr[0] if addr is not None else f"path:{path}"
        refusal = refusal or self._gate.admit(source, len(self._half_open), now)
        if refusal is not None:
            self.counters[refusal] += 1
            self._events.append(PeerRefused(refusal, path, addr, now, sid))
            return False
        seed = self._seeds.getrandbits(64) if self._seeds is not None else None
        core = LinkCore(self.settings, self.identity, is_client=False, seed=seed, ctx=self._ctx)
        if self._record_outcomes is not None:
            core.record_probe_outcomes(self._record_outcomes)
        self._cores[sid] = core
        self._half_open[sid] = now
        ok = core.receive_datagram(data, path, now, addr)
        self._settle(sid, core, now)
        return ok

    # -- session life cycle ----------------------------------------------------------------------
    def _settle(self, sid: int, core: LinkCore, now: float) -> None:
        """After a call into a core: move its events out (replacing on a new handshake), drop it if dead."""
        events = core._events
        while events:
            event = events.popleft()
            if event.__class__ is HandshakeComplete:
                self._on_established(sid, event.peer_name, now)
            self._events.append(event)
        if core._session is None and not core._pending:  # handshake timed out or failed, or closed
            self._drop(sid, core, now)

    def _on_established(self, sid: int, peer_name: str, now: float) -> None:
        self._half_open.pop(sid, None)
        old = self._by_name.get(peer_name)
        if old is not None and old != sid:
            old_core = self._cores.get(old)
            if old_core is not None:  # a console that restarted: its old session ends first
                old_core.close(now, "replaced")
                self._drop(old, old_core, now)
        self._by_name[peer_name] = sid
        self._recent.pop(sid, None)
        self._recent[sid] = None

    def _drop(self, sid: int, core: LinkCore, now: float) -> None:
        """Unroute a core for good, keeping its last datagrams, events, counters and probe outcomes."""
        if self._cores.pop(sid, None) is None:
            return
        self._closed[sid] = None
        if len(self._closed) > _CLOSED_MEMORY:
            del self._closed[next(iter(self._closed))]
        self._out.extend(core.datagrams_to_send_addressed(now))
        self._events.extend(core._events)
        core._events.clear()
        if self._record_outcomes is not None:
            self._outcomes.extend(core.drain_probe_outcomes())
        self.counters.update(core.counters)
        self._half_open.pop(sid, None)
        self._recent.pop(sid, None)
        if core.peer_name is not None and self._by_name.get(core.peer_name) == sid:
            del self._by_name[core.peer_name]

    def _latest(self) -> LinkCore | None:
        sid = next(reversed(self._recent), None)
        return self._cores.get(sid) if sid is not None else None
