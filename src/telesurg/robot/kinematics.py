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

Both directions run for every arm in every 1 kHz servo period, so the hot paths (`forward*`,
`inverse`, `shaft_line`) work on plain floats and row-major 9-tuples: numpy's per-call overhead on
3x3 matrices and 3-vectors cost several times the arithmetic (FK ~25 -> ~6 µs, IK ~40 -> ~10 µs
here). They follow MuJoCo's `mju_quat2Mat`/`mju_mat2Quat` formulas, and the tests check them
against the numpy/MuJoCo versions to ~1e-15.
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


Rows = tuple[float, float, float, float, float, float, float, float, float]  # 3x3, row-major


def quat_rows(w: float, x: float, y: float, z: float) -> Rows:
    """Rotation matrix (row-major 9-tuple) of a unit quaternion, as MuJoCo's `mju_quat2Mat`."""
    if w == 1.0 and x == 0.0 and y == 0.0 and z == 0.0:
        return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    q00, q01, q02, q03 = w * w, w * x, w * y, w * z
    q11, q12, q13, q22, q23, q33 = x * x, x * y, x * z, y * y, y * z, z * z
    return (q00 + q11 - q22 - q33, 2 * (q12 - q03), 2 * (q13 + q02),
            2 * (q12 + q03), q00 - q11 + q22 - q33, 2 * (q23 - q01),
            2 * (q13 - q02), 2 * (q23 + q01), q00 - q11 - q22 + q33)


def rows_quat(m: Rows) -> tuple[float, float, float, float]:
    """(w, x, y, z) with w >= 0 of a rotation matrix, as `matrix_to_quat` (MuJoCo's `mju_mat2Quat`)."""
    if m[0] + m[4] + m[8] > 0.0:
        w = 0.5 * math.sqrt(1.0 + m[0] + m[4] + m[8])
        x, y, z = 0.25 * (m[7] - m[5]) / w, 0.25 * (m[2] - m[6]) / w, 0.25 * (m[3] - m[1]) / w
    elif m[0] > m[4] and m[0] > m[8]:
        x = 0.5 * math.sqrt(1.0 + m[0] - m[4] - m[8])
        w, y, z = 0.25 * (m[7] - m[5]) / x, 0.25 * (m[1] + m[3]) / x, 0.25 * (m[2] + m[6]) / x
    elif m[4] > m[8]:
        y = 0.5 * math.sqrt(1.0 - m[0] + m[4] - m[8])
        w, x, z = 0.25 * (m[2] - m[6]) / y, 0.25 * (m[1] + m[3]) / y, 0.25 * (m[5] + m[7]) / y
    else:
        z = 0.5 * math.sqrt(1.0 - m[0] - m[4] + m[8])
        w, x, y = 0.25 * (m[3] - m[1]) / z, 0.25 * (m[2] + m[6]) / z, 0.25 * (m[5] + m[7]) / z
    norm = math.sqrt(w * w + x * x + y * y + z * z)
    if norm < 1e-15:
        w, x, y, z = 1.0, 0.0, 0.0, 0.0
    elif abs(norm - 1.0) > 1e-15:
        inv = 1.0 / norm
        w, x, y, z = w * inv, x * inv, y * inv, z * inv
    return (w, x, y, z) if w >= 0.0 else (-w, -x, -y, -z)


def _mul(a: Rows, b: Rows) -> Rows:
    """Product of two row-major 3x3 matrices."""
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = a
    b0, b1, b2, b3, b4, b5, b6, b7, b8 = b
    return (a0 * b0 + a1 * b3 + a2 * b6, a0 * b1 + a1 * b4 + a2 * b7, a0 * b2 + a1 * b5 + a2 * b8,
            a3 * b0 + a4 * b3 + a5 * b6, a3 * b1 + a4 * b4 + a5 * b7, a3 * b2 + a4 * b5 + a5 * b8,
            a6 * b0 + a7 * b3 + a8 * b6, a6 * b1 + a7 * b4 + a8 * b7, a6 * b2 + a7 * b5 + a8 * b8)


def _inner_rows(roll: float, wrist_pitch: float, wrist_yaw: float) -> Rows:
    """Rz(roll) Rx(wrist_pitch) Ry(wrist_yaw), expanded."""
    ca, sa = math.cos(roll), math.sin(roll)
    cb, sb = math.cos(wrist_pitch), math.sin(wrist_pitch)
    cc, sc = math.cos(wrist_yaw), math.sin(wrist_yaw)
    return (ca * cc - sa * sb * sc, -sa * cb, ca * sc + sa * sb * cc,
            sa * cc + ca * sb * sc, ca * cb, sa * sc - ca * sb * cc,
            -cb * sc, sb, cb * cc)


def float_list(values: object, n: int) -> list[float]:
    """`values` (ndarray, tuple or list) as n Python floats; ValueError on another length."""
    out = values.tolist() if isinstance(values, np.ndarray) and values.ndim == 1 else [float(v) for v in values]  # type: ignore[attr-defined]
    if len(out) != n:
        raise ValueError(f"expected {n} values, got {len(out)}")
    return out


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
        self._lower_inner, self._upper_inner = self._lower[3:], self._upper[3:]
        self._t: Rows = tuple(self.trocar.ravel().tolist())  # type: ignore[assignment]
        self._rcm: tuple[float, float, float] = tuple(self.rcm.tolist())  # type: ignore[assignment]

    # -- forward ---------------------------------------------------------------------------------
    def _shaft(self, yaw: float, pitch: float) -> Rows:
        """trocar · Ry(yaw) · Rx(pitch), with Ry·Rx expanded."""
        cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
        return _mul(self._t, (cy, sy * sp, sy * cp, 0.0, cp, -sp, -sy, cy * sp, cy * cp))

    def shaft_rotation(self, yaw: float, pitch: float) -> np.ndarray:
        return np.array(self._shaft(float(yaw), float(pitch))).reshape(3, 3)

    def forward_rows(self, q: list[float]) -> tuple[tuple[float, float, float], Rows]:
        """Tool-tip position and row-major rotation for joint floats `q` (the allocation-free core)."""
        shaft = self._shaft(q[0], q[1])
        rot = _mul(shaft, _inner_rows(q[3], q[4], q[5]) if self.has_wrist else _inner_rows(q[3], 0.0, 0.0))
        ins, length, rcm = q[2], self.tool_length, self._rcm
        return ((rcm[0] + ins * shaft[2] + length * rot[2], rcm[1] + ins * shaft[5] + length * rot[5],
                 rcm[2] + ins * shaft[8] + length * rot[8]), rot)

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tool-tip position (m, base frame) and rotation matrix for joint vector `q`."""
        position, rot = self.forward_rows(float_list(q, self.n_joints))
        return np.array(position), np.array(rot).reshape(3, 3)

    def forward_quat(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        position, rot = self.forward_rows(float_list(q, self.n_joints))
        return np.array(position), np.array(rows_quat(rot))

    def twist(self, q: np.ndarray, qdot: np.ndarray, h: float = 1e-6) -> np.ndarray:
        """Tool-tip twist (vx, vy, vz, wx, wy, wz) in the base frame, m/s and rad/s, for joint
        velocities `qdot`: J(q)·qdot as a central difference of the closed-form FK along `qdot`
        (no Jacobian to keep in step with the chain; exact to ~1e-9 at these scales)."""
        q, qdot = np.asarray(q, dtype=float), np.asarray(qdot, dtype=float)
        p_plus, r_plus = self.forward(q + h * qdot)
        p_minus, r_minus = self.forward(q - h * qdot)
        spin = (r_plus - r_minus) / (2.0 * h) @ self.forward(q)[1].T  # = [w]x, skew-symmetric
        return np.concatenate([(p_plus - p_minus) / (2.0 * h), [spin[2, 1], spin[0, 2], spin[1, 0]]])

    def shaft_line(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(wrist centre, unit shaft direction): the shaft is the line through them."""
        shaft = self._shaft(float(q[0]), float(q[1]))
        ins, rcm = float(q[2]), self._rcm
        axis = (shaft[2], shaft[5], shaft[8])
        return np.array([rcm[0] + ins * axis[0], rcm[1] + ins * axis[1], rcm[2] + ins * axis[2]]), np.array(axis)

    # -- inverse ---------------------------------------------------------------------------------
    def _outer_joints(self, ox: float, oy: float, oz: float) -> tuple[float, float, float]:
        """Yaw, pitch, insertion putting the wrist centre at `rcm + (ox, oy, oz)`."""
        insertion = math.sqrt(ox * ox + oy * oy + oz * oz)
        if insertion < 1e-9:
            return 0.0, 0.0, 0.0
        ux, uy, uz = ox / insertion, oy / insertion, oz / insertion
        t = self._t  # d = trocarᵀ u = Ry(yaw) Rx(pitch) e_z = (sa cb, -sb, ca cb)
        d0 = t[0] * ux + t[3] * uy + t[6] * uz
        d1 = t[1] * ux + t[4] * uy + t[7] * uz
        d2 = t[2] * ux + t[5] * uy + t[8] * uz
        return math.atan2(d0, d2), math.asin(_clamp(-d1, -1.0, 1.0)), insertion

    def _inner_joints(self, shaft: Rows, rot: Rows, roll_hint: float) -> list[float]:
        s0, s1, s2, s3, s4, s5, s6, s7, s8 = shaft  # m = shaftᵀ rot, only the entries used
        r0, r1, r2, r3, r4, r5, r6, r7, r8 = rot
        if not self.has_wrist:  # m = Rz(roll)
            return [_wrap_near(math.atan2(s1 * r0 + s4 * r3 + s7 * r6, s0 * r0 + s3 * r3 + s6 * r6), roll_hint)]
        # m = Rz(a) Rx(b) Ry(c): m[2,1] = sin b, m[2,0] = -cos b sin c, m[2,2] = cos b cos c,
        # m[0,1] = -sin a cos b, m[1,1] = cos a cos b
        b = math.asin(_clamp(s2 * r1 + s5 * r4 + s8 * r7, -1.0, 1.0))
        c = math.atan2(-(s2 * r0 + s5 * r3 + s8 * r6), s2 * r2 + s5 * r5 + s8 * r8)
        a = math.atan2(-(s0 * r1 + s3 * r4 + s6 * r7), s1 * r1 + s4 * r4 + s7 * r7)
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

    def inverse_floats(self, position: list[float], quat: list[float], roll_hint: float) -> list[float]:
        """`inverse` on plain floats (3 + 4 values, the roll hint), returning joint floats."""
        px, py, pz = position
        w, x, y, z = quat
        norm = math.sqrt(w * w + x * x + y * y + z * z)
        if not math.isfinite(norm) or norm < 1e-9:
            raise ValueError(f"orientation must be a non-zero finite quaternion (w, x, y, z), got {quat!r}")
        rot = quat_rows(w / norm, x / norm, y / norm, z / norm)
        length, rcm = self.tool_length, self._rcm
        yaw, pitch, insertion = self._outer_joints(px - length * rot[2] - rcm[0], py - length * rot[5] - rcm[1],
                                                   pz - length * rot[8] - rcm[2])
        inner = self._inner_joints(self._shaft(yaw, pitch), rot, roll_hint)
        lower, upper = self._lower, self._upper
        clamped_inner = [_clamp(v, lo, hi) for v, lo, hi in zip(inner, self._lower_inner, self._upper_inner, strict=True)]
        if self.has_wrist and clamped_inner != inner:
            outer = self._outer_joints_for_tip(np.array([px - rcm[0], py - rcm[1], pz - rcm[2]]), clamped_inner,
                                               pitch)
            if outer is not None:  # wrist at its limit: re-aim the shaft so the tip still lands on p
                yaw, pitch, insertion = outer
        q = [yaw, pitch, insertion, *clamped_inner]
        return [_clamp(v, lo, hi) for v, lo, hi in zip(q, lower, upper, strict=True)]

    def inverse(self, position: np.ndarray, quat: np.ndarray, q_hint: np.ndarray | None = None) -> np.ndarray:
        """Joint vector reaching the tool pose, clamped to the joint limits.

        `q_hint` (usually the current joints) picks the roll turn nearest to it. If the pose is out
        of reach the result is the clamped solution; compare `forward(result)` with the request.
        """
        roll_hint = 0.0 if q_hint is None else float(q_hint[3])
        return np.array(self.inverse_floats(float_list(position, 3), float_list(quat, 4), roll_hint))
