"""Unit-quaternion helpers (w, x, y, z) on plain float tuples for the 1 kHz path.

scipy's `Rotation` is the reference (the tests check these against it) but costs ~30–45 µs per
operation on this machine; the console does a few per arm per 1 ms tick, so plain floats it is.
"""

from __future__ import annotations

import math

Quat = tuple[float, float, float, float]
Vec3 = tuple[float, float, float]

IDENTITY: Quat = (1.0, 0.0, 0.0, 0.0)


def normalize(q: Quat) -> Quat:
    n = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    if not n > 1e-12:
        raise ValueError("quaternion has zero norm")
    return (q[0] / n, q[1] / n, q[2] / n, q[3] / n)


def multiply(a: Quat, b: Quat) -> Quat:
    """Rotation `a` after rotation `b` (Hamilton product a ⊗ b)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return (aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw)


def conjugate(q: Quat) -> Quat:
    return (q[0], -q[1], -q[2], -q[3])


def rotate(q: Quat, v: Vec3) -> Vec3:
    """Apply rotation `q` to vector `v`."""
    w, x, y, z = q
    # v + 2 w (u × v) + 2 u × (u × v), u = (x, y, z)
    cx = y * v[2] - z * v[1]
    cy = z * v[0] - x * v[2]
    cz = x * v[1] - y * v[0]
    return (v[0] + 2 * (w * cx + y * cz - z * cy),
            v[1] + 2 * (w * cy + z * cx - x * cz),
            v[2] + 2 * (w * cz + x * cy - y * cx))


def angle_between(a: Quat, b: Quat) -> float:
    """Smallest rotation angle (radians) taking orientation `a` to `b`; q and −q are the same rotation."""
    d = multiply(conjugate(a), b)  # atan2 keeps precision near 0, where acos(dot) loses half the digits
    return 2.0 * math.atan2(math.sqrt(d[1] * d[1] + d[2] * d[2] + d[3] * d[3]), abs(d[0]))


def nlerp(a: Quat, b: Quat, s: float) -> Quat:
    """Normalised linear interpolation on the short arc (fine for the small steps of a trajectory file)."""
    if a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3] < 0:
        b = (-b[0], -b[1], -b[2], -b[3])
    return normalize(tuple(ai + s * (bi - ai) for ai, bi in zip(a, b, strict=True)))  # type: ignore[arg-type]


def from_axis_angle(axis: Vec3, angle: float) -> Quat:
    n = math.sqrt(axis[0] ** 2 + axis[1] ** 2 + axis[2] ** 2)
    s = math.sin(angle / 2) / n
    return (math.cos(angle / 2), axis[0] * s, axis[1] * s, axis[2] * s)
