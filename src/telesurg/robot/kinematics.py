"""Forward and inverse kinematics of an RCM arm (PSM with a wrist, ECM without), in closed form.

Chain, rooted at the remote centre of motion (RCM) in the trocar frame T (z along the shaft when
yaw = pitch = 0): ``R = R_T · Ry(yaw) · Rx(pitch)``, insertion slides along the shaft's z, then
``Rz(roll) · Rx(wrist_pitch) · Ry(wrist_yaw)``, then ``tool_length`` along z to the tool tip.
Because yaw and pitch turn about axes through the RCM and insertion is along the shaft, the shaft
passes through the RCM for every joint vector: the incision is never pulled sideways.

The inverse is analytic: the wrist centre fixes yaw/pitch/insertion, the remaining rotation is a
Z-X-Y Euler triple. When a wrist joint must be clamped to its limit, a few fixed-point passes move
the shaft so the tip position is still reached (position matters more than orientation).
The MuJoCo model (robot/model.py) is built from the same description, and tests check both agree.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from .config import ArmConfig

UP = np.array([0.0, 0.0, 1.0])


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def quat_to_matrix(quat: np.ndarray) -> np.ndarray:
    """Rotation matrix of a (w, x, y, z) quaternion; normalises first so sloppy input is tolerated."""
    q = np.asarray(quat, dtype=float)
    norm = float(np.linalg.norm(q))
    if not math.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"orientation must be a non-zero finite quaternion (w, x, y, z), got {quat!r}")
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, q / norm)
    return mat.reshape(3, 3)


def matrix_to_quat(rot: np.ndarray) -> np.ndarray:
    """(w, x, y, z) quaternion with w >= 0 of a rotation matrix."""
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(rot, dtype=float).reshape(9))
    return quat if quat[0] >= 0.0 else -quat


def trocar_rotation(rcm: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Trocar frame: z from the RCM toward `target`, y the part of world-up orthogonal to z."""
    z = np.asarray(target, dtype=float) - rcm
    z /= np.linalg.norm(z)
    y = UP - (UP @ z) * z
    if np.linalg.norm(y) < 1e-6:  # shaft vertical: any horizontal y will do
        y = np.array([0.0, 1.0, 0.0])
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    return np.column_stack([x, y, z])


def _clamp(value: float, lower: float, upper: float) -> float:
    return lower if value < lower else upper if value > upper else value


def _wrap_near(angle: float, reference: float) -> float:
    """`angle` plus a multiple of 2π, as close as possible to `reference` (keeps roll continuous)."""
    return angle + 2.0 * math.pi * round((reference - angle) / (2.0 * math.pi))


class ArmKinematics:
    """Closed-form FK/IK for one arm described by an `ArmConfig`."""

    def __init__(self, config: ArmConfig) -> None:
        self.config = config
        self.rcm = np.array(config.rcm_position, dtype=float)
        self.trocar = trocar_rotation(self.rcm, np.array(config.trocar_target, dtype=float))
        self.trocar_axis = self.trocar[:, 2].copy()
        self.has_wrist = config.kind == "psm"
        self.tool_length = config.tool_length
        self.lower = config.lower
        self.upper = config.upper
        self.n_joints = len(config.joints)
        self._trocar_t = self.trocar.T.copy()
        self._lower, self._upper = self.lower.tolist(), self.upper.tolist()  # plain floats: cheap per call

    # -- forward ---------------------------------------------------------------------------------
    def shaft_rotation(self, yaw: float, pitch: float) -> np.ndarray:
        return self.trocar @ rot_y(yaw) @ rot_x(pitch)

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tool-tip position (m, base frame) and rotation matrix for joint vector `q`."""
        q = np.asarray(q, dtype=float)
        shaft = self.shaft_rotation(q[0], q[1])
        wrist_centre = self.rcm + q[2] * shaft[:, 2]
        rot = shaft @ rot_z(q[3])
        if self.has_wrist:
            rot = rot @ rot_x(q[4]) @ rot_y(q[5])
        return wrist_centre + self.tool_length * rot[:, 2], rot

    def forward_quat(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        position, rot = self.forward(q)
        return position, matrix_to_quat(rot)

    def shaft_line(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(wrist centre, unit shaft direction): the shaft is the line through them."""
        shaft = self.shaft_rotation(q[0], q[1])
        return self.rcm + q[2] * shaft[:, 2], shaft[:, 2].copy()

    # -- inverse ---------------------------------------------------------------------------------
    def _outer_joints(self, wrist_centre: np.ndarray) -> tuple[float, float, float]:
        offset = wrist_centre - self.rcm
        insertion = math.sqrt(float(offset @ offset))
        if insertion < 1e-9:
            return 0.0, 0.0, 0.0
        d = self._trocar_t @ (offset / insertion)  # = Ry(yaw) Rx(pitch) e_z = (sa cb, -sb, ca cb)
        pitch = math.asin(_clamp(-float(d[1]), -1.0, 1.0))
        yaw = math.atan2(float(d[0]), float(d[2]))
        return yaw, pitch, insertion

    def _inner_joints(self, shaft: np.ndarray, rot: np.ndarray, roll_hint: float) -> list[float]:
        m = (shaft.T @ rot).tolist()
        if not self.has_wrist:  # m = Rz(roll)
            return [_wrap_near(math.atan2(m[1][0], m[0][0]), roll_hint)]
        # m = Rz(a) Rx(b) Ry(c): m[2,1] = sin b, m[2,0] = -cos b sin c, m[2,2] = cos b cos c,
        # m[0,1] = -sin a cos b, m[1,1] = cos a cos b
        b = math.asin(_clamp(m[2][1], -1.0, 1.0))
        c = math.atan2(-m[2][0], m[2][2])
        a = math.atan2(-m[0][1], m[1][1])
        return [_wrap_near(a, roll_hint), b, c]

    def _outer_joints_for_tip(self, offset: np.ndarray, inner: list[float], pitch_hint: float
                              ) -> tuple[float, float, float] | None:
        """Yaw, pitch, insertion putting the tip at `rcm + offset` with fixed roll/wrist `inner`."""
        v = rot_z(inner[0]) @ rot_x(inner[1]) @ rot_y(inner[2]) @ np.array([0.0, 0.0, self.tool_length])
        distance_sq = float(offset @ offset) - v[0] ** 2 - v[1] ** 2
        if distance_sq <= 0.0:
            return None
        insertion = math.sqrt(distance_sq) - v[2]
        w = np.array([v[0], v[1], insertion + v[2]])  # tip in the shaft frame
        t = self._trocar_t @ offset  # = Ry(yaw) Rx(pitch) w
        rho, phi = math.hypot(w[1], w[2]), math.atan2(w[2], w[1])
        base = math.acos(_clamp(float(t[1]) / rho, -1.0, 1.0))  # w_y cos b - w_z sin b = t_y
        pitch = min((base - phi, -base - phi), key=lambda b: abs(math.remainder(b - pitch_hint, 2 * math.pi)))
        pitch = math.remainder(pitch, 2 * math.pi)
        rotated = rot_x(pitch) @ w
        yaw = math.atan2(t[0], t[2]) - math.atan2(rotated[0], rotated[2])
        return math.remainder(yaw, 2 * math.pi), pitch, insertion

    def inverse(self, position: np.ndarray, quat: np.ndarray, q_hint: np.ndarray | None = None) -> np.ndarray:
        """Joint vector reaching the tool pose, clamped to the joint limits.

        `q_hint` (usually the current joints) picks the roll turn nearest to it. If the pose is out
        of reach the result is the clamped solution; compare `forward(result)` with the request.
        """
        p = np.asarray(position, dtype=float)
        rot = quat_to_matrix(quat)
        roll_hint = 0.0 if q_hint is None else float(q_hint[3])
        yaw, pitch, insertion = self._outer_joints(p - self.tool_length * rot[:, 2])
        inner = self._inner_joints(self.shaft_rotation(yaw, pitch), rot, roll_hint)
        clamped_inner = [_clamp(v, lo, hi) for v, lo, hi in zip(inner, self._lower[3:], self._upper[3:], strict=True)]
        if self.has_wrist and clamped_inner != inner:
            outer = self._outer_joints_for_tip(p - self.rcm, clamped_inner, pitch)
            if outer is not None:  # wrist at its limit: re-aim the shaft so the tip still lands on p
                yaw, pitch, insertion = outer
        q = [yaw, pitch, insertion, *clamped_inner]
        return np.array([_clamp(v, lo, hi) for v, lo, hi in zip(q, self._lower, self._upper, strict=True)])
