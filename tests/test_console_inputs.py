"""Master inputs: trajectory file round trip, scripted task through the real core, keyboard/pygame."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from telesurg.console import quat
from telesurg.console.config import ConsoleConfig, TremorFilterConfig
from telesurg.console.core import ConsoleCore, supervisor_state_name
from telesurg.console.human_input import ManualMaster
from telesurg.console.inputs import HapticMaster, MasterInput, ScriptedSurgeonInput, ScriptedTaskInput
from telesurg.console.script_file import ScriptError, ScriptSample, read_script, write_script
from telesurg.messages import ArmId, ArmTelemetry, Telemetry
from telesurg.robot.supervisor import SupervisorState

unit_quats = st.tuples(*[st.floats(-1, 1)] * 4).filter(lambda q: sum(c * c for c in q) > 0.1).map(quat.normalize)


@settings(max_examples=100, deadline=None)
@given(unit_quats, unit_quats, st.tuples(*[st.floats(-1, 1)] * 3))
def test_quaternion_helpers_agree_with_scipy(a, b, v):
    ra, rb = Rotation.from_quat(a, scalar_first=True), Rotation.from_quat(b, scalar_first=True)
    ours = quat.multiply(a, b)
    theirs = (ra * rb).as_quat(scalar_first=True)
    assert quat.angle_between(ours, tuple(theirs)) < 1e-6
    np.testing.assert_allclose(quat.rotate(a, v), ra.apply(v), atol=1e-9)
    assert abs(quat.angle_between(a, b) - (ra.inv() * rb).magnitude()) < 1e-6


def test_script_file_round_trip_and_interpolation(tmp_path):
    samples = [ScriptSample(0.0, ArmId.PSM1, (0.0, 0.0, 0.0), quat.IDENTITY, 0.1, reengage=True),
               ScriptSample(1.0, ArmId.PSM1, (0.02, -0.04, 0.0), quat.from_axis_angle((0, 0, 1), 0.2), 0.5,
                            clutch=True),
               ScriptSample(0.5, ArmId.PSM2, (0.1, 0.1, 0.1), engaged=False)]
    path = tmp_path / "surgeon.jsonl"
    write_script(path, samples, comment="test script")
    script = read_script(path)
    assert script.samples() == sorted(samples, key=lambda s: (s.t, s.arm))
    replay = ScriptedSurgeonInput(path)
    assert replay.sample(10.0).arms[ArmId.PSM1].reengage  # t = 0
    mid = replay.sample(10.5).arms
    np.testing.assert_allclose(mid[ArmId.PSM1].position, (0.01, -0.02, 0.0))
    assert mid[ArmId.PSM1].jaw == pytest.approx(0.3) and not mid[ArmId.PSM1].clutch
    assert quat.angle_between(mid[ArmId.PSM1].orientation, quat.from_axis_angle((0, 0, 1), 0.1)) < 1e-9
    assert not mid[ArmId.PSM2].engaged
    end = replay.sample(12.0).arms[ArmId.PSM1]
    assert end.clutch and end.position == (0.02, -0.04, 0.0)


@pytest.mark.parametrize(("line", "needle"), [
    ({"t": 0, "arm": "PSM9", "pos": [0, 0, 0]}, "unknown arm"),
    ({"t": 0, "arm": "PSM1", "pos": [0, 0]}, "pos must be a list of 3"),
    ({"t": 0, "arm": "PSM1", "pos": [0, 0, 0], "clutch": "yes"}, "clutch must be true or false"),
    ({"t": 0, "arm": "PSM1", "pos": [0, 0, 0], "speed": 1}, "unknown field"),
    ({"arm": "PSM1", "pos": [0, 0, 0]}, "missing field 't'"),
])
def test_script_errors_name_line_and_field(tmp_path, line, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text("# header\n" + json.dumps(line) + "\n")
    with pytest.raises(ScriptError, match=needle) as info:
        read_script(path)
    assert ":2:" in str(info.value)


def test_script_rejects_time_going_backwards(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"t": 1, "arm": "PSM1", "pos": [0,0,0]}\n{"t": 0.5, "arm": "PSM1", "pos": [0,0,0]}\n')
    with pytest.raises(ScriptError, match="increase strictly"):
        read_script(path)


def test_shipped_example_script_loads():
    example = resources.files("telesurg.console") / "examples" / "circles.jsonl"
    script = read_script(str(example))
    assert set(script.arms) == {ArmId.PSM1, ArmId.PSM2} and script.duration == pytest.approx(4.0)


@dataclass(frozen=True)
class Target:
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]
    jaw: float


class LinePlan:
    """A small tool-space plan with the peg-transfer interface: `.duration`, `.sample(t)`."""

    duration = 2.0
    start = {"psm1": (0.0, 0.0, 0.1), "psm2": (0.05, 0.0, 0.1)}

    def sample(self, t):
        s = min(t, self.duration) / self.duration
        return {name: Target((p[0] + 0.03 * s, p[1] - 0.01 * s, p[2] - 0.02 * s * s),
                             quat.from_axis_angle((0, 0, 1), 0.1 + 0.05 * s), 0.2 + 0.3 * s)
                for name, p in self.start.items()}


def test_scripted_task_reproduces_tool_targets_through_the_core():
    follow = supervisor_state_name(SupervisorState.FOLLOWING)
    registration = quat.from_axis_angle((0, 0, 1), math.pi / 2)  # master frame turned 90° to the robot
    config = ConsoleConfig(scale=0.3, registration_wxyz=registration, following_states=(follow,),
                           tremor_filter=TremorFilterConfig(enabled=False))
    plan = LinePlan()
    task = ScriptedTaskInput(plan, config.scale, registration, master_origin=(0.1, 0.2, 0.3), start_time=0.0,
                             lead_in_s=1.0)
    core = ConsoleCore(config, task)
    pose0 = {ArmId.PSM1: plan.sample(0)["psm1"], ArmId.PSM2: plan.sample(0)["psm2"]}
    following = False
    worst = 0.0
    compared = 0
    for i in range(3001):
        now = i / 1000
        telemetry = Telemetry(now, 0, tuple(ArmTelemetry(int(a), 1, SupervisorState.FOLLOWING if following else SupervisorState.READY, i, p.position,
                                                         p.orientation, p.jaw) for a, p in pose0.items()))
        for cmd in core.tick(now, telemetry if i % 10 == 0 else None):
            following = following or cmd.reengage
            if cmd.engaged and not cmd.reengage:
                target = plan.sample(max(0.0, now - 1.0))["psm1" if cmd.arm == 0 else "psm2"]
                worst = max(worst, math.dist(cmd.position, target.position))
                compared += 1
                assert quat.angle_between(cmd.orientation, target.orientation) < 1e-9
                assert cmd.jaw == pytest.approx(target.jaw)
    assert following and compared > 2 * 2000 and worst < 1e-9


def test_manual_master_moves_selected_arm_and_aligns():
    m = ManualMaster(speed_m_s=0.1)
    assert isinstance(m, HapticMaster) and isinstance(m, MasterInput)
    m.sample(0.0)
    m.key_down("d")
    for i in range(1, 11):
        s = m.sample(0.05 * i)
    assert s.arms[ArmId.PSM1].position[0] == pytest.approx(0.05) and s.arms[ArmId.PSM2].position[0] == 0.0
    m.key_up("d")
    m.key_down("tab")
    m.key_down("space")
    s = m.sample(0.6)
    assert s.arms[ArmId.PSM1].position[0] == pytest.approx(0.05)  # the key is up again
    assert s.arms[ArmId.PSM1].clutch
    target = quat.from_axis_angle((1, 0, 0), 0.4)
    m.align_to(ArmId.PSM2, target, 1.0)
    assert m.sample(1.1).arms[ArmId.PSM2].orientation == target


def test_pygame_master_reads_posted_key_events_headless(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", os.environ.get("SDL_VIDEODRIVER", "dummy"))
    pygame = pytest.importorskip("pygame")
    from telesurg.console.human_input import PygameMaster

    master = PygameMaster(speed_m_s=0.1)
    try:
        master.sample(0.0)
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_w))
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_RETURN))
        s = master.sample(0.1)
        assert s.arms[ArmId.PSM1].position[1] == pytest.approx(0.01) and s.arms[ArmId.PSM1].reengage
        pygame.event.post(pygame.event.Event(pygame.KEYUP, key=pygame.K_w))
        s2 = master.sample(0.2)
        assert s2.arms[ArmId.PSM1].position == s.arms[ArmId.PSM1].position
    finally:
        master.close()


def test_shipped_example_drives_the_core_with_clutch_window():
    example = resources.files("telesurg.console") / "examples" / "circles.jsonl"
    follow = supervisor_state_name(SupervisorState.FOLLOWING)
    core = ConsoleCore(ConsoleConfig(following_states=(follow,)), ScriptedSurgeonInput(str(example), start_time=0.0))
    home = {ArmId.PSM1: (-0.03, 0.0, 0.05), ArmId.PSM2: (0.03, 0.0, 0.05)}
    state = SupervisorState.READY
    clutched_at = []
    for i in range(3000):
        now = i / 1000
        tel = Telemetry(now, 0, tuple(ArmTelemetry(int(a), 1, state, i, p, quat.IDENTITY, 0.3) for a, p in home.items()))
        for cmd in core.tick(now, tel):
            if cmd.reengage:
                state = SupervisorState.FOLLOWING
            if cmd.clutch:
                clutched_at.append(now)
    assert clutched_at and min(clutched_at) >= 2.0 and max(clutched_at) < 2.5 + 0.002


def test_scripted_task_freezes_while_the_robot_holds_and_finishes_later():
    task = ScriptedTaskInput(LinePlan(), 0.2, start_time=0.0, lead_in_s=0.0)
    assert task.sample(1.0).arms[ArmId.PSM1].position == task.sample(1.0).arms[ArmId.PSM1].position
    task.hold(0.8)  # the last command the robot applied was sent at 0.8 s
    frozen = task.sample(1.5).arms[ArmId.PSM1].position
    assert task.sample(3.0).arms[ArmId.PSM1].position == frozen and not task.done(3.0)
    task.release(3.0)  # following again: the task resumes from 0.8 s of task time
    assert task.task_time(3.0) == pytest.approx(0.8)
    assert not task.done(4.1) and task.done(4.2 + 1e-9)


def test_peg_transfer_plan_for_the_driven_arms_only_keeps_their_targets_and_the_task_length() -> None:
    from telesurg.robot.peg_transfer import peg_transfer_plan
    from telesurg.robot.scene import default_board

    plan = peg_transfer_plan(default_board(), rings=2)
    driven = plan.only(["PSM1", "PSM2"])
    assert driven.duration == plan.duration
    for t in np.linspace(0.0, plan.duration, 37):
        full, part = plan.sample(float(t)), driven.sample(float(t))
        assert set(part) == {"PSM1", "PSM2"}
        for arm in part:
            assert np.array_equal(full[arm].position, part[arm].position)
            assert np.array_equal(full[arm].orientation, part[arm].orientation) and full[arm].jaw == part[arm].jaw
    with pytest.raises(KeyError, match="PSM3"):
        plan.only(["PSM1", "PSM3"])


def test_peg_transfer_float_sampling_is_the_array_sampling_bit_for_bit():
    """The scripted surgeon reads the peg-transfer plan on plain floats at 1 kHz; a trajectory without
    that fast path (only `sample`) must give the very same master states."""
    from telesurg.robot.peg_transfer import peg_transfer_plan
    from telesurg.robot.scene import default_board

    plan = peg_transfer_plan(default_board(), rings=1).only(["PSM1", "PSM2"])

    class ArraysOnly:  # the same plan behind the plain ToolTrajectory protocol
        duration = plan.duration

        def sample(self, t):
            return plan.sample(t)

    times = [-1.0, 0.0, *np.linspace(0.0, plan.duration, 997).tolist(), plan.duration + 5.0]
    for t in times:
        floats, arrays = plan.sample_floats(t), plan.sample(t)
        assert floats.keys() == arrays.keys()
        for name, (position, orientation, jaw) in floats.items():
            assert position == tuple(arrays[name].position) and orientation == tuple(arrays[name].orientation)
            assert jaw == arrays[name].jaw
    fast = ScriptedTaskInput(plan, 0.25, start_time=0.0, lead_in_s=0.5)
    slow = ScriptedTaskInput(ArraysOnly(), 0.25, start_time=0.0, lead_in_s=0.5)
    for t in times:
        assert fast.sample(t + 0.5) == slow.sample(t + 0.5)


def test_manual_master_handover_keys_ask_for_and_release_the_selected_arm() -> None:
    from telesurg.console.human_input import ManualMaster

    master = ManualMaster()
    master.key_down("q")
    master.key_down("tab")
    master.key_down("e")
    assert master.take_handover_actions() == [("arm_request", ArmId.PSM1), ("arm_release", ArmId.PSM2)]
    assert master.take_handover_actions() == []
