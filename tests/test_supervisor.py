"""Unit tests of the safety supervisor state machine and of each invariant (DESIGN.md §4), virtual time."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from telesurg.messages import FLAG_CLUTCH, FLAG_ENGAGED, FLAG_REENGAGE, ArmId, ServoCommand
from telesurg.robot.driver import ArmOperatingState, OperatingState, Pose
from telesurg.robot.local_console import KeyboardConsole, LocalConsole
from telesurg.robot.safety_config import SupervisorConfig, WorkspaceBox
from telesurg.robot.supervisor import LOCAL_SENDER, Outcome, SafetySupervisor, SupervisorState

HOME = (0.0, 0.0, 0.05)
IDENT = (1.0, 0.0, 0.0, 0.0)
REMOTE = "shanghai"
PERIOD = 0.001
ENGAGE = FLAG_ENGAGED | FLAG_REENGAGE


def homed() -> ArmOperatingState:
    return ArmOperatingState(OperatingState.ENABLED, True, False)


class Rig:
    """A supervisor driven in virtual time, with a fake arm that sits at its last setpoint."""

    def __init__(self, config: SupervisorConfig | None = None, arms: tuple[str, ...] = ("PSM1",)) -> None:
        self.sup = SafetySupervisor(config or SupervisorConfig(), arms)
        self.now = 0.0
        self.seq = {a: 0 for a in arms}
        self.measured = {a: Pose(np.array(HOME), np.array(IDENT)) for a in arms}
        self.operating = {a: homed() for a in arms}
        self.outputs: list[dict] = []

    def ready(self) -> Rig:
        self.sup.enable(None, self.now)
        for arm in self.sup.arm_names:
            self.sup.assign(arm, REMOTE, self.now)
        self.tick()
        assert all(self.sup.state(a) is SupervisorState.READY for a in self.sup.arm_names)
        return self

    def tick(self, n: int = 1) -> dict:
        out = {}
        for _ in range(n):
            self.now = round(self.now + PERIOD, 9)
            out = self.sup.tick(self.now, self.measured, None, self.operating)
            self.outputs.append(out)
            for arm, sp in out.items():
                self.measured[arm] = sp.pose
        return out

    def send(self, pos=HOME, flags=FLAG_ENGAGED, arm="PSM1", quat=IDENT, jaw=0.3, age=0.0, sender=REMOTE,
             seq: int | None = None, offset: float | None = 0.0):
        if seq is None:
            seq = self.seq[arm] = self.seq.get(arm, 0) + 1
        cmd = ServoCommand(ArmId[arm].value, seq, self.now - age + (offset or 0.0), tuple(pos), quat, jaw, flags)
        return self.sup.submit(cmd, sender, seq, offset, self.now)

    def follow(self, arm="PSM1") -> Rig:
        d = self.send(HOME, ENGAGE, arm=arm)
        assert d.outcome is Outcome.APPLIED, d
        assert self.sup.state(arm) is SupervisorState.FOLLOWING
        return self


def causes(sup: SafetySupervisor) -> list[tuple[str, str, str]]:
    return [(t.from_state.name, t.to_state.name, t.cause) for t in sup.transitions]


# ------------------------------------------------------------------ state transitions
def test_enable_homes_then_ready_when_driver_reports_homed() -> None:
    rig = Rig()
    rig.sup.enable("PSM1", 0.0)
    assert rig.sup.state("PSM1") is SupervisorState.HOMING
    assert rig.sup.drain_driver_commands() == [("PSM1", "enable"), ("PSM1", "home")]
    rig.operating["PSM1"] = ArmOperatingState(OperatingState.ENABLED, False, True)
    rig.tick(5)
    assert rig.sup.state("PSM1") is SupervisorState.HOMING
    rig.operating["PSM1"] = homed()
    rig.tick()
    assert rig.sup.state("PSM1") is SupervisorState.READY
    assert causes(rig.sup) == [("DISABLED", "HOMING", "operator_enable"), ("HOMING", "READY", "homed")]
    assert rig.sup.transitions[-1].at_s == pytest.approx(rig.now)


def test_ready_to_following_needs_reengage_and_alignment() -> None:
    rig = Rig().ready()
    assert rig.send(HOME, FLAG_ENGAGED).reason == "not_following"
    off = (HOME[0] + 0.004, HOME[1], HOME[2])
    assert rig.send(off, ENGAGE).reason == "not_aligned"
    four = (math.cos(math.radians(2)), math.sin(math.radians(2)), 0.0, 0.0)  # 4 degrees
    six = (math.cos(math.radians(3)), math.sin(math.radians(3)), 0.0, 0.0)  # 6 degrees
    assert rig.send(HOME, ENGAGE, quat=six).reason == "not_aligned"
    assert rig.sup.state("PSM1") is SupervisorState.READY
    assert rig.send(HOME, ENGAGE, quat=four).outcome is Outcome.APPLIED
    assert rig.sup.state("PSM1") is SupervisorState.FOLLOWING
    assert rig.sup.counters["not_aligned"] == 2


def test_disengage_returns_to_ready_and_tool_stops() -> None:
    rig = Rig().ready().follow()
    rig.send((HOME[0] + 0.002, HOME[1], HOME[2]))
    rig.tick(3)
    assert rig.send(HOME, 0).reason == "not_engaged"
    assert rig.sup.state("PSM1") is SupervisorState.READY
    assert rig.tick(5) == {}


def test_watchdog_holds_within_one_period_and_reports_reaction() -> None:
    rig = Rig().ready().follow()
    last_cmd = rig.now
    while rig.sup.state("PSM1") is SupervisorState.FOLLOWING:
        rig.tick()
    assert rig.now - last_cmd <= 0.05 + PERIOD + 1e-9
    assert rig.now - last_cmd > 0.05
    (hold,) = rig.sup.holds
    assert hold.cause == "watchdog" and hold.resumed_by is None
    assert 50.0 < hold.reaction_ms <= 51.0 + 1e-6
    assert rig.tick(10) == {}  # holding: no setpoints leave the supervisor


def test_no_resume_when_packets_return_only_on_aligned_reengage() -> None:
    rig = Rig().ready().follow()
    rig.tick(60)
    assert rig.sup.state("PSM1") is SupervisorState.HOLD
    for _ in range(20):  # the link is back, the surgeon has not re-engaged
        assert rig.send(HOME).reason == "not_following"
        rig.tick()
    assert rig.sup.state("PSM1") is SupervisorState.HOLD
    assert rig.send(HOME, ENGAGE).outcome is Outcome.APPLIED
    assert rig.sup.state("PSM1") is SupervisorState.FOLLOWING
    assert rig.sup.holds[0].resumed_by == "reengage"
    assert rig.sup.report()["safety"]["holds"][0]["resumed_by"] == "reengage"


def test_latch_after_fault_time_cleared_only_by_operator() -> None:
    rig = Rig().ready().follow()
    start = rig.now
    while rig.sup.state("PSM1") is not SupervisorState.LATCHED:
        rig.tick()
        assert rig.now - start < 1.1
    assert rig.now - start == pytest.approx(1.0, abs=2 * PERIOD)
    assert rig.send(HOME, ENGAGE).reason == "not_following"
    rig.tick(100)
    assert rig.sup.state("PSM1") is SupervisorState.LATCHED
    LocalConsole(rig.sup).clear_latch(rig.now)
    assert rig.sup.state("PSM1") is SupervisorState.READY
    assert rig.send(HOME, ENGAGE).outcome is Outcome.APPLIED
    assert causes(rig.sup)[-3:] == [("HOLD", "LATCHED", "fault_time"), ("LATCHED", "READY", "operator_clear_latch"),
                                    ("READY", "FOLLOWING", "reengage_from_ready")]


def test_robot_clock_stepped_back_the_watchdog_and_fault_time_still_count() -> None:
    """Ticks earlier than the last one: the robot's clock stepped back 10 s. The watchdog and the
    fault time counted from the last command, now 10 s "ahead", so an arm whose commands stopped at
    the step kept following for 10 s instead of holding within the watchdog time."""
    rig = Rig().ready().follow()
    rig.now -= 10.0
    start = rig.now
    while rig.sup.state("PSM1") is SupervisorState.FOLLOWING:
        rig.tick()
        assert rig.now - start < 0.06
    assert rig.sup.holds[-1].cause == "watchdog"
    while rig.sup.state("PSM1") is SupervisorState.HOLD:
        rig.tick()
        assert rig.now - start < 1.1
    assert rig.sup.state("PSM1") is SupervisorState.LATCHED


def test_robot_clock_stepped_forward_holds_but_does_not_latch() -> None:
    """A tick 10 s after the last: no command was judged meanwhile, so the arm holds, but the 10 s
    are not the surgeon's silence: no latch (which only the patient-side team can clear); the
    surgeon's aligned re-engage resumes, as after any hold."""
    rig = Rig().ready().follow()
    rig.now += 10.0
    assert rig.tick() == {}
    rig.tick(100)
    assert rig.sup.state("PSM1") is SupervisorState.HOLD  # not LATCHED
    assert rig.sup.holds[-1].cause == "clock_jump"
    assert rig.send(HOME).reason == "not_following"
    assert rig.send(HOME, ENGAGE).outcome is Outcome.APPLIED
    assert rig.sup.state("PSM1") is SupervisorState.FOLLOWING
    rig.tick(5)
    assert rig.sup.state("PSM1") is SupervisorState.FOLLOWING


def test_commands_during_hold_keep_it_from_latching() -> None:
    rig = Rig().ready().follow()
    rig.tick(60)
    for _ in range(150):
        rig.send(HOME)
        rig.tick(10)
    assert rig.sup.state("PSM1") is SupervisorState.HOLD


def test_driver_fault_goes_to_fault_and_disables() -> None:
    rig = Rig().ready().follow()
    rig.sup.drain_driver_commands()
    rig.operating["PSM1"] = ArmOperatingState(OperatingState.FAULT, True, False)
    assert rig.tick() == {}
    assert rig.sup.state("PSM1") is SupervisorState.FAULT
    assert rig.sup.drain_driver_commands() == [("PSM1", "disable")]
    rig.sup.reset_fault("PSM1", rig.now)
    assert rig.sup.state("PSM1") is SupervisorState.DISABLED


# --------------------------------------------------------------------- invariants 1-3
def test_duplicate_and_out_of_order_rejected() -> None:
    rig = Rig().ready().follow()
    assert rig.send(seq=5).outcome is Outcome.APPLIED
    assert rig.send(seq=5).reason == "duplicate"
    assert rig.send(seq=3).reason == "out_of_order"
    assert rig.send(seq=6).outcome is Outcome.APPLIED
    assert rig.sup.last_applied_seq("PSM1") == 6
    report = rig.sup.report()["commands"]
    assert report["rejected"] == {"duplicate": 1, "out_of_order": 1}
    assert report["duplicates_applied"] == 0 and report["out_of_order_applied"] == 0


def test_freshness_uses_offset_and_rejects_forged_future() -> None:
    rig = Rig().ready().follow()
    assert rig.send(age=0.29, offset=1234.5).outcome is Outcome.APPLIED  # console clock far from ours
    assert rig.send(age=0.31, offset=1234.5).reason == "stale"
    assert rig.send(age=-0.5).reason == "future"
    assert rig.send(offset=None).reason == "no_clock_offset"


def test_jump_and_workspace_rejected_not_chased() -> None:
    cfg = SupervisorConfig(workspace={"PSM1": WorkspaceBox(low=(-0.05, -0.05, 0.0), high=(0.05, 0.05, 0.055))})
    rig = Rig(cfg).ready().follow()
    assert rig.send((HOME[0] + 0.02, HOME[1], HOME[2])).reason == "jump"
    rot = (math.cos(math.radians(20)), 0.0, math.sin(math.radians(20)), 0.0)  # 40 degrees
    assert rig.send(quat=rot).reason == "jump"
    near_edge = (0.0, 0.0, 0.058)  # 5 mm away (no jump) but above the box
    rig2 = Rig(cfg)
    rig2.measured["PSM1"] = Pose(np.array((0.0, 0.0, 0.053)))
    rig2.ready()
    assert rig2.send((0.0, 0.0, 0.053), ENGAGE).outcome is Outcome.APPLIED
    assert rig2.send(near_edge).reason == "workspace"
    rig2.tick(100)
    assert rig2.sup.setpoint("PSM1").position[2] == pytest.approx(0.053)


def test_steps_respect_step_velocity_and_jaw_caps() -> None:
    rig = Rig().ready().follow()
    target = (HOME[0] + 0.005, HOME[1] - 0.003, HOME[2])
    rig.send(target, jaw=1.2)
    positions = [np.array(HOME)]
    jaws = [0.0]
    for _ in range(80):
        rig.send(target, jaw=1.2)
        sp = rig.tick()["PSM1"]
        positions.append(sp.pose.position)
        jaws.append(sp.jaw)
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    assert steps.max() <= 1e-4 + 1e-12
    assert np.allclose(positions[-1], target)  # 5.8 mm at 0.1 mm/ms: reached in 59 steps
    assert np.abs(np.diff(jaws)).max() <= 3.0 * PERIOD + 1e-12
    assert jaws[-1] == pytest.approx(80 * 3.0 * PERIOD)
    assert rig.sup.violations == 0


def test_jaw_outside_range_is_clipped() -> None:
    rig = Rig().ready().follow()
    d = rig.send(jaw=5.0)
    assert d.outcome is Outcome.CLIPPED and d.accepted


def test_clutch_keeps_tool_still() -> None:
    rig = Rig().ready().follow()
    for i in range(30):
        rig.send((HOME[0] + 0.0001 * i, HOME[1], HOME[2]), FLAG_ENGAGED | FLAG_CLUTCH)
        rig.tick()
    assert np.allclose(rig.sup.setpoint("PSM1").position, HOME)
    assert rig.sup.state("PSM1") is SupervisorState.FOLLOWING


def test_late_tick_does_not_allow_a_bigger_step() -> None:
    rig = Rig().ready().follow()
    rig.send((HOME[0] + 0.005, HOME[1], HOME[2]))
    before = rig.sup.setpoint("PSM1").position
    rig.now += 0.02  # the loop stalled 20 ms
    sp = rig.tick()["PSM1"]
    assert np.linalg.norm(sp.pose.position - before) <= 1e-4 + 1e-12


# ------------------------------------------------------------ invariant 6: precedence
def test_takeover_refuses_remote_until_handed_back() -> None:
    rig = Rig(arms=("PSM1", "PSM2")).ready().follow("PSM1").follow("PSM2")
    local = LocalConsole(rig.sup)
    local.takeover(rig.now, "PSM1")
    assert rig.sup.state("PSM1") is SupervisorState.HOLD
    assert rig.sup.holds[-1].cause == "takeover"
    assert rig.sup.state("PSM2") is SupervisorState.FOLLOWING  # only the arm taken over
    assert rig.send(HOME, ENGAGE).reason == "not_owner"
    assert rig.sup.assign("PSM1", REMOTE, rig.now) is False
    assert rig.send(HOME, ENGAGE, sender=LOCAL_SENDER, seq=1).outcome is Outcome.APPLIED
    assert rig.sup.state("PSM1") is SupervisorState.FOLLOWING
    local.hand_back(rig.now)
    assert rig.sup.controller("PSM1") == REMOTE
    assert rig.sup.state("PSM1") is SupervisorState.HOLD  # remote re-aligns before moving
    assert rig.send(HOME, ENGAGE).outcome is Outcome.APPLIED


def test_emergency_stop_overrides_everything_until_released() -> None:
    rig = Rig(arms=("PSM1", "PSM2", "ECM")).ready().follow("PSM1")
    rig.sup.drain_driver_commands()
    local = LocalConsole(rig.sup)
    local.emergency_stop(rig.now)
    assert {rig.sup.state(a) for a in rig.sup.arm_names} == {SupervisorState.FAULT}
    assert sorted(rig.sup.drain_driver_commands()) == [("ECM", "disable"), ("PSM1", "disable"),
                                                       ("PSM2", "disable")]
    assert rig.send(HOME, ENGAGE).reason == "estop"
    assert rig.send(HOME, ENGAGE, sender=LOCAL_SENDER).reason == "estop"
    rig.sup.enable(None, rig.now)
    rig.sup.reset_fault(None, rig.now)
    assert rig.tick(5) == {} and rig.sup.state("PSM1") is SupervisorState.FAULT
    local.release_estop(rig.now)
    assert rig.sup.state("PSM1") is SupervisorState.DISABLED
    rig.ready()
    assert rig.send(HOME, ENGAGE).outcome is Outcome.APPLIED
    assert rig.sup.report()["safety"]["estopped"] is False


def test_keyboard_console_dispatches_actions() -> None:
    rig = Rig().ready().follow()
    local = LocalConsole(rig.sup)
    kb = KeyboardConsole(lambda action: action(local, rig.now))
    assert kb.handle_line("t psm1") == "takeover PSM1"
    assert rig.sup.controller("PSM1") == LOCAL_SENDER
    assert kb.handle_line("e") == "emergency_stop"
    assert rig.sup.state("PSM1") is SupervisorState.FAULT
    assert "unknown" in kb.handle_line("zz")


# ------------------------------------------------------------------ config and report
@pytest.mark.parametrize(("kwargs", "field"), [
    ({"watchdog_s": 0.9, "fault_s": 0.5}, "fault_s"),
    ({"freshness_s": -1}, "freshness_s"),
    ({"max_step_m": 0.5}, "max_step_m"),
    ({"jump_m": 0.002}, "jump_m"),
    ({"default_workspace": {"low": (0, 0, 0), "high": (1, -1, 1)}}, "workspace y"),
    ({"watchdg_s": 0.05}, "watchdg_s"),
])
def test_config_errors_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        SupervisorConfig(**kwargs)


def test_report_has_published_fields() -> None:
    rig = Rig().ready().follow()
    rig.send(seq=1)
    rig.tick(60)
    report = rig.sup.report()
    assert report["commands"]["applied"] == 1
    assert report["commands"]["rejected"] == {"duplicate": 1}
    safety = report["safety"]
    assert safety["violations"] == 0
    assert set(safety["holds"][0]) >= {"at_s", "reaction_ms", "cause", "resumed_by"}
    assert safety["final_state"] == {"PSM1": "HOLD"}


def test_unknown_arm_and_unknown_sender() -> None:
    rig = Rig().ready()
    assert rig.send(arm="PSM2").reason == "unknown_arm"
    assert rig.send(HOME, ENGAGE, sender="mallory").reason == "not_owner"


def test_reengage_aligns_with_the_tool_as_measured_not_with_a_setpoint_it_cannot_reach() -> None:
    rig = Rig().ready().follow()
    rig.tick(60)
    assert rig.sup.state("PSM1") is SupervisorState.HOLD
    # the tool is held 5 mm short of its setpoint (pressed against tissue): measured != setpoint
    blocked = (HOME[0], HOME[1], HOME[2] + 0.005)
    rig.measured["PSM1"] = Pose(np.array(blocked), np.array(IDENT))
    rig.tick()
    assert rig.send(HOME, ENGAGE).reason == "not_aligned"  # the setpoint is not where the tool is
    decision = rig.send(blocked, ENGAGE)
    assert decision.outcome is Outcome.APPLIED, decision
    assert rig.sup.state("PSM1") is SupervisorState.FOLLOWING
    previous = np.array(rig.sup.setpoint("PSM1").position)
    out = rig.tick()  # the setpoint walks from where it was toward the new target within the step cap
    step = np.linalg.norm(np.array(out["PSM1"].pose.position) - previous)
    assert 0 < step <= SupervisorConfig().max_step_m * (1 + 1e-6)
    assert rig.sup.violations == 0
