"""The MuJoCo cart: model vs kinematics, RCM, limits, CRTK states, grasp assist, stereo endoscope."""

from __future__ import annotations

import numpy as np
import pytest

from telesurg.robot.driver import Arm, Driver, OperatingState, Pose
from telesurg.robot.kinematics import ArmKinematics, quat_to_matrix
from telesurg.robot.render import StereoRenderer
from telesurg.robot.sim import SimDriver

DT = 0.001


def ready_driver(seed: int = 0) -> SimDriver:
    driver = SimDriver(seed=seed)
    for arm in driver.arms().values():
        arm.state_command("enable")
        arm.state_command("home")
    run(driver, 0.05)
    assert all(a.operating_state().is_homed for a in driver.arms().values())
    return driver


def run(driver: SimDriver, seconds: float, each_step=None) -> None:
    for _ in range(round(seconds / DT)):
        driver.step(DT)
        if each_step is not None:
            each_step()


def test_implements_the_driver_protocols():
    driver = SimDriver()
    assert isinstance(driver, Driver)
    assert set(driver.arms()) == {"PSM1", "PSM2", "ECM"}
    assert all(isinstance(arm, Arm) for arm in driver.arms().values())
    driver.step(0.001)
    driver.step(0.002)  # two MuJoCo timesteps
    assert driver.time == pytest.approx(0.003)
    with pytest.raises(ValueError, match="dt must be"):
        driver.step(0.0)
    driver.close()


def test_mujoco_chain_matches_kinematics_and_keeps_the_rcm_fixed():
    driver = ready_driver()
    model, data = driver.model, driver.data
    for name in ("PSM1", "ECM"):
        arm = driver.arms()[name]
        goal = arm.measured_js() + np.array([0.3, -0.25, 0.04, 1.0, 0.6, -0.5][: arm.kinematics.n_joints])
        arm.servo_jp(goal)
        shaft = model.body(f"{name}_shaft").id
        rcm = data.site(f"{name}_rcm").xpos.copy()
        worst_rcm_offset = 0.0

        def check_rcm(shaft=shaft, rcm=rcm):
            nonlocal worst_rcm_offset
            axis = data.xmat[shaft].reshape(3, 3)[:, 2]
            to_rcm = rcm - data.xpos[shaft]
            worst_rcm_offset = max(worst_rcm_offset, float(np.linalg.norm(to_rcm - (to_rcm @ axis) * axis)))

        run(driver, 1.5, check_rcm)
        assert worst_rcm_offset < 1e-9  # the shaft never leaves the incision point, even while moving
        np.testing.assert_allclose(arm.measured_js(), goal, atol=2e-3)
        measured = arm.measured_cp()
        np.testing.assert_allclose(data.site(f"{name}_tool_tip").xpos, measured.position, atol=1e-6)
        np.testing.assert_allclose(data.site(f"{name}_tool_tip").xmat.reshape(3, 3),
                                   quat_to_matrix(measured.orientation), atol=1e-6)


def test_joint_goals_are_clamped_and_motion_respects_velocity_limits():
    driver = ready_driver()
    arm = driver.arms()["PSM2"]
    limits = arm.config
    # beyond the limits (yaw/pitch/insertion below, roll and wrist above), retracting into free space
    beyond = np.array([limits.lower[0] - 1, limits.lower[1] - 1, limits.lower[2] - 1, 9.0, 9.0, 9.0])
    expected = np.concatenate([limits.lower[:3], limits.upper[3:]])
    arm.servo_jp(beyond)
    setpoints, velocities = [], []
    dof = np.array([driver.model.jnt_dofadr[driver.model.joint(f"PSM2_{j}").id] for j in limits.joint_names])

    def record():
        setpoints.append(arm.setpoint_js())
        velocities.append(np.abs(driver.data.qvel[dof]))

    run(driver, 3.0, record)
    setpoint_speed = np.abs(np.diff(np.array(setpoints), axis=0)) / DT
    assert np.all(setpoint_speed <= limits.max_velocity * (1 + 1e-9))
    assert np.all(np.max(velocities, axis=0) <= limits.max_velocity * 1.15)  # servo overshoot stays small
    np.testing.assert_allclose(arm.setpoint_js(), expected)
    np.testing.assert_allclose(arm.measured_js(), expected, atol=0.01)
    with pytest.raises(ValueError, match="6 finite values"):
        arm.servo_jp(np.array([np.nan] * 6))


def test_servo_cp_tracks_a_tool_pose():
    driver = ready_driver()
    arm = driver.arms()["PSM1"]
    start = arm.measured_cp()
    target = Pose(start.position + [0.01, 0.005, -0.02], np.array([0.0, 0.7071068, 0.7071068, 0.0]))
    arm.servo_cp(target)
    run(driver, 1.0)
    np.testing.assert_allclose(arm.setpoint_cp().position, target.position, atol=1e-9)
    np.testing.assert_allclose(arm.measured_cp().position, target.position, atol=3e-4)
    assert abs(float(arm.measured_cp().orientation @ target.orientation)) > 0.999


def test_move_cp_is_a_planned_move_and_measured_cv_is_the_tip_twist():
    driver = ready_driver()
    arm = driver.arms()["PSM1"]
    start = arm.measured_cp()
    target = Pose(start.position + [0.01, 0.0, -0.01], start.orientation)
    arm.move_cp(target)
    assert arm.operating_state().is_busy
    run(driver, 0.05)
    before = arm.measured_cp().position
    twist = arm.measured_cv()
    driver.step(DT)
    moved = (arm.measured_cp().position - before) / DT
    assert np.linalg.norm(twist[:3]) > 0.005  # moving, at half the velocity limits
    np.testing.assert_allclose(twist[:3], moved, atol=0.1 * np.linalg.norm(moved))
    run(driver, 1.0)
    assert not arm.operating_state().is_busy
    np.testing.assert_allclose(arm.measured_cp().position, target.position, atol=3e-4)
    assert np.linalg.norm(arm.measured_cv()) < 0.01  # at rest
    arm.state_command("disable")
    arm.move_cp(Pose(start.position))  # refused while disabled
    assert arm.ignored_commands == 1


def test_crtk_state_machine():
    driver = SimDriver()
    arm = driver.arms()["PSM1"]
    state = arm.operating_state()
    assert (state.state, state.is_homed, state.is_busy) == (OperatingState.DISABLED, False, False)
    start = arm.setpoint_js()
    arm.servo_jp(start + 0.1)  # refused while disabled
    arm.state_command("enable")
    arm.servo_jp(start + 0.1)  # refused until homed
    run(driver, 0.1)
    np.testing.assert_array_equal(arm.setpoint_js(), start)
    assert arm.ignored_commands == 2

    arm.servo_jp(start + 0.1)
    arm.state_command("home")
    assert arm.operating_state().is_busy
    run(driver, 0.05)
    state = arm.operating_state()
    assert (state.state, state.is_homed, state.is_busy) == (OperatingState.ENABLED, True, False)

    goal = start + np.array([0.2, 0.0, 0.0, 0.0, 0.0, 0.0])
    arm.move_jp(goal)
    assert arm.operating_state().is_busy
    run(driver, 0.2)
    arm.state_command("pause")  # hold mid-move; servo commands are ignored
    held = arm.setpoint_js()
    arm.servo_jp(goal)
    run(driver, 0.2)
    assert arm.operating_state().state == OperatingState.PAUSED
    np.testing.assert_array_equal(arm.setpoint_js(), held)
    arm.state_command("resume")
    arm.servo_jp(goal)
    run(driver, 0.5)
    np.testing.assert_allclose(arm.setpoint_js(), goal)
    arm.state_command("disable")
    assert arm.operating_state().state == OperatingState.DISABLED
    with pytest.raises(ValueError, match="unknown state command"):
        arm.state_command("reboot")


def test_tracking_error_latches_fault_until_disable():
    driver = ready_driver()
    arm = driver.arms()["PSM1"]
    yaw_dof = driver.model.jnt_dofadr[driver.model.joint("PSM1_yaw").id]
    driver.data.qfrc_applied[yaw_dof] = 500.0  # something shoves the arm hard
    run(driver, 0.5)
    assert arm.operating_state().state == OperatingState.FAULT
    assert "tracking error" in arm.fault_reason
    driver.data.qfrc_applied[yaw_dof] = 0.0
    arm.state_command("enable")  # refused: a fault needs an explicit disable first
    assert arm.operating_state().state == OperatingState.FAULT
    arm.state_command("disable")
    arm.state_command("enable")
    assert arm.operating_state().state == OperatingState.ENABLED


def test_stereo_endoscope_renders_two_different_views():
    driver = ready_driver()
    renderer = StereoRenderer(driver, width=320, height=180)
    try:
        left, right = renderer.render()
    finally:
        renderer.close()
    for image in (left, right):
        assert image.shape == (180, 320, 3) and image.dtype == np.uint8
        assert image.std() > 10  # a scene, not a blank frame
    assert np.mean(np.abs(left.astype(int) - right.astype(int))) > 0.5  # 5 mm baseline: parallax
    with pytest.raises(ValueError, match="1280x720"):
        StereoRenderer(driver, width=1920, height=1080)


def test_grasp_assist_needs_both_fingers_on_a_ring():
    driver = ready_driver()
    arm = driver.arms()["PSM1"]
    arm.servo_jaw(0.8)
    run(driver, 0.1)
    assert arm.measured_jaw() <= arm.config.jaw.max_velocity * 0.1 + 0.01  # jaw rate limit
    run(driver, 0.2)
    arm.servo_jaw(-0.2)  # closing on nothing, in the air
    run(driver, 0.5)
    assert driver.held["PSM1"] is None
    assert driver.contact_force("PSM1") == 0.0
    assert arm.measured_jaw() < -0.15  # nothing between the fingers
    with pytest.raises(KeyError, match="no arm named"):
        driver.contact_force("PSM9")


def test_re_enabling_a_displaced_arm_does_not_snap_back():
    driver = ready_driver()
    arm = driver.arms()["PSM2"]
    yaw_dof = driver.model.jnt_dofadr[driver.model.joint("PSM2_yaw").id]
    arm.state_command("disable")
    driver.data.qfrc_applied[yaw_dof] = 30.0  # someone pushes the arm while it is off
    run(driver, 0.3)
    displaced = arm.measured_js()
    assert abs(displaced[0] - arm.setpoint_js()[0]) > 0.03
    arm.state_command("enable")  # power on where the arm is, not where it was told to be
    driver.data.qfrc_applied[yaw_dof] = 0.0
    np.testing.assert_allclose(arm.setpoint_js(), displaced)
    run(driver, 0.2)
    assert np.abs(arm.measured_js() - displaced).max() < 0.005


def test_ik_memo_gives_the_same_joints_as_a_fresh_solve(monkeypatch):
    """`servo_cp` skips IK for a repeated (pose, roll hint): the goal must equal a fresh solve every time."""
    driver = ready_driver()
    arm = driver.arms()["PSM1"]
    kin = ArmKinematics(arm.config)  # a fresh solver, no memo
    home = arm.measured_cp()
    solves = []
    solve = arm.kinematics.inverse_floats
    monkeypatch.setattr(arm.kinematics, "inverse_floats", lambda *args: solves.append(1) or solve(*args))
    rng = np.random.default_rng(7)
    for _ in range(200):
        position = home.position + rng.normal(0, 0.01, 3)
        quat = home.orientation + rng.normal(0, 0.2, 4)
        for _repeat in range(4):  # a held pose: from the second or third call on the memo answers
            hint = arm._goal[3]
            arm.servo_cp(Pose(position, quat))
            expected = np.clip(kin.inverse(position, quat, np.array([0, 0, 0, hint, 0, 0])), kin.lower, kin.upper)
            assert arm._goal == expected.tolist()
        if rng.uniform() < 0.3:
            driver.step(DT)
    assert len(solves) <= 3 * 200  # the memo did skip solves


def test_measured_pose_follows_the_joints_through_the_fk_memo():
    driver = ready_driver()
    for arm in driver.arms().values():
        for _ in range(3):
            position, quat = arm.kinematics.forward_quat(arm.measured_js())
            measured = arm.measured_cp()
            np.testing.assert_array_equal(measured.position, position)
            np.testing.assert_array_equal(measured.orientation, quat)
            measured.position[:] = 0.0  # a caller may scribble on the arrays it got: never on the memo
            driver.data.qpos[arm._qadr] += 0.01  # joints move without a physics step
        driver.step(DT)
