"""Small vector and quaternion helpers for the safety supervisor, on plain tuples.

The supervisor runs at 1 kHz for every arm inside the servo loop; numpy's per-call overhead on
3- and 4-element arrays costs more than the arithmetic, and every microsecond spent holding the GIL
is taken from the link thread. So these few operations are written with `math` on tuples.
Quaternions are (w, x, y, z) unit quaternions, as in `messages.ServoCommand` and MuJoCo.
"""

from __future__ import annotations

import math

Vec3 = tuple[float, float, float]
Quat = tuple[float, float, float, float]


def distance(a: Vec3, b: Vec3) -> float:
    return math.sqrt((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 + (a[2] - b[2]) ** 2)


def step_toward(current: Vec3, target: Vec3, max_step: float) -> Vec3:
    """Move from `current` toward `target` by at most `max_step` metres along the straight line."""
    d = distance(current, target)
    if d <= max_step:
        return target
    f = max_step / d
    return (current[0] + (target[0] - current[0]) * f,
            current[1] + (target[1] - current[1]) * f,
            current[2] + (target[2] - current[2]) * f)


def quat_norm(q: Quat) -> float:
    return math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])


def normalize(q: Quat) -> Quat:
    n = quat_norm(q)
    return (q[0] / n, q[1] / n, q[2] / n, q[3] / n)


def quat_angle(a: Quat, b: Quat) -> float:
    """Rotation angle (radians, 0..pi) between two unit quaternions; q and -q are the same rotation."""
    dot = abs(a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3])
    return 2.0 * math.acos(min(1.0, dot))


def rotate_toward(current: Quat, target: Quat, max_angle: float) -> Quat:
    """Slerp from `current` toward `target` by at most `max_angle` radians of rotation."""
    angle = quat_angle(current, target)
    if angle <= max_angle:
        return target
    dot = current[0] * target[0] + current[1] * target[1] + current[2] * target[2] + current[3] * target[3]
    if dot < 0.0:  # take the short way round
        target = (-target[0], -target[1], -target[2], -target[3])
        dot = -dot
    half = angle / 2.0  # angle between the 4-vectors
    t = max_angle / angle
    s = math.sin(half)
    wa = math.sin((1.0 - t) * half) / s
    wb = math.sin(t * half) / s
    return normalize((wa * current[0] + wb * target[0], wa * current[1] + wb * target[1],
                      wa * current[2] + wb * target[2], wa * current[3] + wb * target[3]))


def box_excess(p: Vec3, low: Vec3, high: Vec3) -> float:
    """Distance (metres) from `p` to the axis-aligned box [low, high]; 0 when inside."""
    dx = max(low[0] - p[0], 0.0, p[0] - high[0])
    dy = max(low[1] - p[1], 0.0, p[1] - high[1])
    dz = max(low[2] - p[2], 0.0, p[2] - high[2])
    return math.sqrt(dx * dx + dy * dy + dz * dz)
