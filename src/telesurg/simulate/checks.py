"""Invariant checks of a simulated run, judged against the simulation's ground truth, never against
the supervisor's own bookkeeping (so a broken supervisor is caught, see tests/test_simulate.py).

Truth the world records: the simulation time each command was really sent (not the console's
drifting, stepped clock), which session sent it, which commands reached the robot, and the emulator's
path timeline. Checked after every servo period, DESIGN.md §4:
- an applied command is fresh by the true clock, newer than every earlier one of its session, from
  the current session, inside the workspace; applied outside FOLLOWING only with REENGAGE and aligned;
- each servo step within the step cap and the workspace;
- FOLLOWING never outlives the watchdog (+ one period) after the last applied command; HOLD turns
  LATCHED within the fault time (+ one period) of the last command heard from the owner;
- the arm never enters FOLLOWING without an applied re-engage;
- every command sent while at least one path delivers reaches the robot (`PathTruth.deliverable`);
- the robot's path states agree with the emulator within the detection bounds;
- the queues that could grow stay bounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from telesurg.link.config import LinkTuning
from telesurg.messages import ServoCommand
from telesurg.netem.core import Impairment
from telesurg.netem.scenario import Scenario, ScenarioEvent, ScenarioPlayer
from telesurg.robot.safety_config import SupervisorConfig
from telesurg.robot.supervisor import SupervisorState

_EPS = 1e-9
_FOLLOWING, _HOLD = SupervisorState.FOLLOWING, SupervisorState.HOLD
MAX_VIOLATIONS_KEPT = 20


_dist = math.dist


class PathTruth:
    """What the emulator really does to each path, from the timeline (forward = console -> robot)."""

    def __init__(self, events: tuple[ScenarioEvent, ...], base: dict[str, Impairment]) -> None:
        self.base = base
        self.downs: dict[str, list[tuple[float, float]]] = {p: [] for p in base}
        self.settled: dict[str, list[tuple[float, float]]] = {p: [] for p in base}  # (start, settled by)
        # replay the timeline with the netem player itself: the last action on a path wins (an outage's
        # auto-revert `up` ends an overlapping later outage too, exactly as the emulator does)
        down_since: dict[str, float | None] = dict.fromkeys(base)
        for action in ScenarioPlayer(Scenario(events=list(events))).due(math.inf):
            for p in (list(base) if action.path == "*" else [action.path]):
                if action.action == "down" and down_since[p] is None:
                    down_since[p] = action.at
                elif action.action == "up" and (start := down_since[p]) is not None:
                    self.downs[p].append((start, action.at))
                    self.settled[p].append((start, action.at))
                    down_since[p] = None
        for p, start in down_since.items():
            if start is not None:
                self.downs[p].append((start, math.inf))
                self.settled[p].append((start, math.inf))
        for e in events:
            if e.action != "set":
                continue
            end = e.at + (e.duration if e.duration is not None else math.inf)
            for p in (list(base) if e.path == "*" else [e.path]):
                # a delay or jitter raise leaves a FIFO backlog behind it: settled once that drained
                tail = max(e.delay_ms or 0.0, base[p].delay_ms + 5 * (e.jitter_ms or 0.0)) / 1000.0
                self.settled[p].append((e.at, end + tail + 0.012))  # + reorder hold-back

    def is_down(self, path: str, t: float) -> bool:
        return any(start <= t < end for start, end in self.downs[path])

    def down_since(self, path: str, t: float) -> float | None:
        """Start of the outage `path` is in at `t` (merging back-to-back outages), None if up."""
        return next((start for start, end in self.downs[path] if start <= t < end), None)

    def last_disturbed(self, path: str, t: float) -> float:
        """When the latest fault on `path` touching time `t` had settled (0 if none)."""
        return max((min(settled, t) for start, settled in self.settled[path] if start <= t), default=0.0)

    def deliverable(self, path: str, t: float, impairment: Impairment, down_now: bool, queued_until: float) -> bool:
        """A copy sent now on `path` surely arrives: up, no loss or corruption drawn, and not cut in flight
        (`queued_until`: the emulator's FIFO departure, which a copy sent now waits behind)."""
        if down_now or impairment.loss or impairment.corrupt or impairment.ge_p:
            return False
        flight = (impairment.delay_ms + 6 * impairment.jitter_ms + impairment.reorder_extra_ms) / 1000.0 + 0.002
        arrival = max(t + flight, queued_until + 0.002)
        return not any(start < arrival and end > t - _EPS for start, end in self.downs[path])


@dataclass
class CheckStats:
    applied: int = 0
    commands_expected: int = 0  # sent while a path delivered
    commands_lost: int = 0
    path_checks: int = 0
    violations: list[str] = field(default_factory=list)
    violation_count: int = 0


class InvariantChecker:
    """Fed by the world (see world.py) with what happens; records violations with time and cause."""

    def __init__(self, config: SupervisorConfig, tuning: LinkTuning, truth: PathTruth) -> None:
        self.cfg = config
        self.tuning = tuning
        self.truth = truth
        self.stats = CheckStats()
        self.sent_at: dict[tuple[int, int, int], float] = {}  # (sid, arm, cmd_seq) -> true send time
        self.expected: dict[tuple[int, int], tuple[float, float]] = {}  # (sid, link seq) -> (sent, due by)
        self.received: set[tuple[int, int]] = set()
        self.current_sid: int | None = None
        self.last_applied: dict[tuple[int, int], int] = {}  # (sid, arm) -> cmd_seq
        self.last_applied_t: dict[str, float] = {}
        self.last_owner_cmd_t: dict[str, float] = {}
        self.reengaged: dict[str, bool] = {}
        self.prev_state: dict[str, SupervisorState] = {}
        self.local_control = False  # the patient-side console has taken the arm over (invariant 6)
        # after_tick's bounds, worked out once: it runs every servo period
        slack = config.servo_period_s + 1e-6
        self._step_bound = config.step_limit_m(config.servo_period_s) * (1 + 1e-6) + _EPS
        self._watchdog_bound = config.watchdog_s + slack
        self._fault_bound = config.fault_s + slack

    def violation(self, now: float, text: str) -> None:
        self.stats.violation_count += 1
        if len(self.stats.violations) < MAX_VIOLATIONS_KEPT:
            self.stats.violations.append(f"t={now:.4f} {text}")

    # -- console side ----------------------------------------------------------------------------
    def on_sent(self, sid: int, link_seq: int, commands: tuple[ServoCommand, ...], now: float,
                deliverable_until: float | None) -> None:
        for cmd in commands:
            self.sent_at[(sid, cmd.arm, cmd.cmd_seq)] = now
        if deliverable_until is not None:
            self.expected[(sid, link_seq)] = (now, deliverable_until)

    # -- robot side ------------------------------------------------------------------------------
    def on_delivered(self, sid: int, link_seq: int) -> None:
        self.received.add((sid, link_seq))

    def on_owner_command(self, arm: str, now: float) -> None:
        self.last_owner_cmd_t[arm] = now

    def on_applied(self, arm: str, sid: int, cmd: ServoCommand, state_before: SupervisorState,
                   measured: tuple[float, float, float], now: float) -> None:
        self.stats.applied += 1
        sent = self.sent_at.get((sid, cmd.arm, cmd.cmd_seq))
        if sent is None:
            self.violation(now, f"{arm}: applied a command never sent (sid {sid:x} seq {cmd.cmd_seq})")
        elif now - sent > self.cfg.freshness_s + self.cfg.future_tolerance_s:
            self.violation(now, f"{arm}: stale command applied, {1000 * (now - sent):.1f} ms old "
                                f"(freshness {1000 * self.cfg.freshness_s:.0f} ms)")
        last = self.last_applied.get((sid, cmd.arm))
        if last is not None and cmd.cmd_seq <= last:
            kind = "duplicate" if cmd.cmd_seq == last else "out-of-order"
            self.violation(now, f"{arm}: {kind} command applied (seq {cmd.cmd_seq} after {last})")
        self.last_applied[(sid, cmd.arm)] = cmd.cmd_seq
        if sid != self.current_sid:
            self.violation(now, f"{arm}: command of a replaced session applied")
        if self.local_control:
            self.violation(now, f"{arm}: remote command applied during a local takeover")
        if not self.cfg.workspace_for(arm).contains(cmd.position):
            self.violation(now, f"{arm}: out-of-workspace target applied {cmd.position}")
        if state_before is not _FOLLOWING:
            if not cmd.reengage:
                self.violation(now, f"{arm}: resumed from {state_before.name} without re-engage")
            elif _dist(cmd.position, measured) > self.cfg.align_position_m + _EPS:
                self.violation(now, f"{arm}: re-engage applied {1000 * _dist(cmd.position, measured):.1f} mm "
                                    f"from the tool (align {1000 * self.cfg.align_position_m:.0f} mm)")
            self.reengaged[arm] = True
        self.last_applied_t[arm] = now

    def after_tick(self, arm: str, state: SupervisorState, before: tuple[float, float, float],
                   after: tuple[float, float, float], now: float) -> None:
        cfg = self.cfg
        if after != before:
            step = _dist(before, after)
            if step > self._step_bound:
                self.violation(now, f"{arm}: servo step {1e3 * step:.3f} mm over the cap")
            if not cfg.workspace_for(arm).contains(after):
                self.violation(now, f"{arm}: setpoint outside the workspace {after}")
        last = self.last_applied_t.get(arm)
        if state is _FOLLOWING:
            if last is None or now - last > self._watchdog_bound:
                self.violation(now, f"{arm}: still FOLLOWING {1000 * (now - (last or 0.0)):.1f} ms after the "
                                    f"last valid command (watchdog {1000 * cfg.watchdog_s:.0f} ms)")
            if self.prev_state.get(arm) is not _FOLLOWING and not self.reengaged.get(arm):
                self.violation(now, f"{arm}: FOLLOWING without an applied re-engage")
        elif state is _HOLD:
            heard = max(self.last_owner_cmd_t.get(arm, -math.inf), last if last is not None else -math.inf)
            if math.isfinite(heard) and now - heard > self._fault_bound:
                self.violation(now, f"{arm}: not latched {1000 * (now - heard):.0f} ms after the owner's last "
                                    f"command (fault time {1000 * cfg.fault_s:.0f} ms)")
        if state is not _FOLLOWING:
            self.reengaged[arm] = False
        self.prev_state[arm] = state

    def check_paths(self, states: dict[str, str], established_at: float, now: float) -> None:
        """Robot-side path states against the truth: DOWN within `down_after_s` of a cut; not DOWN once
        a path has been clean long enough for `recover_replies` probe replies."""
        t = self.tuning
        probe = 1.0 / t.probe_hz
        for path, state in states.items():
            self.stats.path_checks += 1
            since = self.truth.down_since(path, now)
            if since is not None:
                if now - max(since, established_at) > t.down_after_s + 0.005 and state != "down":
                    self.violation(now, f"path {path}: {state} but cut for {1000 * (now - since):.0f} ms "
                                        f"(DOWN after {1000 * t.down_after_s:.0f} ms)")
                continue
            base = self.truth.base[path]
            rtt = 2 * (base.delay_ms + 5 * base.jitter_ms) / 1000.0
            bound = t.down_after_s + (t.recover_replies + 1) * probe + rtt + 0.05
            calm = max(self.truth.last_disturbed(path, now), established_at)
            if now - calm > bound and state == "down":
                self.violation(now, f"path {path}: DOWN {1000 * (now - calm):.0f} ms after it came back clean")

    def finish(self, end: float) -> None:
        """Commands due by `end` that were sent while a path delivered must all have arrived."""
        for key, (sent, due) in self.expected.items():
            if due > end:
                continue
            self.stats.commands_expected += 1
            if key not in self.received:
                self.stats.commands_lost += 1
                self.violation(sent, f"command lost while a path delivered (sid {key[0]:x} link seq {key[1]})")
