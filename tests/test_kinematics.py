"""Closed-form RCM kinematics: FK/IK round trips, the RCM constraint, limits, and config validation."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from telesurg.robot.config import ArmConfig, CartConfig, JointLimit, Workspace, default_arms
from telesurg.robot.kinematics import (
    ArmKinematics,
    matrix_to_quat,
    quat_rows,
    quat_to_matrix,
    rot_x,
    rot_y,
    rot_z,
    rows_quat,
)

ARMS = {arm.name: arm for arm in default_arms()}
KINEMATICS = {name: ArmKinematics(arm) for name, arm in ARMS.items()}


def joint_vectors(arm: str, margin: float = 0.05):
    """Joint vectors inside the limits (a small margin keeps the wrist off its gimbal edge)."""
    config = ARMS[arm]
    return st.tuples(*[st.floats(j.lower + margin * (j.upper - j.lower), j.upper - margin * (j.upper - j.lower))
                       for j in config.joints]).map(np.array)


def rotation_angle(r1: np.ndarray, r2: np.ndarray) -> float:
    return math.acos(float(np.clip((np.trace(r1.T @ r2) - 1.0) / 2.0, -1.0, 1.0)))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["PSM1", "PSM2"]).flatmap(lambda name: st.tuples(st.just(name), joint_vectors(name))))
def test_psm_fk_ik_round_trip(case):
    name, q = case
    kin = KINEMATICS[name]
    position, quat = kin.forward_quat(q)
    q_back = kin.inverse(position, quat, q_hint=q)
    np.testing.assert_allclose(q_back, q, atol=1e-9)
    position_back, rot_back = kin.forward(q_back)
    np.testing.assert_allclose(position_back, position, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(joint_vectors("ECM"))
def test_ecm_fk_ik_round_trip(q):
    kin = KINEMATICS["ECM"]
    position, quat = kin.forward_quat(q)
    np.testing.assert_allclose(kin.inverse(position, quat, q_hint=q), q, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(joint_vectors("PSM1", margin=0.0))
def test_shaft_always_passes_through_the_rcm(q):
    kin = KINEMATICS["PSM1"]
    wrist, direction = kin.shaft_line(q)
    to_rcm = kin.rcm - wrist
    off_axis = to_rcm - (to_rcm @ direction) * direction
    assert np.linalg.norm(off_axis) < 1e-12
    assert to_rcm @ direction == pytest.approx(-q[2])  # the RCM sits `insertion` behind the wrist


@settings(max_examples=100, deadline=None)
@given(st.tuples(st.floats(-0.2, 0.2), st.floats(-0.2, 0.2), st.floats(-0.1, 0.2)).map(np.array),
       st.tuples(*[st.floats(-1, 1)] * 4).filter(lambda v: np.linalg.norm(v) > 0.1).map(np.array))
def test_ik_of_any_pose_stays_within_joint_limits(position, quat):
    kin = KINEMATICS["PSM2"]
    q = kin.inverse(position, quat)
    assert np.all(q >= kin.lower) and np.all(q <= kin.upper)
    assert np.all(np.isfinite(kin.forward(q)[0]))


def test_clamped_wrist_still_reaches_the_position():
    """Pointing the jaw back up at the RCM is beyond the wrist; the tip position is kept anyway."""
    kin = KINEMATICS["PSM1"]
    target = np.array([-0.04, -0.01, 0.02])
    shaft_dir = (target - kin.rcm) / np.linalg.norm(target - kin.rcm)
    x = np.cross(shaft_dir, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    backwards = np.column_stack([x, np.cross(-shaft_dir, x), -shaft_dir])  # tool z back along the shaft
    q = kin.inverse(target, matrix_to_quat(backwards))
    assert abs(q[4]) == pytest.approx(1.4) or abs(q[5]) == pytest.approx(1.4)
    np.testing.assert_allclose(kin.forward(q)[0], target, atol=2e-4)


def test_quaternion_helpers_round_trip_and_reject_zero():
    quat = np.array([0.5, 0.5, -0.5, 0.5])
    np.testing.assert_allclose(matrix_to_quat(quat_to_matrix(quat)), quat, atol=1e-12)
    with pytest.raises(ValueError, match="quaternion"):
        quat_to_matrix(np.zeros(4))


def test_config_errors_name_the_field():
    with pytest.raises(ValidationError, match=r"joints\.2[\s\S]*must be greater than lower"):
        CartConfig.model_validate({"arms": [{**ARMS["PSM1"].model_dump(), "joints": [
            *[j.model_dump() for j in ARMS["PSM1"].joints[:2]], {"lower": 0.3, "upper": 0.1, "max_velocity": 1},
            *[j.model_dump() for j in ARMS["PSM1"].joints[3:]]]}]})
    with pytest.raises(ValidationError, match="home.2"):
        ArmConfig(**{**ARMS["PSM1"].model_dump(), "home": [0, 0, 0.5, 0, 0, 0]})
    with pytest.raises(ValidationError, match="max_velocity"):
        JointLimit(lower=0, upper=1, max_velocity=0)
    with pytest.raises(ValidationError, match="box_min.z"):
        Workspace(box_min=(0, 0, 0.2), box_max=(1, 1, 0.1))
    with pytest.raises(ValidationError, match="names must be unique"):
        CartConfig(arms=[ARMS["PSM1"], ARMS["PSM1"]])


def test_workspace_box_and_cone():
    kin = KINEMATICS["PSM1"]
    assert ARMS["PSM1"].workspace.contains(kin.rcm + 0.12 * kin.trocar_axis, kin.rcm, kin.trocar_axis)
    assert not ARMS["PSM1"].workspace.contains(kin.rcm + 0.12 * kin.trocar_axis + [0, 0, 0.5], kin.rcm,
                                               kin.trocar_axis)  # above the box
    cone = Workspace(box_min=(-1, -1, -1), box_max=(1, 1, 1), cone_half_angle=math.radians(30))
    axis, rcm = np.array([0.0, 0.0, -1.0]), np.zeros(3)
    for degrees, inside in ((20, True), (29, True), (31, False), (80, False)):
        a = math.radians(degrees)
        assert cone.contains(0.1 * np.array([math.sin(a), 0.0, -math.cos(a)]), rcm, axis) is inside
    assert not cone.contains(rcm, rcm, axis)
    np.testing.assert_allclose(ARMS["PSM1"].workspace.clamp_box([1.0, -1.0, 0.05]), [0.09, -0.07, 0.05])


@settings(max_examples=200, deadline=None)
@given(joint_vectors("PSM1", margin=0.2),
       st.tuples(*[st.floats(-1, 1)] * 4).filter(lambda v: np.linalg.norm(v) > 0.1).map(np.array))
def test_reachable_tip_position_is_kept_for_any_orientation(q, quat):
    """Position has priority: with the wrist clamped, the shaft re-aims so the tip still arrives."""
    kin = KINEMATICS["PSM1"]
    target = kin.forward(q)[0]
    q_ik = kin.inverse(target, quat, q_hint=q)
    outer_at_limit = np.any(np.isclose(q_ik[:3], kin.lower[:3]) | np.isclose(q_ik[:3], kin.upper[:3]))
    if not outer_at_limit:
        np.testing.assert_allclose(kin.forward(q_ik)[0], target, atol=1e-9)


# -- the float fast paths agree with the numpy / MuJoCo reference -------------------------------------
def _reference_forward(kin: ArmKinematics, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The chain of the module docstring with numpy matrices, as the code computed it before."""
    shaft = kin.trocar @ rot_y(q[0]) @ rot_x(q[1])
    rot = shaft @ rot_z(q[3])
    if kin.has_wrist:
        rot = rot @ rot_x(q[4]) @ rot_y(q[5])
    return kin.rcm + q[2] * shaft[:, 2] + kin.tool_length * rot[:, 2], rot


def test_float_rotation_helpers_match_mujoco():
    rng = np.random.default_rng(3)
    for _ in range(2000):
        quat = rng.normal(size=4)
        quat /= np.linalg.norm(quat)
        mat = np.zeros(9)
        mujoco.mju_quat2Mat(mat, quat)
        np.testing.assert_allclose(quat_rows(*quat), mat, atol=1e-15)
        np.testing.assert_allclose(rows_quat(tuple(mat)), matrix_to_quat(mat), atol=1e-15)


@pytest.mark.parametrize("name", sorted(ARMS))
def test_forward_matches_the_numpy_chain(name):
    kin, config = KINEMATICS[name], ARMS[name]
    rng = np.random.default_rng(4)
    for _ in range(300):
        q = config.lower + rng.uniform(0, 1, config.lower.size) * (config.upper - config.lower)
        position, rot = kin.forward(q)
        ref_position, ref_rot = _reference_forward(kin, q)
        np.testing.assert_allclose(position, ref_position, atol=1e-14)
        np.testing.assert_allclose(rot, ref_rot, atol=1e-14)
        np.testing.assert_allclose(kin.forward_quat(q)[1], matrix_to_quat(ref_rot), atol=1e-14)
        np.testing.assert_allclose(kin.shaft_rotation(q[0], q[1]), kin.trocar @ rot_y(q[0]) @ rot_x(q[1]),
                                   atol=1e-15)


@pytest.mark.parametrize("name", sorted(ARMS))
def test_inverse_on_floats_equals_the_array_api(name):
    kin = KINEMATICS[name]
    rng = np.random.default_rng(5)
    for _ in range(300):
        position, quat, hint = rng.uniform(-0.1, 0.1, 3), rng.normal(size=4), rng.uniform(-4, 4, kin.n_joints)
        expected = kin.inverse(position, quat, hint)
        assert kin.inverse_floats(position.tolist(), quat.tolist(), float(hint[3])) == expected.tolist()
        assert np.all(expected >= kin.lower) and np.all(expected <= kin.upper)


def test_twist_of_insertion_and_roll_is_along_the_shaft():
    kin = ArmKinematics(CartConfig().arm("PSM1"))
    q = np.array([0.2, -0.1, 0.1, 0.3, 0.0, 0.0])  # wrist straight: the tip lies on the shaft axis
    _, axis = kin.shaft_line(q)
    insertion = kin.twist(q, np.array([0.0, 0.0, 0.05, 0.0, 0.0, 0.0]))
    np.testing.assert_allclose(insertion, np.concatenate([0.05 * axis, np.zeros(3)]), atol=1e-8)
    roll = kin.twist(q, np.array([0.0, 0.0, 0.0, 2.0, 0.0, 0.0]))
    np.testing.assert_allclose(roll, np.concatenate([np.zeros(3), 2.0 * axis]), atol=1e-7)
    qdot = np.array([0.3, -0.2, 0.01, 0.5, 0.4, -0.6])
    dt = 1e-7
    p0, r0 = kin.forward(q)
    p1, r1 = kin.forward(q + dt * qdot)
    twist = kin.twist(q, qdot)
    np.testing.assert_allclose(twist[:3], (p1 - p0) / dt, atol=1e-5)
    spin = (r1 - r0) / dt @ r0.T
    np.testing.assert_allclose(twist[3:], [spin[2, 1], spin[0, 2], spin[1, 0]], atol=1e-5)
