"""`SimArm`: one arm of the simulated cart, a MuJoCo position-servoed joint chain behind `driver.Arm`.

Each arm tracks a joint setpoint with MuJoCo position servos. Commands (`servo_*`, `move_*`) only
set a goal; every `advance` moves the setpoint toward it no faster than the configured joint velocity
limits (all joints scaled together, so a straight tool path stays straight), exactly what a real
controller would do with an unsafe request. Joint goals are clamped to the joint limits.

CRTK state machine per arm: DISABLED --enable/home--> ENABLED <--pause/resume--> PAUSED; any state
--disable--> DISABLED; a tracking error held too long latches FAULT, cleared only by "disable".
Servo commands are applied only when ENABLED and homed, else counted in `ignored_commands`.
In DISABLED/PAUSED/FAULT the simulated arm holds its last setpoint (brakes).

Cost: `advance` and the `servo_*` calls run for every arm in every 1 kHz servo period, so their state
(setpoint, goal, limits) is kept as plain float lists and MuJoCo arrays are addressed by slices
found once: numpy's per-call overhead on 4-7 element arrays cost more than the arithmetic. The
arithmetic is the same elementwise IEEE operations as the numpy version, so results are identical.
`servo_cp` solves IK only when the pose or the roll hint changed since the last solve (a held tool).

Split from sim.py, which builds the cart, steps the physics and runs the grasp assist; `SimArm`
and `TRACKING_LIMIT` stay importable from there.
"""

from __future__ import annotations

import logging
import math
import struct

import mujoco
import numpy as np

from .arm_states import CrtkArmStates
from .config import ArmConfig
from .driver import ArmOperatingState, OperatingState, Pose
from .kinematics import ArmKinematics, float_list, rows_quat

log = logging.getLogger("telesurg.robot.sim")  # the cart's log, as before the split

TRACKING_LIMIT = np.array([0.25, 0.25, 0.02, 0.6, 0.6, 0.6])  # rad / m, per joint
_IK_KEY = struct.Struct("8d")  # pose + roll hint, compared bit for bit (0.0 and -0.0 may give other IK turns)


def _index(ids: list[int]) -> slice | np.ndarray:
    """A slice when `ids` are consecutive (cheap numpy access), else the index array."""
    if ids == list(range(ids[0], ids[0] + len(ids))):
        return slice(ids[0], ids[0] + len(ids))
    return np.array(ids)


def _clip(values: list[float], lower: list[float], upper: list[float]) -> list[float]:
    """`np.clip` on float lists (same results for finite bounds; NaN passes through as in numpy)."""
    return [lo if v < lo else hi if v > hi else v for v, lo, hi in zip(values, lower, upper, strict=True)]


class SimArm(CrtkArmStates):
    """One simulated arm with CRTK names (see `driver.Arm`)."""

    _log = log

    def __init__(self, config: ArmConfig, model: mujoco.MjModel, data: mujoco.MjData,
                 fault_seconds: float) -> None:
        self.name = config.name
        self.config = config
        self.kinematics = ArmKinematics(config)
        self._data = data
        self._qadr = _index([int(model.jnt_qposadr[model.joint(f"{self.name}_{j}").id]) for j in config.joint_names])
        self._vadr = _index([int(model.jnt_dofadr[model.joint(f"{self.name}_{j}").id]) for j in config.joint_names])
        self._act = _index([int(model.actuator(f"{self.name}_{j}").id) for j in config.joint_names])
        self.has_jaw = config.kind == "psm"
        if self.has_jaw:
            self._jaw_qadr = [int(model.jnt_qposadr[model.joint(f"{self.name}_jaw{i}").id]) for i in (1, 2)]
            self._jaw_act = [int(model.actuator(f"{self.name}_jaw{i}").id) for i in (1, 2)]
        self._model = model
        self._tip_site = int(model.site(f"{self.name}_tool_tip").id)
        self._is_finger = np.zeros(model.ngeom, dtype=bool)  # the only tool geoms that collide (model.py)
        if self.has_jaw:
            self._is_finger[[int(model.geom(f"{self.name}_finger{i}").id) for i in (1, 2)]] = True
        self._home = np.array(config.home, dtype=float)
        self._home_list: list[float] = self._home.tolist()
        self._n = len(self._home_list)
        self._lower: list[float] = config.lower.tolist()
        self._upper: list[float] = config.upper.tolist()
        self._vmax: list[float] = config.max_velocity.tolist()
        self._tracking_limit: list[float] = TRACKING_LIMIT[: self._n].tolist()
        self._jaw_lower, self._jaw_upper = float(config.jaw.lower), float(config.jaw.upper)
        self._jaw_vmax = float(config.jaw.max_velocity)
        self._setpoint = list(self._home_list)
        self._goal = list(self._home_list)
        self._ik_key: bytes | None = None  # pose + roll hint of the last IK solve, and its (clipped) result
        self._ik_goal: list[float] = []
        self._fk_key: bytes | None = None  # joints of the last measured_cp and its (position, quaternion)
        self._fk: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())
        self._speed_scale = 1.0
        self._moving = False
        self._jaw_setpoint = self._jaw_goal = 0.0
        self._state = OperatingState.DISABLED
        self._homed = self._homing = self._busy = False
        self._fault_seconds = fault_seconds
        self._tracking_bad_for = 0.0
        self.ignored_commands = 0
        self.fault_reason: str | None = None
        self._operating = ArmOperatingState(self._state, False, False)  # rebuilt only when it changes
        data.qpos[self._qadr] = self._home  # the simulated arm starts parked at home
        self._write_ctrl()

    # -- CRTK: measured / setpoint ---------------------------------------------------------------
    def measured_js(self) -> np.ndarray:
        return self._data.qpos[self._qadr].copy()

    def _measured_list(self) -> list[float]:
        return self._data.qpos[self._qadr].tolist()

    def measured_cp(self) -> Pose:
        joints = self._data.qpos[self._qadr]
        key = joints.tobytes()  # an arm at rest keeps bit-identical joints: reuse the last FK
        if key != self._fk_key:
            position, rot = self.kinematics.forward_rows(joints.tolist())
            self._fk, self._fk_key = (position, rows_quat(rot)), key
        return Pose(np.array(self._fk[0]), np.array(self._fk[1]))

    def measured_cv(self) -> np.ndarray:
        """Tool-tip twist from the simulated joint velocities (see `ArmKinematics.twist`)."""
        return self.kinematics.twist(self._data.qpos[self._qadr], self._data.qvel[self._vadr])

    def setpoint_js(self) -> np.ndarray:
        return np.array(self._setpoint)

    def setpoint_cp(self) -> Pose:
        position, rot = self.kinematics.forward_rows(self._setpoint)
        return Pose(np.array(position), np.array(rows_quat(rot)))

    def measured_jaw(self) -> float:
        if not self.has_jaw:
            return 0.0
        qpos = self._data.qpos
        return float(qpos[self._jaw_qadr[0]]) - float(qpos[self._jaw_qadr[1]])

    def measured_cf(self) -> np.ndarray:
        """CRTK `measured_cf`: net contact force (N) the environment exerts on this tool, in the tool
        frame (tool-tip site axes; +z along the shaft, out of the tip). Sum over the contacts touching
        the jaw fingers, the only tool geoms that collide (model.py): a ring squeezed between the
        fingers adds equal and opposite forces, so only the net external force remains, as a wrist
        force sensor would see it. The grasp assist's weld (a held ring's weight) is not a contact
        and is not included. Zero for the endoscope."""
        ncon = self._data.ncon
        if not self.has_jaw or ncon == 0:
            return np.zeros(3)
        contact = self._data.contact
        g1, g2 = contact.geom1[:ncon], contact.geom2[:ncon]
        ours = np.flatnonzero(self._is_finger[g1] | self._is_finger[g2])
        if ours.size == 0:  # the common case, kept cheap: this runs at the force rate (500 Hz)
            return np.zeros(3)
        local = np.empty((ours.size, 3))
        wrench = np.zeros(6)
        for j, i in enumerate(ours.tolist()):
            mujoco.mj_contactForce(self._model, self._data, i, wrench)
            local[j] = wrench[:3]
        frames = contact.frame[ours].reshape(-1, 3, 3)  # rows: normal, tangents (world)
        world = np.einsum("nij,ni->nj", frames, local)
        # the contact force acts on geom2 along +normal (from geom1 to geom2), on geom1 opposite
        sign = np.where(self._is_finger[g2[ours]], 1.0, -1.0)
        force = sign @ world
        rot = self._data.site_xmat[self._tip_site].reshape(3, 3)
        return rot.T @ force

    # -- CRTK: commands ---------------------------------------------------------------------------
    def _set_goal(self, q: np.ndarray, speed_scale: float, busy: bool) -> None:
        q = np.asarray(q, dtype=float)
        if q.shape != self._home.shape or not np.all(np.isfinite(q)):
            raise ValueError(f"{self.name}: joint vector must be {self._home.size} finite values, got {q!r}")
        self._goal = _clip(q.tolist(), self._lower, self._upper)
        self._moving = True
        self._speed_scale = speed_scale
        self._busy = busy

    def servo_cp(self, pose: Pose) -> None:
        position = pose.position
        p = position.tolist() if isinstance(position, np.ndarray) and position.shape == (3,) else \
            [math.nan] if np.shape(position) != (3,) else [float(v) for v in position]
        if not (math.isfinite(p[0]) and math.isfinite(p[1]) and math.isfinite(p[2])):
            raise ValueError(f"{self.name}: servo_cp position must be 3 finite values, got {pose.position!r}")
        if not self._accepting():
            return
        quat = float_list(pose.orientation, 4)
        roll_hint = self._goal[3]
        key = _IK_KEY.pack(*p, *quat, roll_hint)
        if key != self._ik_key:  # IK is a pure function of (pose, roll hint): solve only when they change
            q = self.kinematics.inverse_floats(p, quat, roll_hint)
            if not all(map(math.isfinite, q)):
                raise ValueError(f"{self.name}: joint vector must be {self._n} finite values, got {q!r}")
            self._ik_goal, self._ik_key = _clip(q, self._lower, self._upper), key
        self._goal = self._ik_goal  # never changed in place: sharing the list is safe
        self._moving = True
        self._speed_scale = 1.0
        self._busy = False

    def move_cp(self, pose: Pose) -> None:
        """Planned move to a tool pose: IK once (roll nearest the current goal), then as `move_jp`."""
        position = float_list(pose.position, 3)
        if not all(map(math.isfinite, position)):
            raise ValueError(f"{self.name}: move_cp position must be 3 finite values, got {pose.position!r}")
        if self._accepting():
            q = self.kinematics.inverse_floats(position, float_list(pose.orientation, 4), self._goal[3])
            self._set_goal(np.array(q), 0.5, True)

    def servo_jaw(self, angle: float) -> None:
        if not math.isfinite(angle):
            raise ValueError(f"{self.name}: jaw angle must be finite, got {angle!r}")
        if self.has_jaw and self._accepting():
            self._jaw_goal = float(min(max(angle, self._jaw_lower), self._jaw_upper))

    def jaw_goal(self) -> float:
        return self._jaw_goal

    def operating_state(self) -> ArmOperatingState:
        op, busy = self._operating, self._busy or self._homing
        if op.state is not self._state or op.is_homed != self._homed or op.is_busy != busy:
            op = self._operating = ArmOperatingState(self._state, self._homed, busy)
        return op

    def _resync_setpoint(self) -> None:
        """Start from where the arm is, so powering on never snaps it back to a stale setpoint."""
        self._setpoint = _clip(self._measured_list(), self._lower, self._upper)
        self._goal = list(self._setpoint)
        self._jaw_setpoint = self._jaw_goal = self.measured_jaw()
        self._moving = False
        self._write_ctrl()

    def _setpoint_goal(self) -> list[float]:
        return list(self._setpoint)

    def _home_goal(self) -> list[float]:
        return list(self._home_list)

    # -- simulation -------------------------------------------------------------------------------
    def advance(self, dt: float) -> None:
        """Move the setpoints toward their goals within the velocity limits and write the servos."""
        if self._state is not OperatingState.ENABLED:
            return
        if self._moving:
            setpoint, goal, scale = self._setpoint, self._goal, self._speed_scale
            ratio = 0.0  # max |goal - setpoint| / (vmax * scale * dt), as the numpy version computed it
            for g, s, v in zip(goal, setpoint, self._vmax, strict=True):
                r = abs(g - s) / (v * scale * dt)
                if r > ratio:
                    ratio = r
            if ratio <= 1.0:
                self._setpoint = list(self._goal)
                self._moving = False
                self._busy = False
                if self._homing:
                    self._homing, self._homed = False, True
            else:
                self._setpoint = [s + (g - s) / ratio for s, g in zip(setpoint, goal, strict=True)]
            self._data.ctrl[self._act] = self._setpoint
        if self._jaw_goal != self._jaw_setpoint:
            jaw_step = self._jaw_vmax * dt
            self._jaw_setpoint += min(jaw_step, max(-jaw_step, self._jaw_goal - self._jaw_setpoint))
            self._write_jaw_ctrl()  # the joint servos already hold `_setpoint`

    def check_tracking(self, dt: float) -> None:
        error = [abs(m - s) for m, s in zip(self._measured_list(), self._setpoint, strict=True)]
        if not all(map(math.isfinite, error)):
            self.fault("non-finite joint state")
        elif any(e > limit for e, limit in zip(error, self._tracking_limit, strict=True)):
            self._tracking_bad_for += dt
            if self._tracking_bad_for >= self._fault_seconds:
                self.fault(f"tracking error {np.round(error, 4).tolist()} for {self._tracking_bad_for:.2f} s")
        else:
            self._tracking_bad_for = 0.0

    def fault(self, reason: str) -> None:
        if self._state != OperatingState.FAULT:
            self.fault_reason = reason
            self._enter(OperatingState.FAULT, reason)
            self._homing = self._busy = False

    def _write_ctrl(self) -> None:
        self._data.ctrl[self._act] = self._setpoint
        self._write_jaw_ctrl()

    def _write_jaw_ctrl(self) -> None:
        if self.has_jaw:
            ctrl = self._data.ctrl
            ctrl[self._jaw_act[0]] = self._jaw_setpoint / 2
            ctrl[self._jaw_act[1]] = -self._jaw_setpoint / 2
