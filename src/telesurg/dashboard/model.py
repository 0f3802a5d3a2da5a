"""What the dashboard shows, built from the site's tap records (sans-I/O: records in, JSON dicts out).

One `DashboardModel` per site consumes `(topic, t, payload)` records on the dashboard's own thread
and keeps only what the page draws: per-path RTT/jitter/loss series over the last minutes, the
commands' one-way delay per second, the arms and who owns them, active alarms and a short event log.
`view(since)` gives a new page everything (`since=None`) and an open page what changed since its
last update, so the server never keeps per-client state beyond one timestamp.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from telesurg.link.events import HandshakeComplete, PathStateChanged, PeerRefused, SessionClosed
from telesurg.messages import ArmId, Telemetry
from telesurg.robot.driver import OperatingState
from telesurg.robot.roles import LOCAL_SLOT
from telesurg.robot.safety_types import SupervisorState
from telesurg.tap import CommandJudged, Topic

WINDOW_S = 300.0  # the plots' time span (the network engineer looks back a few minutes)
EVENTS_KEPT = 200
ACCEPTED = ("applied", "clipped")
HELD_STATES = {SupervisorState.HOLD.name, SupervisorState.LATCHED.name, SupervisorState.FAULT.name}


def peer_identity(sender: str) -> str:
    """`identity#sid` -> identity: a label that does not grow with every reconnection."""
    return sender.split("#", 1)[0]


def command_delay_s(t: float, judged: CommandJudged) -> float | None:
    """Robot: console stamp -> judged on the robot, on the robot's clock (None: offset not yet known)."""
    if judged.clock_offset is None:
        return None
    return t - (judged.command.t_sent - judged.clock_offset)


def telemetry_delay_s(t: float, telemetry: Telemetry, offset: float | None) -> float | None:
    """Console: robot stamp -> arrival at the console (`offset` = robot clock - console clock)."""
    return None if offset is None else t - (telemetry.t_robot - offset)


@dataclass
class _DelaySeries:
    """One-way delays (ms) binned per second: p50, p99, max and count per bin."""

    points: collections.deque = field(default_factory=collections.deque)
    bin_start: float | None = None
    values: list[float] = field(default_factory=list)

    def add(self, t: float, delay_ms: float) -> None:
        if self.bin_start is None or t >= self.bin_start + 1.0:
            self.close_bin(t)
        self.values.append(delay_ms)

    def close_bin(self, t: float) -> None:
        if self.values and self.bin_start is not None:
            arr = np.asarray(self.values)
            p50, p99 = np.percentile(arr, (50, 99))
            self.points.append((self.bin_start + 1.0, round(float(p50), 2), round(float(p99), 2),
                                round(float(arr.max()), 2), len(self.values)))
        self.values = []
        self.bin_start = math.floor(t)


class DashboardModel:
    """Feed records with `apply(topic, t, payload)`; read `view(...)` (JSON-ready dicts)."""

    def __init__(self, site: str, wall_offset: float, *, role: str | None = None,
                 window_s: float = WINDOW_S) -> None:
        self.site = site
        self.wall_offset = wall_offset
        self.window_s = window_s
        self.role = role  # "robot" | "console"; also learnt from the SITE record
        self.software: str | None = None
        self.started_at: float | None = None
        self.now = 0.0  # latest record time (tap clock)
        self.paths: dict[tuple[str, str], collections.deque] = {}
        self.path_now: dict[tuple[str, str], dict[str, Any]] = {}
        self.delays: dict[str, _DelaySeries] = {}
        self.telemetry: Telemetry | None = None
        self.room: dict[str, Any] = {}
        self.alarms: dict[str, dict[str, Any]] = {}
        self.events: collections.deque = collections.deque(maxlen=EVENTS_KEPT)
        self._event_id = 0
        self.judged = collections.Counter[str]()
        self.rejected = collections.Counter[str]()
        self.holds = 0
        self.robot_holds: int | None = None  # console: the robot's hold count from telemetry
        self.clock_offsets: dict[str, float | None] = {}
        self.video: dict[str, Any] = {}
        self.observers = 0  # of the live broadcast, as the site's publisher counts them
        self.extra: dict[str, Any] = {}  # server-side figures (tap drops, observers, preview rate)

    # -- records in ------------------------------------------------------------------------------
    def apply(self, topic: str, t: float, payload: Any) -> None:
        self.now = max(self.now, t)
        handler = _HANDLERS.get(topic)
        if handler is not None:
            handler(self, t, payload)

    def tick(self, now: float) -> None:
        """Advance time without records: close finished delay bins, forget points older than the window."""
        self.now = max(self.now, now)
        for series in self.delays.values():
            if series.bin_start is not None and now >= series.bin_start + 1.0:
                series.close_bin(now)
        horizon = self.now - self.window_s
        for points in [*self.paths.values(), *(s.points for s in self.delays.values())]:
            while points and points[0][0] < horizon:
                points.popleft()

    def _on_judged(self, t: float, judged: CommandJudged) -> None:
        self.judged[judged.outcome] += 1
        if judged.outcome not in ACCEPTED:
            self.rejected[judged.reason or judged.outcome] += 1
        elif (delay := command_delay_s(t, judged)) is not None:
            self._delay(peer_identity(judged.sender)).add(t, 1000.0 * delay)

    def _on_telemetry(self, t: float, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        if self.role != "console":
            return
        self.robot_holds = telemetry.holds
        if (delay := telemetry_delay_s(t, telemetry, self.robot_offset())) is not None:
            self._delay("robot").add(t, 1000.0 * delay)

    def robot_offset(self) -> float | None:
        """Console: the robot's clock offset (the console has one peer)."""
        return next((o for o in self.clock_offsets.values() if o is not None), None)

    def _delay(self, peer: str) -> _DelaySeries:
        series = self.delays.get(peer)
        if series is None:
            series = self.delays[peer] = _DelaySeries()
        return series

    def _on_paths(self, t: float, by_peer: dict[str, dict[str, Any]]) -> None:
        for peer, stats in by_peer.items():
            for name, s in stats.items():
                key = (str(peer), str(name))
                state = str(getattr(s.state, "value", s.state))
                self.paths.setdefault(key, collections.deque()).append(
                    (t, _ms(s.rtt_ms), round(float(s.jitter_ms), 3), round(float(s.loss_pct), 3), state))
                self.path_now[key] = {
                    "peer": key[0], "path": key[1], "state": state, "rtt_ms": _ms(s.rtt_ms),
                    "rtt_p50_ms": _ms(s.rtt_p50_ms), "rtt_p99_ms": _ms(s.rtt_p99_ms),
                    "jitter_ms": round(float(s.jitter_ms), 3), "loss_pct": round(float(s.loss_pct), 3),
                    "heard_s": None if s.last_heard is None else round(t - s.last_heard, 3),
                    "state_changes": s.state_changes, "probes_sent": s.probes_sent,
                    "probes_answered": s.probes_answered, "probes_lost": s.probes_lost}

    def _on_clock(self, t: float, offsets: dict[str, float | None]) -> None:
        self.clock_offsets.update(offsets)

    def _on_room(self, t: float, body: dict[str, Any]) -> None:
        self.room = body

    def _on_alarm(self, t: float, alarm: dict[str, Any]) -> None:
        severity = str(alarm.get("severity", ""))
        key = str(alarm.get("key", "?"))
        if severity == "OK" or alarm.get("active") is False:
            self.alarms.pop(key, None)
            self.event(t, "alarm", "info", f"cleared: {key}")
            return
        self.alarms[key] = {"key": key, "severity": severity, "message": str(alarm.get("message", "")),
                            "since": self.wall(self.alarms.get(key, {}).get("since_t", t)), "since_t": t}
        self.event(t, "alarm", severity.lower(), str(alarm.get("message", key)))

    def _on_transition(self, t: float, r: dict[str, Any]) -> None:
        severity = "alarm" if r.get("to") in HELD_STATES else "info"
        self.event(t, "transition", severity, f"{r.get('arm')}: {r.get('from')} → {r.get('to')} ({r.get('cause')})")

    def _on_hold(self, t: float, r: dict[str, Any]) -> None:
        self.holds += 1
        self.event(t, "hold", "alarm", f"{r.get('arm')} held: {r.get('cause')} "
                                       f"(reaction {r.get('reaction_ms', 0):.1f} ms)")

    def _on_handover(self, t: float, r: dict[str, Any]) -> None:
        self.event(t, "handover", "warn", f"{r.get('arm')}: {peer_identity(str(r.get('from')))} → "
                                          f"{peer_identity(str(r.get('to')))} ({r.get('reason')})")

    def _on_operator(self, t: float, r: dict[str, Any]) -> None:
        self.event(t, "local console", "warn", f"{r.get('action')} {', '.join(map(str, r.get('arms', [])))}")

    def _on_path_event(self, t: float, e: PathStateChanged) -> None:
        new = str(getattr(e.new, "value", e.new))
        severity = {"up": "info", "degraded": "warn"}.get(new, "alarm")
        self.event(t, "path", severity, f"path {e.path}: {getattr(e.old, 'value', e.old)} → {new}")

    def _on_session(self, t: float, e: Any) -> None:
        if isinstance(e, HandshakeComplete):
            self.event(t, "session", "info", f"{e.peer_name} authenticated")
        elif isinstance(e, SessionClosed):
            self.event(t, "session", "warn", f"session closed: {e.reason}")
        elif isinstance(e, PeerRefused):
            self.event(t, "security", "warn", f"peer refused on path {e.path}: {e.reason}")

    def _on_broadcast(self, t: float, r: dict[str, Any]) -> None:
        observers = int(r.get("observers", 0))
        if observers != self.observers:
            self.event(t, "broadcast", "info", f"observers: {self.observers} → {observers}")
        self.observers = observers

    def _on_site(self, t: float, r: dict[str, Any]) -> None:
        self.role = r.get("role", self.role)
        if r.get("event") == "start":
            self.software = r.get("software")
            self.started_at = t
        self.event(t, "site", "info", f"{self.role} {r.get('event')}")

    def event(self, t: float, kind: str, severity: str, text: str) -> None:
        self._event_id += 1
        self.events.append({"id": self._event_id, "t": self.wall(t), "kind": kind, "severity": severity,
                            "text": text})

    def wall(self, t: float) -> float:
        return round(t + self.wall_offset, 3)

    # -- JSON out --------------------------------------------------------------------------------
    def view(self, since: float | None = None, since_event: int = 0) -> dict[str, Any]:
        """Everything (`since=None`) or what changed after `since` (tap clock) and event id `since_event`."""
        start = -math.inf if since is None else since
        w = self.wall
        return {
            "type": "snapshot" if since is None else "update",
            "site": {"name": self.site, "role": self.role, "software": self.software,
                     "started": None if self.started_at is None else w(self.started_at)},
            "now": w(self.now), "window_s": self.window_s,
            "paths": [{**self.path_now[key], "key": f"{key[0]}|{key[1]}",
                       "points": [[w(p[0]), *p[1:]] for p in _after(points, start)]}
                      for key, points in sorted(self.paths.items())],
            "delay": {"label": "command one-way delay" if self.role != "console"
                      else "telemetry one-way delay (robot → console)",
                      "series": [{"peer": peer, "points": [[w(p[0]), *p[1:]] for p in _after(s.points, start)]}
                                 for peer, s in sorted(self.delays.items())]},
            "arms": self.arms(),
            "consoles": self.consoles(),
            "alarms": [{k: v for k, v in a.items() if k != "since_t"} for a in self.alarms.values()],
            "conditions": self.conditions(),
            "events": [e for e in self.events if e["id"] > since_event],
            "commands": {"judged": sum(self.judged.values()), "by_outcome": dict(self.judged),
                         "rejected": dict(self.rejected.most_common(12))},
            "holds": self.holds if self.role != "console" else self.robot_holds,
            "clock_offset_ms": {p: None if o is None else round(1000.0 * o, 3) for p, o in self.clock_offsets.items()},
            "video": self.video, "observers": self.observers, **self.extra,
        }

    def last_event_id(self) -> int:
        return self._event_id

    def arms(self) -> list[dict[str, Any]]:
        if self.telemetry is None:
            return []
        owners = self.room.get("arms", {}) if isinstance(self.room, dict) else {}
        out = []
        for a in self.telemetry.arms:
            name = _name(ArmId, a.arm)
            room = owners.get(name, {}) if isinstance(owners, dict) else {}
            owner = "local console" if a.owner == LOCAL_SLOT else (room.get("owner") or (
                f"slot {a.owner}" if a.owner else "nobody"))
            out.append({"arm": name, "state": _name(SupervisorState, a.supervisor_state),
                        "operating": _name(OperatingState, a.operating_state), "owner": owner,
                        "pending": list(room.get("pending", [])), "seq": a.last_applied_seq,
                        "pos_mm": [round(1000.0 * v, 1) for v in a.position], "jaw_deg": round(math.degrees(a.jaw), 1)})
        return out

    def consoles(self) -> list[dict[str, Any]]:
        """The consoles in the room (the robot's room status: role, connected, per-path RTT)."""
        peers = self.room.get("peers", {}) if isinstance(self.room, dict) else {}
        if not isinstance(peers, dict):
            return []
        return [{"identity": str(identity), "role": str(p.get("role", "")), "connected": bool(p.get("connected", True)),
                 "slot": p.get("slot"), "rtt_ms": p.get("rtt_ms", {})}
                for identity, p in sorted(peers.items()) if isinstance(p, dict)]

    def conditions(self) -> list[dict[str, str]]:
        """What needs attention now, derived on either site (the console's own alarms come as records)."""
        out = []
        for p in self.path_now.values():
            if p["state"] != "up":
                out.append({"severity": "alarm" if p["state"] == "down" else "warn",
                            "text": f"path {p['path']} ({p['peer']}) {p['state']}"})
        for a in self.arms():
            if a["state"] in HELD_STATES:
                out.append({"severity": "alarm", "text": f"{a['arm']} {a['state']}"})
        return out


def _after(points: collections.deque, start: float) -> list[tuple]:
    """The points newer than `start`, oldest first; scans from the newest end (an update needs a few)."""
    out = []
    for point in reversed(points):
        if point[0] <= start:
            break
        out.append(point)
    out.reverse()
    return out


def _ms(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _name(enum_type: Any, value: int) -> str:
    try:
        return enum_type(value).name
    except ValueError:
        return str(value)


_HANDLERS = {
    Topic.COMMAND_DECISION: DashboardModel._on_judged,
    Topic.TELEMETRY: DashboardModel._on_telemetry,
    Topic.PATHS: DashboardModel._on_paths,
    Topic.CLOCK: DashboardModel._on_clock,
    Topic.ROOM: DashboardModel._on_room,
    Topic.ALARM: DashboardModel._on_alarm,
    Topic.TRANSITION: DashboardModel._on_transition,
    Topic.HOLD: DashboardModel._on_hold,
    Topic.HANDOVER: DashboardModel._on_handover,
    Topic.OPERATOR: DashboardModel._on_operator,
    Topic.PATH_EVENT: DashboardModel._on_path_event,
    Topic.SESSION: DashboardModel._on_session,
    Topic.SITE: DashboardModel._on_site,
    Topic.BROADCAST: DashboardModel._on_broadcast,
}
_HANDLERS = {str(k): v for k, v in _HANDLERS.items()}
TOPICS = tuple(_HANDLERS)
