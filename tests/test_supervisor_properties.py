"""Property tests: random command streams (duplicated, reordered, delayed, jumped, forged timestamps,
silences, disengages) against the supervisor, checking every invariant of DESIGN.md §4 from the
outside, with bookkeeping independent of the supervisor's own checks."""

from __future__ import annotations

import heapq
import math

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from telesurg.messages import FLAG_CLUTCH, FLAG_ENGAGED, FLAG_REENGAGE, ArmId, ServoCommand
from telesurg.robot.driver import ArmOperatingState, OperatingState, Pose
from telesurg.robot.safety_config import SupervisorConfig, WorkspaceBox
from telesurg.robot.supervisor import SafetySupervisor, SupervisorState

PERIOD = 0.001
HOME = np.array((0.0, 0.0, -0.1))
BOX = WorkspaceBox(low=(-0.02, -0.02, -0.12), high=(0.02, 0.02, -0.08))
CFG = SupervisorConfig(default_workspace=BOX)
ARMS = ("PSM1", "PSM2")
ACTIONS = ["move", "move", "move", "move", "duplicate", "replay_old", "jump", "outside", "forge_time",
           "reengage", "reengage", "misaligned", "disengage", "clutch", "silence", "takeover_like"]


def quat_about_z(deg: float) -> tuple[float, float, float, float]:
    half = math.radians(deg) / 2
    return (math.cos(half), 0.0, 0.0, math.sin(half))


class Checker:
    """Runs the supervisor against a scripted console and a hostile network, asserting on each step."""

    def __init__(self, offset: float) -> None:
        self.sup = SafetySupervisor(CFG, ARMS)
        self.offset = offset  # console clock minus robot clock (LinkCore.clock_offset sign)
        self.now = 0.0
        self.ops = {a: ArmOperatingState(OperatingState.ENABLED, True, False) for a in ARMS}
        self.measured = {a: Pose(HOME.copy()) for a in ARMS}
        self.sup.enable(None, 0.0)
        for a in ARMS:
            self.sup.assign(a, "remote", 0.0)
        self.sup.tick(0.0, self.measured, None, self.ops)
        self.master = {a: HOME.copy() for a in ARMS}
        self.seq = dict.fromkeys(ARMS, 0)
        self.sent: list[ServoCommand] = []
        self.network: list[tuple[float, int, ServoCommand]] = []
        self.order = 0
        self.applied_seq = dict.fromkeys(ARMS, 0)
        self.last_applied_t: dict[str, float | None] = dict.fromkeys(ARMS)
        self.applied = 0

    def console_send(self, arm: str, pos: np.ndarray, flags: int, delay: float, t_shift: float = 0.0,
                     quat=(1.0, 0.0, 0.0, 0.0), jaw: float = 0.4) -> None:
        self.seq[arm] += 1
        t_console = self.now + self.offset + t_shift
        cmd = ServoCommand(ArmId[arm].value, self.seq[arm], t_console, tuple(float(v) for v in pos), quat, jaw,
                           flags)
        self.sent.append(cmd)
        self.deliver_at(cmd, delay)

    def deliver_at(self, cmd: ServoCommand, delay: float) -> None:
        self.order += 1
        heapq.heappush(self.network, (self.now + delay, self.order, cmd))

    def advance(self, ms: int) -> None:
        for _ in range(ms):
            self.now = round(self.now + PERIOD, 9)
            while self.network and self.network[0][0] <= self.now:
                _, _, cmd = heapq.heappop(self.network)
                self.submit(cmd)
            self.tick()

    def submit(self, cmd: ServoCommand) -> None:
        arm = ArmId(cmd.arm).name
        before = self.sup.state(arm)
        setpoint = self.sup.setpoint(arm)
        d = self.sup.submit(cmd, "remote", 0, self.offset, self.now)
        after = self.sup.state(arm)
        if d.accepted:
            # invariant 1: strictly increasing per arm, so never twice and never after a newer one
            assert cmd.cmd_seq > self.applied_seq[arm], (cmd.cmd_seq, self.applied_seq[arm])
            self.applied_seq[arm] = cmd.cmd_seq
            # invariant 2: nothing stale (robot clock, offset corrected)
            assert self.now - (cmd.t_sent - self.offset) <= CFG.freshness_s + 1e-9
            assert BOX.contains(cmd.position)
            self.last_applied_t[arm] = self.now
            self.applied += 1
        if before is not SupervisorState.FOLLOWING and after is SupervisorState.FOLLOWING:
            # invariant 5: only an explicit, aligned re-engage resumes
            assert cmd.reengage and cmd.engaged and d.accepted
            assert np.linalg.norm(np.array(cmd.position) - setpoint.position) <= CFG.align_position_m + 1e-12

    def tick(self) -> None:
        before = {a: (self.sup.state(a), self.sup.setpoint(a)) for a in ARMS}
        out = self.sup.tick(self.now, self.measured, None, self.ops)
        for arm in ARMS:
            state = self.sup.state(arm)
            if arm in out:
                # invariant 3: step cap, velocity cap, workspace
                assert before[arm][0] is SupervisorState.FOLLOWING and state is SupervisorState.FOLLOWING
                step = np.linalg.norm(out[arm].pose.position - before[arm][1].position)
                assert step <= min(CFG.max_step_m, CFG.max_speed_m_s * PERIOD) + 1e-12
                assert BOX.contains(tuple(out[arm].pose.position))
                self.measured[arm] = out[arm].pose
            else:
                assert state is not SupervisorState.FOLLOWING or before[arm][0] is not SupervisorState.FOLLOWING
            if state is SupervisorState.FOLLOWING:
                # invariant 4: never following with no valid command for longer than the watchdog
                assert self.now - self.last_applied_t[arm] <= CFG.watchdog_s + 1e-9


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), offset=st.floats(-5000.0, 5000.0))
def test_random_streams_never_break_an_invariant(data: st.DataObject, offset: float) -> None:
    c = Checker(offset)
    n = data.draw(st.integers(5, 40), label="steps")
    for _ in range(n):
        arm = data.draw(st.sampled_from(ARMS))
        action = data.draw(st.sampled_from(ACTIONS))
        delay = data.draw(st.one_of(st.floats(0.0, 0.12), st.floats(0.0, 0.6)), label="delay")
        master = c.master[arm]
        if action == "move":
            master += np.array(data.draw(st.tuples(*[st.floats(-4e-4, 4e-4)] * 3)))
            np.clip(master, BOX.low, BOX.high, out=master)
            for _ in range(data.draw(st.integers(1, 20))):  # a burst at 1 kHz with jitter
                c.console_send(arm, master, FLAG_ENGAGED, delay + data.draw(st.floats(0.0, 0.01)))
                c.advance(1)
        elif action == "duplicate" and c.sent:
            c.deliver_at(data.draw(st.sampled_from(c.sent[-10:])), delay)
        elif action == "replay_old" and c.sent:
            c.deliver_at(data.draw(st.sampled_from(c.sent)), delay)
        elif action == "jump":
            c.console_send(arm, master + np.array((0.015, 0.0, 0.0)), FLAG_ENGAGED, delay)
        elif action == "outside":
            c.console_send(arm, np.array((0.0, 0.0, -0.07)), FLAG_ENGAGED | FLAG_REENGAGE, delay)
        elif action == "forge_time":
            c.console_send(arm, master, FLAG_ENGAGED | FLAG_REENGAGE, delay, t_shift=data.draw(st.floats(-3.0, 3.0)))
        elif action in ("reengage", "misaligned"):
            sp = c.sup.setpoint(arm)
            target = sp.position.copy() if action == "reengage" else sp.position + np.array((0.0, 0.005, 0.0))
            quat = quat_about_z(data.draw(st.floats(0.0, 4.9) if action == "reengage" else st.floats(5.1, 20.0)))
            c.master[arm] = np.clip(target, BOX.low, BOX.high)
            c.console_send(arm, c.master[arm], FLAG_ENGAGED | FLAG_REENGAGE, delay, quat=quat)
        elif action == "disengage":
            c.console_send(arm, master, 0, delay)
        elif action == "clutch":
            c.console_send(arm, master + 0.001, FLAG_ENGAGED | FLAG_CLUTCH, delay)
        elif action == "silence":
            c.advance(data.draw(st.integers(40, 1300)))
        elif action == "takeover_like":
            c.sup.clear_latch(arm, c.now)  # operator acknowledges; must not by itself resume following
        c.advance(data.draw(st.integers(0, 30)))
    c.advance(700)
    assert c.sup.violations == 0, c.sup.violation_log
    report = c.sup.report()["commands"]
    assert report["duplicates_applied"] == 0 and report["out_of_order_applied"] == 0
    assert report["applied"] == c.applied
    event(f"applied>0: {c.applied > 0}")
    event(f"holds: {min(len(c.sup.holds), 3)}")
    event(f"latched: {any(t.to_state is SupervisorState.LATCHED for t in c.sup.transitions)}")


def test_property_checker_can_fail() -> None:
    """The checker is not vacuous: a supervisor with the ordering gate removed is caught."""
    c = Checker(0.0)
    c.console_send("PSM1", HOME, FLAG_ENGAGED | FLAG_REENGAGE, 0.0)
    c.advance(1)
    assert c.sup.state("PSM1") is SupervisorState.FOLLOWING
    c.console_send("PSM1", HOME, FLAG_ENGAGED, 0.0)
    c.advance(1)
    c.sup._arms["PSM1"].seen_seq.clear()  # sabotage: forget what was seen
    c.deliver_at(c.sent[0], 0.0)
    try:
        c.advance(1)
    except AssertionError:
        return
    raise AssertionError("a replayed command was applied without the checker noticing")
