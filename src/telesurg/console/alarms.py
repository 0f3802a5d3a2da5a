"""Link and robot alarms, sans-I/O: `AlarmEvaluator.update(now, path_stats, one_way_ms, robot) -> changes`.

Thresholds (console/config.py `AlarmConfig`) follow DESIGN.md §3: RTT warn 200 / alarm 300 /
critical 500 ms (Xu 2014, Marescaux 2002), per-path loss warn 0.5 % / alarm 1 % (KangDuo 5G < 1 %).
Hysteresis so a value wandering around a threshold does not flap: a level is raised at once, but
lowered only after the value has stayed below `clear_fraction` × that level's threshold for
`clear_after_s`. Every change is returned once as an `AlarmChange` (for the log, the black box and the
display); `active()` gives the current non-OK alarms.

`path_stats` is what `LinkCore.path_stats()` returns: a mapping name → stats, or a sequence of stats
with a `name`; each stats object needs `state` (enum or str: up/degraded/down), `rtt_ms`, `jitter_ms`,
`loss_pct` (any may be None when unknown).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from telesurg.console.config import AlarmConfig


class Severity(enum.IntEnum):
    OK = 0
    WARN = 1
    ALARM = 2
    CRITICAL = 3


@dataclass(frozen=True, slots=True)
class AlarmChange:
    t: float
    key: str  # stable identifier, e.g. "path.A.rtt", "link.all_down", "arm.PSM1.state"
    severity: Severity
    previous: Severity
    value: float | None
    message: str


@dataclass(frozen=True, slots=True)
class RobotAlarmInput:
    """Robot-side facts the console knows from telemetry."""

    telemetry_age_s: float | None  # None: never heard
    holds: int = 0
    supervisor_states: Mapping[str, str] = field(default_factory=dict)  # arm name → state name
    operating_states: Mapping[str, str] = field(default_factory=dict)  # arm name → DISABLED/ENABLED/...


# robot.supervisor.SupervisorState names: a hold needs the surgeon's action, a latch or fault the local team's
_SUPERVISOR_SEVERITY = {"HOLD": Severity.ALARM, "LATCHED": Severity.CRITICAL, "FAULT": Severity.CRITICAL}


def path_state_name(state: object) -> str:
    name = getattr(state, "name", None) or getattr(state, "value", None) or state
    return str(name).lower()


def iter_paths(path_stats: object) -> Iterable[tuple[str, object]]:
    if isinstance(path_stats, Mapping):
        return [(str(k), v) for k, v in path_stats.items()]
    return [(str(getattr(p, "name", i)), p) for i, p in enumerate(path_stats)]  # type: ignore[arg-type]


class _Level:
    """Hysteretic severity of one numeric quantity with ascending thresholds."""

    def __init__(self, thresholds: list[tuple[Severity, float]], clear_fraction: float, clear_after_s: float):
        self._thresholds = thresholds
        self._fraction = clear_fraction
        self._hold = clear_after_s
        self.severity = Severity.OK
        self._below_since: float | None = None

    def _raw(self, value: float, fraction: float) -> Severity:
        level = Severity.OK
        for sev, thr in self._thresholds:
            if value >= thr * fraction:
                level = sev
        return level

    def update(self, now: float, value: float) -> Severity:
        raw = self._raw(value, 1.0)
        if raw > self.severity:
            self.severity = raw
            self._below_since = None
            return self.severity
        cleared = self._raw(value, self._fraction)  # level judged against the lowered thresholds
        if cleared < self.severity:
            if self._below_since is None:
                self._below_since = now
            if now - self._below_since >= self._hold:
                self.severity = cleared
                self._below_since = None
        else:
            self._below_since = None
        return self.severity


class AlarmEvaluator:
    def __init__(self, config: AlarmConfig | None = None) -> None:
        self.config = config or AlarmConfig()
        self._levels: dict[str, _Level] = {}
        self._current: dict[str, AlarmChange] = {}
        self._last_holds: int | None = None
        self.hold_events = 0

    def _numeric(self, key: str, thresholds: list[tuple[Severity, float]]) -> _Level:
        level = self._levels.get(key)
        if level is None:
            level = self._levels[key] = _Level(thresholds, self.config.clear_fraction, self.config.clear_after_s)
        return level

    def _set(self, changes: list[AlarmChange], now: float, key: str, severity: Severity,
             value: float | None, message: str) -> None:
        previous = self._current[key].severity if key in self._current else Severity.OK
        if severity != previous:
            change = AlarmChange(now, key, severity, previous, value, message)
            changes.append(change)
        if severity is Severity.OK:
            self._current.pop(key, None)
        else:
            self._current[key] = AlarmChange(now, key, severity, previous, value, message)

    def update(self, now: float, path_stats: object, one_way_ms: float | None,
               robot: RobotAlarmInput | None) -> list[AlarmChange]:
        c = self.config
        changes: list[AlarmChange] = []
        paths = list(iter_paths(path_stats))
        rtt_thr = [(Severity.WARN, c.rtt_warn_ms), (Severity.ALARM, c.rtt_alarm_ms),
                   (Severity.CRITICAL, c.rtt_critical_ms)]
        loss_thr = [(Severity.WARN, c.loss_warn_pct), (Severity.ALARM, c.loss_alarm_pct)]
        usable = 0
        for name, stats in paths:
            state = path_state_name(getattr(stats, "state", "unknown"))
            sev = {"up": Severity.OK, "degraded": Severity.WARN}.get(state, Severity.ALARM)
            usable += state in ("up", "degraded")
            self._set(changes, now, f"path.{name}.state", sev, None, f"path {name} {state}")
            rtt = getattr(stats, "rtt_ms", None)
            if rtt is not None and state != "down":
                lvl = self._numeric(f"path.{name}.rtt", rtt_thr).update(now, float(rtt))
                self._set(changes, now, f"path.{name}.rtt", lvl, float(rtt), f"path {name} RTT {rtt:.0f} ms")
            loss = getattr(stats, "loss_pct", None)
            if loss is not None and state != "down":
                lvl = self._numeric(f"path.{name}.loss", loss_thr).update(now, float(loss))
                self._set(changes, now, f"path.{name}.loss", lvl, float(loss), f"path {name} loss {loss:.2f} %")
        if paths:
            redundancy = Severity.CRITICAL if usable == 0 else Severity.WARN if usable == 1 < len(paths) \
                else Severity.OK
            text = "all paths down" if usable == 0 else f"{usable}/{len(paths)} paths usable"
            self._set(changes, now, "link.paths", redundancy, float(usable), text)
        if one_way_ms is not None:
            thr = [(Severity.WARN, c.one_way_warn_ms), (Severity.ALARM, c.one_way_alarm_ms)]
            lvl = self._numeric("link.one_way", thr).update(now, one_way_ms)
            self._set(changes, now, "link.one_way", lvl, one_way_ms, f"command delay {one_way_ms:.0f} ms")
        if robot is not None:
            self._robot(changes, now, robot)
        return changes

    def _robot(self, changes: list[AlarmChange], now: float, robot: RobotAlarmInput) -> None:
        age = robot.telemetry_age_s
        stale = age is None or age > self.config.telemetry_stale_s
        text = "no telemetry" if age is None else f"telemetry {age * 1000:.0f} ms old"
        self._set(changes, now, "robot.telemetry", Severity.ALARM if stale else Severity.OK, age, text)
        if self._last_holds is not None and robot.holds > self._last_holds:
            self.hold_events += robot.holds - self._last_holds
        self._last_holds = robot.holds
        for arm, state in robot.supervisor_states.items():
            sev = _SUPERVISOR_SEVERITY.get(state.upper(), Severity.OK)
            self._set(changes, now, f"arm.{arm}.supervisor", sev, None, f"{arm} {state}")
        for arm, state in robot.operating_states.items():
            sev = Severity.CRITICAL if state.upper() == "FAULT" else Severity.OK
            self._set(changes, now, f"arm.{arm}.operating", sev, None, f"{arm} robot {state}")

    def active(self) -> list[AlarmChange]:
        """Current non-OK alarms, most severe first."""
        return sorted(self._current.values(), key=lambda a: (-a.severity, a.key))

    def worst(self) -> Severity:
        return max((a.severity for a in self._current.values()), default=Severity.OK)
