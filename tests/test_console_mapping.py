"""Mapping and core: scaling, clutch, alignment-gated REENGAGE, seq and flags, against a small fake robot."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from telesurg.console import quat
from telesurg.console.config import ConsoleConfig, TremorFilterConfig
from telesurg.console.core import ConsoleCore, supervisor_state_name
from telesurg.console.inputs import ArmMasterState, MasterState
from telesurg.console.mapping import ArmTeleop, RobotArmView, TeleopMode
from telesurg.messages import (
    FLAG_CLUTCH,
    FLAG_ENGAGED,
    FLAG_REENGAGE,
    ArmId,
    ArmTelemetry,
    ServoCommand,
    Telemetry,
)
from telesurg.robot.supervisor import SupervisorState

FOLLOW_VALUE, HOLD_VALUE = SupervisorState.FOLLOWING, SupervisorState.HOLD
FOLLOW_NAME = supervisor_state_name(FOLLOW_VALUE)
TOOL_HOME = (0.01, -0.02, 0.1)
TOOL_Q = quat.from_axis_angle((0, 0, 1), 0.3)


def view(pos=TOOL_HOME, q=TOOL_Q, following=False, applied=0) -> RobotArmView:
    return RobotArmView(pos, q, 0.2, following, applied)


def master(pos=(0.0, 0.0, 0.0), q=TOOL_Q, **kw) -> ArmMasterState:
    return ArmMasterState(pos, q, 0.4, **kw)


def follow_teleop(scale=0.25) -> ArmTeleop:
    """An arm teleop brought to FOLLOWING through the real resume sequence."""
    t = ArmTeleop(scale)
    t.step(0.0, master(), view(), 1)
    cmd = t.step(0.001, master(reengage=True), view(), 2)
    assert cmd is not None and cmd.flags == FLAG_ENGAGED | FLAG_REENGAGE
    t.step(0.002, master(), view(following=True, applied=2), 3)
    assert t.mode is TeleopMode.FOLLOWING
    return t


def test_first_command_is_measured_pose_and_scaling_applies():
    t = follow_teleop(scale=0.25)
    cmd = t.step(0.003, master(pos=(0.04, 0.0, -0.02)), view(following=True, applied=3), 4)
    assert cmd is not None and cmd.flags == FLAG_ENGAGED
    np.testing.assert_allclose(cmd.position, (TOOL_HOME[0] + 0.01, TOOL_HOME[1], TOOL_HOME[2] - 0.005), atol=1e-12)
    assert quat.angle_between(cmd.orientation, TOOL_Q) < 1e-9


def test_no_command_before_telemetry():
    t = ArmTeleop(0.2)
    assert t.step(0.0, master(reengage=True), None, 1) is None
    assert t.mode is TeleopMode.WAITING


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.floats(-0.2, 0.2)] * 3), min_size=1, max_size=30),
       st.floats(0.05, 1.0))
def test_clutched_motion_never_moves_tool_and_release_reanchors(moves, scale):
    t = follow_teleop(scale)
    robot = view(following=True, applied=3)
    before = t.step(0.003, master(pos=(0.01, 0.0, 0.0)), robot, 4)
    assert before is not None
    for i, p in enumerate(moves):
        cmd = t.step(0.004 + i * 1e-3, master(pos=p, clutch=True), robot, 5 + i)
        assert cmd is not None and cmd.flags == FLAG_ENGAGED | FLAG_CLUTCH
        assert cmd.position == before.position and cmd.orientation == before.orientation
    last = moves[-1]
    released = t.step(1.0, master(pos=last), robot, 100)
    assert released is not None and released.flags == FLAG_ENGAGED
    np.testing.assert_allclose(released.position, before.position, atol=1e-12)  # re-anchored: no jump
    moved = t.step(1.001, master(pos=(last[0] + 0.01, last[1], last[2])), robot, 101)
    np.testing.assert_allclose(np.subtract(moved.position, before.position), (0.01 * scale, 0, 0), atol=1e-12)


def test_clutch_release_waits_for_orientation_alignment():
    t = follow_teleop()
    robot = view(following=True, applied=3)
    frozen = t.step(0.003, master(clutch=True), robot, 4)
    twisted = quat.multiply(quat.from_axis_angle((1, 0, 0), math.radians(20)), TOOL_Q)
    cmd = t.step(0.004, master(pos=(0.05, 0, 0), q=twisted), robot, 5)
    assert t.mode is TeleopMode.CLUTCHED and cmd.flags & FLAG_CLUTCH and cmd.position == frozen.position
    assert t.wanted_alignment is not None and quat.angle_between(t.wanted_alignment, TOOL_Q) < 1e-9
    cmd = t.step(0.005, master(pos=(0.05, 0, 0)), robot, 6)
    assert t.mode is TeleopMode.FOLLOWING and cmd.position == frozen.position


def test_reengage_needs_fresh_press_and_alignment_after_hold():
    t = follow_teleop()
    held = view(pos=(0.02, 0.0, 0.1), following=False, applied=5)
    cmd = t.step(0.01, master(reengage=True), held, 6)  # button held from before: not a fresh action
    assert t.mode is TeleopMode.IDLE and cmd.flags == FLAG_ENGAGED and cmd.position == held.position
    cmd = t.step(0.011, master(), held, 7)
    twisted = quat.multiply(quat.from_axis_angle((0, 1, 0), math.radians(8)), TOOL_Q)
    cmd = t.step(0.012, master(q=twisted, reengage=True), held, 7)  # press, but misaligned by 8° > 5°
    assert not cmd.flags & FLAG_REENGAGE and t.mode is TeleopMode.IDLE
    assert math.degrees(t.alignment_error_rad) > 7.9
    slight = quat.multiply(quat.from_axis_angle((0, 1, 0), math.radians(3)), TOOL_Q)
    cmd = t.step(0.013, master(pos=(0.3, 0, 0), q=slight), held, 7)  # aligned now: pending request honoured
    assert cmd.flags == FLAG_ENGAGED | FLAG_REENGAGE
    assert cmd.position == held.position and quat.angle_between(cmd.orientation, held.orientation) < 1e-9
    assert t.mode is TeleopMode.REENGAGING


def test_reengage_times_out_back_to_idle():
    t = ArmTeleop(0.2, reengage_timeout_s=0.5)
    t.step(0.0, master(), view(), 1)
    t.step(0.001, master(reengage=True), view(), 2)
    assert t.mode is TeleopMode.REENGAGING
    cmd = t.step(0.6, master(), view(), 3)  # robot never confirmed
    assert t.mode is TeleopMode.IDLE and not cmd.flags & FLAG_REENGAGE
    cmd = t.step(0.7, master(), view(), 4)  # and it does not retry without a new press
    assert not cmd.flags & FLAG_REENGAGE


class FakeRobot:
    """Just enough robot for the core: resumes on an aligned REENGAGE, holds on demand."""

    def __init__(self, arms):
        self.pose = {a: (TOOL_HOME, TOOL_Q) for a in arms}
        self.following = dict.fromkeys(arms, False)
        self.applied = dict.fromkeys(arms, 0)
        self.holds = 0
        self.jumps = 0

    def apply(self, cmd: ServoCommand) -> None:
        arm = ArmId(cmd.arm)
        pos, q = self.pose[arm]
        close = math.dist(pos, cmd.position) < 0.003 and quat.angle_between(q, cmd.orientation) < math.radians(5)
        if not self.following[arm] and cmd.reengage and close:
            self.following[arm] = True
        if self.following[arm] and cmd.engaged and not cmd.clutch:
            if math.dist(pos, cmd.position) > 0.002:
                self.jumps += 1
            self.pose[arm] = (cmd.position, cmd.orientation)
        self.applied[arm] = cmd.cmd_seq

    def hold(self, arm) -> None:
        self.following[arm] = False
        self.holds += 1

    def telemetry(self, t: float) -> Telemetry:
        return Telemetry(t, self.holds, tuple(
            ArmTelemetry(int(a), 1, FOLLOW_VALUE if self.following[a] else HOLD_VALUE, self.applied[a],
                         p, q, 0.2) for a, (p, q) in self.pose.items()))


class WavingMaster:
    def __init__(self, press_until=0.01, clutch_between=(0.3, 0.35)):
        self.press_until, self.clutch_between = press_until, clutch_between

    def sample(self, now):
        lo, hi = self.clutch_between
        return MasterState(now, {arm: ArmMasterState((0.02 * math.sin(3 * now) + 0.001 * arm, 0.0, 0.0), TOOL_Q,
                                                     0.3, lo <= now < hi, True, now < self.press_until)
                                 for arm in (ArmId.PSM1, ArmId.PSM2)})


def test_core_seq_flags_rate_and_no_jump_end_to_end():
    config = ConsoleConfig(following_states=(FOLLOW_NAME,), tremor_filter=TremorFilterConfig(enabled=False))
    core = ConsoleCore(config, WavingMaster())
    robot = FakeRobot(config.arms)
    seqs: dict[int, list[int]] = {0: [], 1: []}
    flags_seen: set[int] = set()
    now = 0.0
    for i in range(1000):
        now = i * 0.0005  # driver ticks at 2 kHz; the core must still emit at 1 kHz
        telemetry = robot.telemetry(now) if i % 20 == 0 else None  # 100 Hz
        for cmd in core.tick(now, telemetry):
            assert cmd.t_sent == now
            seqs[cmd.arm].append(cmd.cmd_seq)
            flags_seen.add(cmd.flags)
            robot.apply(cmd)
    for arm_seqs in seqs.values():
        assert len(arm_seqs) == 500
        assert all(b == a + 1 for a, b in zip(arm_seqs, arm_seqs[1:], strict=False))
    assert core.counters.sent == {ArmId.PSM1: 500, ArmId.PSM2: 500}
    assert FLAG_ENGAGED | FLAG_REENGAGE in flags_seen and FLAG_ENGAGED in flags_seen
    assert FLAG_ENGAGED | FLAG_CLUTCH in flags_seen
    assert all(robot.following.values()) and robot.jumps == 0
    # a hold: the console drops to IDLE, never resumes by itself
    robot.hold(ArmId.PSM1)
    for i in range(1000, 1300):
        now = i * 0.0005
        for cmd in core.tick(now, robot.telemetry(now) if i % 20 == 0 else None):
            if cmd.arm == ArmId.PSM1:
                assert not cmd.reengage
            robot.apply(cmd)
    assert not robot.following[ArmId.PSM1] and core.teleop(ArmId.PSM1).mode is TeleopMode.IDLE


def test_core_skips_missed_periods_instead_of_bursting():
    config = ConsoleConfig(following_states=(FOLLOW_NAME,))
    core = ConsoleCore(config, WavingMaster())
    robot = FakeRobot(config.arms)
    assert len(core.tick(0.0, robot.telemetry(0.0))) == 2
    assert core.tick(0.0004) == []
    out = core.tick(0.0105)  # 10 periods late
    assert len(out) == 2 and core.counters.periods_skipped == 9
    assert core.next_deadline() > 0.0105


def test_core_keeps_sending_when_the_console_clock_steps_back():
    """The console's clock steps back 10 s: its grid lay 10 s ahead of every tick, so it sent
    nothing for 10 s (the robot held, then latched). It restarts the grid at the step."""
    config = ConsoleConfig(following_states=(FOLLOW_NAME,))
    core = ConsoleCore(config, WavingMaster())
    robot = FakeRobot(config.arms)
    produced = [len(core.tick(0.001 * k, robot.telemetry(0.001 * k) if k == 0 else None)) for k in range(100)]
    produced += [len(core.tick(0.001 * k - 10.0)) for k in range(100, 200)]
    assert produced == [2] * 200
    assert core.counters.periods_skipped == 0


def test_core_follows_the_robot_through_a_robot_clock_step_back():
    """Telemetry older than the newest is dropped (reordered across paths), but 10 s older means the
    robot's clock stepped back: dropped, the console saw no robot state, and no hold, for 10 s."""
    config = ConsoleConfig(following_states=(FOLLOW_NAME,), arms=(ArmId.PSM1,))
    core = ConsoleCore(config, WavingMaster())
    robot = FakeRobot(config.arms)
    core.tick(0.0, robot.telemetry(100.0))
    core.tick(0.001, robot.telemetry(99.9))  # reordered
    assert core.counters.telemetry_stale_dropped == 1
    robot.hold(ArmId.PSM1)
    core.tick(0.002, robot.telemetry(90.0))  # the robot's clock stepped back 10 s, and it holds
    assert core.counters.telemetry_received == 2
    assert core.arm_status()[0].supervisor_state == supervisor_state_name(HOLD_VALUE)


def test_core_sends_every_period_whatever_the_wake_up_jitter():
    """A driver on a 1 ms grid wakes a little late each time, by varying amounts; the first wake-up
    fixes the core's own grid. Every wake-up must still produce its period's commands."""
    config = ConsoleConfig(following_states=(FOLLOW_NAME,))
    core = ConsoleCore(config, WavingMaster())
    robot = FakeRobot(config.arms)
    rng = np.random.default_rng(3)
    lateness = [0.0004, *rng.uniform(0.0, 0.0009, 999)]  # the first wake was among the latest
    produced = [len(core.tick(0.001 * k + late, robot.telemetry(0.001 * k + late) if k == 0 else None))
                for k, late in enumerate(lateness)]
    assert produced == [2] * len(lateness)
    assert core.counters.periods_skipped == 0


def test_one_way_delay_estimate_from_applied_seq():
    config = ConsoleConfig(following_states=(FOLLOW_NAME,), arms=(ArmId.PSM1,))
    core = ConsoleCore(config, WavingMaster())
    robot = FakeRobot(config.arms)
    core.set_clock_offset(5.0)  # robot clock runs 5 s ahead
    sent = core.tick(0.0, robot.telemetry(5.0))
    robot.apply(sent[0])
    core.tick(0.001, robot.telemetry(5.0 + 0.080))  # applied seq 1 seen at robot time = console 0.080
    assert abs(core.one_way_delay_ms() - 80.0) < 1e-6
    # the robot applies nothing more (a hold, the clutch, the task done): the same seq keeps coming back
    # in later telemetry; its age is not the path's delay
    core.tick(0.500, robot.telemetry(5.0 + 0.500))
    assert abs(core.one_way_delay_ms() - 80.0) < 1e-6


@settings(max_examples=80, deadline=None)
@given(st.floats(0.05, 1.0), st.tuples(*[st.floats(-0.1, 0.1)] * 3), st.floats(-math.pi, math.pi),
       st.tuples(*[st.floats(-1, 1)] * 3).filter(lambda v: sum(c * c for c in v) > 0.01))
def test_tool_displacement_is_scaled_registered_master_displacement(scale, d, angle, axis):
    registration = quat.from_axis_angle(axis, angle)
    t = ArmTeleop(scale, registration)
    master_q = quat.multiply(quat.conjugate(registration), TOOL_Q)  # aligned in the robot frame
    t.step(0.0, master(q=master_q), view(), 1)
    first = t.step(0.001, master(q=master_q, reengage=True), view(), 2)
    moved = t.step(0.002, master(pos=d, q=master_q), view(), 3)
    np.testing.assert_allclose(first.position, TOOL_HOME, atol=1e-12)
    expected = np.add(TOOL_HOME, scale * np.asarray(quat.rotate(registration, d)))
    np.testing.assert_allclose(moved.position, expected, atol=1e-12)


def test_malformed_telemetry_is_counted_and_never_anchors():
    config = ConsoleConfig(following_states=(FOLLOW_NAME,), arms=(ArmId.PSM1,))
    core = ConsoleCore(config, WavingMaster())
    nan_pose = Telemetry(0.0, 0, (ArmTelemetry(0, 1, HOLD_VALUE, 0, (math.nan, 0.0, 0.0), TOOL_Q, 0.2),))
    assert core.tick(0.0, nan_pose) == []  # no pose known: no command
    assert core.counters.telemetry_malformed == 1
    good = FakeRobot(config.arms).telemetry(0.001)
    (cmd,) = core.tick(0.001, good)
    assert cmd.position == TOOL_HOME
    assert core.tick(0.002, Telemetry(0.0005, 0, good.arms)) and core.counters.telemetry_stale_dropped == 1
