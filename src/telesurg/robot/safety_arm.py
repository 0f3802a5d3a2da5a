"""One arm as the safety supervisor sees it, and the capped step that moves its setpoint each period.

Split from the state machine (robot/supervisor.py), which decides *whether* an arm may move;
`step_setpoint` decides *how far* it moves in one servo period (step, rotation and jaw caps) and
re-checks its own result, caps and workspace, independently of the arithmetic that produced it.
Plain float tuples throughout, for the cost reasons given in safety_geometry.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from telesurg.robot.driver import Pose
from telesurg.robot.safety_config import SupervisorConfig
from telesurg.robot.safety_geometry import (
    Quat,
    Vec3,
    box_excess,
    distance,
    quat_angle,
    rotate_toward,
    step_toward,
)
from telesurg.robot.safety_types import HandoverRecord, HoldRecord, Setpoint, SupervisorState

_EPS = 1e-9


@dataclass(slots=True)
class SupervisedArm:
    """Everything the supervisor keeps per arm: state, control, ordering gates, timers and poses."""

    name: str
    state: SupervisorState = SupervisorState.DISABLED
    controller: str | None = None
    released_by: str | None = None  # the owner before an owner-less spell (a release), for the record
    local_lock: bool = False  # taken over by the local console: network assignment refused
    seen_seq: dict[str, int] = field(default_factory=dict)  # newest cmd_seq per sender (ordering gate)
    applied_seq: dict[str, int] = field(default_factory=dict)  # newest applied, independent check
    last_applied_seq: int = 0
    last_valid_t: float | None = None  # last applied command (watchdog)
    last_heard_t: float | None = None  # last fresh, ordered command from the controller (fault time)
    setpoint_pos: Vec3 | None = None
    setpoint_quat: Quat = (1.0, 0.0, 0.0, 0.0)
    setpoint_jaw: float = 0.0
    target_pos: Vec3 | None = None
    target_quat: Quat = (1.0, 0.0, 0.0, 0.0)
    target_jaw: float = 0.0
    last_tick_t: float | None = None
    open_hold: HoldRecord | None = None
    open_handover: HandoverRecord | None = None  # until the new owner's first applied command
    measured_pos: Vec3 | None = None  # the tool where it really is, kept while READY/HOLD for alignment
    measured_quat: Quat = (1.0, 0.0, 0.0, 0.0)


def step_setpoint(a: SupervisedArm, cfg: SupervisorConfig, dt: float,
                  violation: Callable[[str], None]) -> Setpoint:
    """Move the setpoint one capped step toward the target and re-check the result independently;
    each failed re-check is reported through `violation`."""
    assert a.setpoint_pos is not None
    prev_pos, prev_quat, prev_jaw = a.setpoint_pos, a.setpoint_quat, a.setpoint_jaw
    step_cap = cfg.step_limit_m(dt)
    rot_cap = cfg.rotation_limit_rad(dt)
    jaw_cap = cfg.jaw_limit_rad(dt)
    if a.target_pos is not None:
        a.setpoint_pos = step_toward(prev_pos, a.target_pos, step_cap)
        a.setpoint_quat = rotate_toward(prev_quat, a.target_quat, rot_cap)
        a.setpoint_jaw = prev_jaw + min(max(a.target_jaw - prev_jaw, -jaw_cap), jaw_cap)
    box = cfg.workspace_for(a.name)
    if distance(prev_pos, a.setpoint_pos) > step_cap * (1 + 1e-6) + _EPS:
        violation(f"{a.name} step {distance(prev_pos, a.setpoint_pos):.3g} m > cap {step_cap:.3g}")
    if quat_angle(prev_quat, a.setpoint_quat) > rot_cap * (1 + 1e-6) + 1e-7:
        violation(f"{a.name} rotation step above cap")
    if abs(a.setpoint_jaw - prev_jaw) > jaw_cap * (1 + 1e-6) + _EPS:
        violation(f"{a.name} jaw step above cap")
    # inside the box the excess is 0 and this check cannot fail: skip the arithmetic then
    if not box.contains(a.setpoint_pos) and \
            box_excess(a.setpoint_pos, box.low, box.high) > box_excess(prev_pos, box.low, box.high) + _EPS:
        violation(f"{a.name} setpoint moved outside the workspace")
    return Setpoint(Pose(np.array(a.setpoint_pos), np.array(a.setpoint_quat)), a.setpoint_jaw)


def as_vec3(v: np.ndarray | Iterable[float]) -> Vec3:
    """A measured position (numpy or sequence) as the plain float tuple the record keeps."""
    x, y, z = v.tolist() if isinstance(v, np.ndarray) else v  # type: ignore[misc]
    return (float(x), float(y), float(z))


def as_quat(q: np.ndarray | Iterable[float]) -> Quat:
    """A measured orientation (w, x, y, z) as a plain float tuple (not normalised here)."""
    w, x, y, z = q.tolist() if isinstance(q, np.ndarray) else q  # type: ignore[misc]
    return (float(w), float(x), float(y), float(z))
