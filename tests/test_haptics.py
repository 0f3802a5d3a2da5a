"""Force feedback: the passivity controller keeps a delayed position–force loop stable (and without it the
same loop oscillates), feedback fades within the watchdog on a hold, never pushes the master further than
its bound, saturates; the robot reports MuJoCo contact forces and tool-port energies."""

from __future__ import annotations

import numpy as np
import pytest

from telesurg.console.haptics.config import HapticsConfig, PassivityConfig
from telesurg.console.haptics.device import HapticDevice, HumanArm, SimulatedMaster
from telesurg.console.haptics.feedback import ForceFeedbackCore
from telesurg.console.haptics.passivity import MasterPassivityController
from telesurg.console.haptics.teleop_sim import LoopSetup, figures, run_loop
from telesurg.messages import ArmForce, ArmId, ForceFeedback, decode

HOLD_FROM_S = 2.5  # the reach ends at 1.2 s; the hold window is what must be quiet


def isolated(passivity: bool) -> HapticsConfig:
    """Only the passivity controller differs: no saturation or travel bound to hide an oscillation."""
    return HapticsConfig(enabled=True, max_force_n=10.0, max_feedback_travel_m=1.0,
                         passivity=PassivityConfig(enabled=passivity))


@pytest.mark.parametrize("delay_ms", [0, 50, 100, 150])
def test_passivity_controller_keeps_the_delayed_loop_stable_and_without_it_it_oscillates(delay_ms):
    on = figures(run_loop(LoopSetup(one_way_delay_ms=delay_ms, seed=delay_ms), isolated(True)), HOLD_FROM_S)
    assert on.speed_zero_crossings <= 2, on  # the master rests against the wall
    assert on.speed_rms_m_per_s < 0.001, on
    assert on.energy_excess_j < 0.010, on  # the observer dips by a few mJ at most (capped damper)
    assert on.peak_rendered_n < 4.0, on  # steady contact force is ~2.9 N
    if delay_ms >= 100:
        off = figures(run_loop(LoopSetup(one_way_delay_ms=delay_ms, seed=delay_ms), isolated(False)), HOLD_FROM_S)
        assert off.speed_zero_crossings >= 10, off  # sustained oscillation after contact
        assert off.speed_rms_m_per_s > 50 * on.speed_rms_m_per_s + 0.01, off
        assert off.energy_excess_j > 20 * on.energy_excess_j, off  # the channel generated energy


@pytest.mark.parametrize("delay_ms", [100, 150])
def test_product_defaults_are_stable_with_jitter_and_loss(delay_ms):
    run = figures(run_loop(LoopSetup(one_way_delay_ms=delay_ms, jitter_ms=5.0, loss=0.02, seed=7),
                           HapticsConfig(enabled=True)), HOLD_FROM_S)
    assert run.speed_zero_crossings <= 2 and run.speed_rms_m_per_s < 0.001, run
    assert run.peak_rendered_n <= HapticsConfig().max_force_n + 1e-9, run


def test_feedback_fades_to_zero_within_the_watchdog_when_force_messages_stop():
    config = HapticsConfig(enabled=True)
    trace = run_loop(LoopSetup(one_way_delay_ms=100, link_cut_at_s=3.0, seconds=3.3), config).arrays()
    t, force = trace["t"], trace["rendered_n"]
    assert force[(t > 2.9) & (t < 3.0)].min() > 1.0  # in contact before the cut
    gone = t[(t >= 3.0) & (force == 0.0)]
    assert gone.size and gone[0] - 3.0 <= config.watchdog_s  # the last message arrived before the cut
    assert np.all(force[t >= gone[0]] == 0.0)  # and stays off while nothing arrives


def test_fade_ramp_and_recovery_in_the_core():
    config = HapticsConfig(enabled=True, passivity=PassivityConfig(enabled=False))
    core = ForceFeedbackCore(config, motion_scale=0.2, arms=(ArmId.PSM1,))
    at = np.zeros(3)

    def message(t: float) -> ForceFeedback:
        return ForceFeedback(t, (ArmForce(0, (0.0, 0.0, -1.0), (1.0, 0.0, 0.0, 0.0), 0.0, 0.0),))

    core.receive(message(10.0), now=0.0)
    full = np.linalg.norm(core.tick(ArmId.PSM1, 0.010, at))
    half = np.linalg.norm(core.tick(ArmId.PSM1, config.stale_after_s + config.fade_s / 2, at))
    zero = np.linalg.norm(core.tick(ArmId.PSM1, config.stale_after_s + config.fade_s + 1e-6, at))
    assert full == pytest.approx(1.0) and half == pytest.approx(0.5, abs=0.05) and zero == 0.0
    core.receive(message(9.0), now=0.06)  # an older (reordered) message does not revive it
    assert np.linalg.norm(core.tick(ArmId.PSM1, 0.061, at)) == 0.0 and core.stale_dropped == 1
    core.receive(message(10.1), now=0.07)
    assert np.linalg.norm(core.tick(ArmId.PSM1, 0.071, at)) == pytest.approx(1.0)
    core.receive(message(0.1), now=0.08)  # 10 s older: the robot's clock stepped back, not a reordering
    assert core.stale_dropped == 1 and core.arms[ArmId.PSM1].received_at == 0.08


@pytest.mark.parametrize("delay_ms", [50, 100, 150])
def test_feedback_alone_never_pushes_the_master_beyond_its_bound(delay_ms):
    config = HapticsConfig(enabled=True, max_force_n=10.0)

    def excursion(cfg: HapticsConfig) -> float:
        """The surgeon lets go at 2.5 s while pressing: master travel from where the force began."""
        trace = run_loop(LoopSetup(one_way_delay_ms=delay_ms, release_at_s=2.5, seconds=4.0), cfg).arrays()
        anchor = trace["master_x"][np.argmax(trace["rendered_n"] > cfg.contact_threshold_n)]
        return float(anchor - trace["master_x"][trace["t"] >= 2.5].min())

    assert excursion(config) <= config.max_feedback_travel_m + 0.0005
    if delay_ms >= 100:  # without the bound the delayed force throws the released master further
        assert excursion(config.model_copy(update={"max_feedback_travel_m": 1.0})) > config.max_feedback_travel_m


def test_force_is_saturated_scaled_and_rotated_into_the_master_frame():
    config = HapticsConfig(enabled=True, force_scale=2.0, max_force_n=3.0, passivity=PassivityConfig(enabled=False))
    core = ForceFeedbackCore(config, motion_scale=0.2, arms=(ArmId.PSM2,))
    # tool frame rotated 90 degrees about z: the tool's +x is the base's +y
    quarter = (np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4))
    core.receive(ForceFeedback(1.0, (ArmForce(1, (0.5, 0.0, 0.0), quarter, 0.0, 0.0),)), now=0.0)
    np.testing.assert_allclose(core.tick(ArmId.PSM2, 0.001, np.zeros(3)), [0.0, 1.0, 0.0], atol=1e-12)
    core.receive(ForceFeedback(2.0, (ArmForce(1, (50.0, 0.0, 0.0), quarter, 0.0, 0.0),)), now=0.002)
    np.testing.assert_allclose(core.tick(ArmId.PSM2, 0.003, np.zeros(3)), [0.0, 3.0, 0.0], atol=1e-12)
    assert core.arms[ArmId.PSM2].saturated == 1


def test_passivity_controller_dissipates_exactly_the_excess():
    pc = MasterPassivityController(max_damping_ns_per_m=1e9, min_speed_m_per_s=1e-6)
    pc.receive_remote_energy(0.001)
    force, velocity, dt = np.array([2.0, 0.0, 0.0]), np.array([0.1, 0.0, 0.0]), 0.001
    for _ in range(20):  # 0.2 mJ offered per tick, 1 mJ available
        out = pc.apply(force, velocity, dt)
    assert pc.port.energy_out_j == pytest.approx(0.001)
    assert pc.observed_j >= -1e-12 and out[0] < 2.0
    assert pc.dissipated_j == pytest.approx(20 * 2.0 * 0.1 * dt - 0.001)
    pc.receive_remote_energy(0.0005)  # an older cumulative value never lowers the budget
    assert pc.remote_energy_j == 0.001


def test_config_rejects_a_fade_longer_than_the_watchdog():
    with pytest.raises(ValueError, match="watchdog"):
        HapticsConfig(stale_after_s=0.04, fade_s=0.03)


def test_simulated_master_is_a_haptic_device_and_follows_the_hand():
    master = SimulatedMaster(human=HumanArm(lambda t: np.array([0.01, 0.0, 0.0])))
    assert isinstance(master, HapticDevice)
    for k in range(2000):
        master.step(k * 0.001, 0.001)
    np.testing.assert_allclose(master.measured_cp(), [0.01, 0.0, 0.0], atol=1e-4)
    master.servo_cf(np.array([3.0, 0.0, 0.0]))  # a steady push deflects the hand spring by F/K
    for k in range(2000, 4000):
        master.step(k * 0.001, 0.001)
    assert master.measured_cp()[0] == pytest.approx(0.01 + 3.0 / 300.0, abs=2e-4)


def test_robot_reports_mujoco_contact_force_and_tool_port_energy():
    from telesurg.robot.driver import ForceSensingArm, Pose, measured_cf_of
    from telesurg.robot.force_feedback import ForceSampler
    from telesurg.robot.kinematics import quat_to_matrix
    from telesurg.robot.sim import SimDriver
    from telesurg.robot.testing import enable_and_home

    driver = enable_and_home(SimDriver(), settle_steps=60)
    psm1 = driver.arms()["PSM1"]
    assert isinstance(psm1, ForceSensingArm)
    sampler = ForceSampler(driver.arms(), ["PSM1", "PSM2"], servo_rate_hz=1000.0, force_hz=500.0)
    orientation = psm1.measured_cp().orientation
    messages, world_z = [], []
    for depth in (0.003, -0.001, -0.002):  # above the board, then pressing 1 and 2 mm into it
        psm1.servo_cp(Pose(np.array([-0.05, 0.03, depth]), orientation))
        for k in range(1000 if depth > 0 else 300):  # the arm is velocity-limited on the long first move
            driver.step(0.001)
            message = sampler.sample(k * 0.001)
            if message is not None:
                messages.append(message)
        pose = psm1.measured_cp()
        world_z.append(float((quat_to_matrix(pose.orientation) @ measured_cf_of(psm1))[2]))
    assert world_z[0] == 0.0 and 2.0 < world_z[1] < world_z[2]  # the board pushes the tool up, harder deeper
    assert len(messages) == 800  # 500 Hz from a 1 kHz loop
    last = decode(messages[-1].encode())
    assert isinstance(last, ForceFeedback) and [a.arm for a in last.arms] == [0, 1]
    assert last.arms[0].energy_to_env_j > 0.0  # the tool did work pressing into the board
    assert last.arms[1].energy_to_env_j == last.arms[1].energy_from_env_j == 0.0  # PSM2 touched nothing
    energies = [(m.arms[0].energy_from_env_j, m.arms[0].energy_to_env_j) for m in messages]
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(energies, energies[1:], strict=False))  # cumulative


def test_bridge_renders_robot_forces_on_a_simulated_handle_around_a_scripted_master():
    from telesurg.console.haptics.bridge import HapticsBridge, SimulatedHapticMaster
    from telesurg.console.inputs import ArmMasterState, HapticMaster, MasterState

    class Hand:  # the surgeon's intention: hold the handle at 1 cm
        def sample(self, now):
            return MasterState(now, {ArmId.PSM1: ArmMasterState((0.01, 0.0, 0.0))})

        def done(self, now):
            return now > 1.0

    master = SimulatedHapticMaster(Hand())
    assert isinstance(master, HapticMaster) and master.done(2.0)  # script methods pass through
    core = ForceFeedbackCore(HapticsConfig(enabled=True), motion_scale=0.2, arms=(ArmId.PSM1,))
    bridge = HapticsBridge(core, master)
    for k in range(2000):
        now = k * 0.001
        if k % 2 == 0:  # the robot: 2 N pushing the tool along -x, 500 Hz, with energy to spare for the PC
            bridge.on_message(ForceFeedback(now, (ArmForce(0, (-2.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0), 1.0, 1.0),)))
        forces = bridge.tick(now, master.sample(now))
    np.testing.assert_allclose(forces[ArmId.PSM1], [-2.0, 0.0, 0.0], atol=1e-9)
    # the hand spring (300 N/m) gives way by F/K: 6.7 mm, inside the 10 mm travel bound
    assert master.sample(2.0).arms[ArmId.PSM1].position[0] == pytest.approx(0.01 - 2.0 / 300.0, abs=3e-4)
    assert bridge.received == 1000
    report = bridge.report()
    assert report["force_messages"] == 1000 and 2.0 <= report["arms"]["PSM1"]["peak_force_n"] <= 3.0
