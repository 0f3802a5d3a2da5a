"""`SimDriver`: the patient-side cart simulated in MuJoCo, behind the `Driver`/`Arm` protocols.

Each arm tracks a joint setpoint with MuJoCo position servos. Commands (`servo_*`, `move_jp`) only
set a goal; every `step` moves the setpoint toward it no faster than the configured joint velocity
limits (all joints scaled together, so a straight tool path stays straight), exactly what a real
controller would do with an unsafe request. Joint goals are clamped to the joint limits.

CRTK state machine per arm: DISABLED --enable/home--> ENABLED <--pause/resume--> PAUSED; any state
--disable--> DISABLED; a tracking error held too long latches FAULT, cleared only by "disable".
Servo commands are applied only when ENABLED and homed, else counted in `ignored_commands`.
In DISABLED/PAUSED/FAULT the simulated arm holds its last setpoint (brakes).

Grasp assist (documented, on by default, `CartConfig.grasp_assist`): friction grasping of a
capsule ring by two thin box fingers works in this model (condim 4, elliptic cones, impratio 10,
1 ms step, friction 2, tuned jaw servo): the jaw lifts a ring and carries it several cm, but the
ring slips out when the tool decelerates at the end of a traverse (noslip iterations made it worse),
so placing rings on pegs was not reliable. So when the commanded jaw is closing and both fingers of one arm touch the same ring,
a weld equality between the wrist and that ring is switched on at their current relative pose; it is
switched off as soon as the jaw opens. Fingers still press on the ring, so contact forces are real.

Cost: `step` and the `servo_*` calls run for every arm in every 1 kHz servo period, so their state
(setpoint, goal, limits) is kept as plain float lists and MuJoCo arrays are addressed by slices
found once: numpy's per-call overhead on 4-7 element arrays cost more than the arithmetic. The
arithmetic is the same elementwise IEEE operations as the numpy version, so results are identical.
`servo_cp` solves IK only when the pose or the roll hint changed since the last solve (a held tool).
"""

from __future__ import annotations

import logging
import math
import struct

import mujoco
import numpy as np

from . import scene
from .config import ArmConfig, CartConfig
from .driver import ArmOperatingState, OperatingState, Pose
from .kinematics import ArmKinematics, float_list, matrix_to_quat, rows_quat
from .model import build_mjcf

log = logging.getLogger(__name__)

JAW_GRASP_BELOW = 0.25  # rad: commanded jaw under this counts as "closing" for the grasp assist
TRACKING_LIMIT = np.array([0.25, 0.25, 0.02, 0.6, 0.6, 0.6])  # rad / m, per joint
CHECK_EVERY = 5  # steps between tracking-fault and grasp-assist checks
_COMMANDS = ("enable", "disable", "home", "pause", "resume")
_IK_KEY = struct.Struct("8d")  # pose + roll hint, compared bit for bit (0.0 and -0.0 may give other IK turns)


def _index(ids: list[int]) -> slice | np.ndarray:
    """A slice when `ids` are consecutive (cheap numpy access), else the index array."""
    if ids == list(range(ids[0], ids[0] + len(ids))):
        return slice(ids[0], ids[0] + len(ids))
    return np.array(ids)


def _clip(values: list[float], lower: list[float], upper: list[float]) -> list[float]:
    """`np.clip` on float lists (same results for finite bounds; NaN passes through as in numpy)."""
    return [lo if v < lo else hi if v > hi else v for v, lo, hi in zip(values, lower, upper, strict=True)]


class SimArm:
    """One simulated arm with CRTK names (see `driver.Arm`)."""

    def __init__(self, config: ArmConfig, model: mujoco.MjModel, data: mujoco.MjData,
                 fault_seconds: float) -> None:
        self.name = config.name
        self.config = config
        self.kinematics = ArmKinematics(config)
        self._data = data
        self._qadr = _index([int(model.jnt_qposadr[model.joint(f"{self.name}_{j}").id]) for j in config.joint_names])
        self._act = _index([int(model.actuator(f"{self.name}_{j}").id) for j in config.joint_names])
        self.has_jaw = config.kind == "psm"
        if self.has_jaw:
            self._jaw_qadr = [int(model.jnt_qposadr[model.joint(f"{self.name}_jaw{i}").id]) for i in (1, 2)]
            self._jaw_act = [int(model.actuator(f"{self.name}_jaw{i}").id) for i in (1, 2)]
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

    # -- CRTK: commands ---------------------------------------------------------------------------
    def _accepting(self) -> bool:
        if self._state == OperatingState.ENABLED and self._homed and not self._homing:
            return True
        self.ignored_commands += 1
        return False

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

    def servo_jp(self, q: np.ndarray) -> None:
        if self._accepting():
            self._set_goal(q, 1.0, False)

    def move_jp(self, q: np.ndarray) -> None:
        """Planned move at half the velocity limits; `is_busy` until the setpoint arrives."""
        if self._accepting():
            self._set_goal(q, 0.5, True)

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

    def state_command(self, command: str) -> None:
        if command not in _COMMANDS:
            raise ValueError(f"{self.name}: unknown state command {command!r}; expected one of {_COMMANDS}")
        state = self._state
        if command == "disable":
            self._enter(OperatingState.DISABLED, "disable")
            self._homing = self._busy = False
        elif state == OperatingState.FAULT:
            log.warning("%s: %r refused in FAULT (%s); send 'disable' first", self.name, command, self.fault_reason)
        elif command == "enable" and state == OperatingState.DISABLED:
            self._resync_setpoint()
            self._enter(OperatingState.ENABLED, "enable")
        elif command == "home" and state != OperatingState.PAUSED:
            if state == OperatingState.DISABLED:
                self._resync_setpoint()
            self._enter(OperatingState.ENABLED, "home")
            self._goal, self._speed_scale, self._homing, self._homed = list(self._home_list), 0.5, True, False
            self._moving = True
            self._jaw_goal = 0.0
        elif command == "pause" and state == OperatingState.ENABLED:
            self._enter(OperatingState.PAUSED, "pause")
        elif command == "resume" and state == OperatingState.PAUSED:
            self._enter(OperatingState.ENABLED, "resume")
        else:
            log.warning("%s: %r ignored in state %s", self.name, command, state.name)

    def _resync_setpoint(self) -> None:
        """Start from where the arm is, so powering on never snaps it back to a stale setpoint."""
        self._setpoint = _clip(self._measured_list(), self._lower, self._upper)
        self._goal = list(self._setpoint)
        self._jaw_setpoint = self._jaw_goal = self.measured_jaw()
        self._moving = False
        self._write_ctrl()

    def _enter(self, state: OperatingState, cause: str) -> None:
        if state != self._state:
            log.info("%s: %s -> %s (%s)", self.name, self._state.name, state.name, cause)
        if state != OperatingState.ENABLED:  # hold where the setpoint is now
            self._goal = list(self._setpoint)
            self._jaw_goal = self._jaw_setpoint
            self._moving = False
        self._state = state

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


class SimDriver:
    """The simulated cart (`driver.Driver`): three arms, the peg board and six rings."""

    def __init__(self, config: CartConfig | None = None, seed: int = 0,
                 board: scene.PegBoard | None = None) -> None:
        self.config = config or CartConfig()
        self.board = board or scene.default_board()
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(self.config, self.board))
        self.data = mujoco.MjData(self.model)
        self._arms = {a.name: SimArm(a, self.model, self.data, self.config.tracking_fault_seconds)
                      for a in self.config.arms}
        rng = np.random.default_rng(seed)  # small placement jitter so runs differ by seed, not by accident
        for i in range(self.board.ring_count):
            adr = self.model.jnt_qposadr[self.model.joint(f"ring{i}").id]
            self.data.qpos[adr: adr + 2] += rng.uniform(-0.0008, 0.0008, size=2)
        self._ring_body = np.array([self.model.body(f"ring{i}").id for i in range(self.board.ring_count)])
        self._finger_geoms = {n: [self.model.geom(f"{n}_finger{i}").id for i in (1, 2)]
                              for n, a in self._arms.items() if a.has_jaw}
        self._ring_of_geom = np.full(self.model.ngeom, -1)
        for i, body in enumerate(self._ring_body):
            self._ring_of_geom[self.model.geom_bodyid == body] = i
        self._is_finger = np.zeros(self.model.ngeom, dtype=bool)
        for fingers in self._finger_geoms.values():
            self._is_finger[fingers] = True
        self._arm_list = list(self._arms.values())
        self._welds = {(n, i): self.model.equality(f"{n}_holds_ring{i}").id
                       for n in self._finger_geoms for i in range(self.board.ring_count)}
        self.held: dict[str, int | None] = dict.fromkeys(self._finger_geoms)
        self._substeps_per_second = 1.0 / self.model.opt.timestep
        self._steps = 0
        mujoco.mj_forward(self.model, self.data)

    def arms(self) -> dict[str, SimArm]:
        return dict(self._arms)

    @property
    def time(self) -> float:
        """Simulated time (s) since construction."""
        return float(self.data.time)

    def step(self, dt: float) -> None:
        """Advance the physics by `dt` (rounded to whole MuJoCo timesteps, at least one)."""
        if not 0.0 < dt < 1.0:
            raise ValueError(f"dt must be a servo period in seconds (0 < dt < 1), got {dt!r}")
        substeps = max(1, round(dt * self._substeps_per_second))
        for arm in self._arm_list:
            arm.advance(dt)
        if substeps == 1:
            mujoco.mj_step(self.model, self.data)
        else:
            mujoco.mj_step(self.model, self.data, nstep=substeps)
        self._steps += 1
        if self._steps % CHECK_EVERY == 0:  # slow checks at 200 Hz keep one 1 kHz step cheap
            for arm in self._arm_list:
                arm.check_tracking(dt * CHECK_EVERY)
            if self.config.grasp_assist:
                self._update_grasp_assist()

    def close(self) -> None:
        """Nothing to release (renderers are closed by their owner); kept for the protocol."""

    # -- task observation -------------------------------------------------------------------------
    def ring_positions(self) -> np.ndarray:
        """(n_rings, 3) ring centres in the base frame."""
        return self.data.xpos[self._ring_body].copy()

    def rings_on_target(self) -> int:
        """Rings resting (not held) around any target peg."""
        held = {i for i in self.held.values() if i is not None}
        targets = self.board.pegs[list(self.board.target_pegs)]
        return sum(1 for i, centre in enumerate(self.ring_positions())
                   if i not in held and any(scene.ring_on_peg(centre, peg) for peg in targets))

    def contact_force(self, arm: str) -> float:
        """Sum of contact normal forces (N) on the arm's jaw fingers; 0 for the endoscope."""
        fingers = set(self._finger_geoms.get(arm, ()))
        if arm not in self._arms:
            raise KeyError(f"no arm named {arm!r}; arms are {list(self._arms)}")
        total, wrench = 0.0, np.zeros(6)
        contacts = self.data.contact
        for i in range(self.data.ncon):
            if contacts.geom1[i] in fingers or contacts.geom2[i] in fingers:
                mujoco.mj_contactForce(self.model, self.data, i, wrench)
                total += abs(float(wrench[0]))
        return total

    # -- grasp assist -----------------------------------------------------------------------------
    def _rings_by_finger(self) -> dict[int, set[int]]:
        """Finger geom -> rings it touches now, from one vectorised pass over the contacts."""
        ncon = self.data.ncon
        if ncon == 0:
            return {}
        contact = self.data.contact
        g1, g2 = contact.geom1[:ncon], contact.geom2[:ncon]
        r1, r2 = self._ring_of_geom[g1], self._ring_of_geom[g2]
        m1 = self._is_finger[g1] & (r2 >= 0)
        m2 = self._is_finger[g2] & (r1 >= 0)
        touched: dict[int, set[int]] = {}
        for finger, ring in zip([*g1[m1].tolist(), *g2[m2].tolist()], [*r2[m1].tolist(), *r1[m2].tolist()],
                                strict=True):
            touched.setdefault(finger, set()).add(ring)
        return touched

    def _rings_touched_by_both_fingers(self, arm: str, by_finger: dict[int, set[int]] | None = None) -> set[int]:
        first, second = self._finger_geoms[arm]
        by_finger = self._rings_by_finger() if by_finger is None else by_finger
        return by_finger.get(first, set()) & by_finger.get(second, set())

    def _update_grasp_assist(self) -> None:
        by_finger: dict[int, set[int]] | None = None  # contacts do not change during this call
        for name, ring in self.held.items():
            closing = self._arms[name].jaw_goal() < JAW_GRASP_BELOW
            if ring is not None and not closing:
                self.data.eq_active[self._welds[(name, ring)]] = 0
                self.held[name] = None
            elif ring is None and closing:
                if by_finger is None:
                    by_finger = self._rings_by_finger()
                touched = sorted(self._rings_touched_by_both_fingers(name, by_finger))
                if touched:  # a ring another jaw holds may be taken too: that is a mid-air handover
                    self._weld(name, touched[0])

    def _weld(self, arm: str, ring: int) -> None:
        """Switch on the arm→ring weld at the current relative pose (body2 pose in body1's frame)."""
        eq = self._welds[(arm, ring)]
        b1, b2 = self.model.eq_obj1id[eq], self.model.eq_obj2id[eq]
        rot1 = self.data.xmat[b1].reshape(3, 3)
        relpos = rot1.T @ (self.data.xpos[b2] - self.data.xpos[b1])
        relquat = matrix_to_quat(rot1.T @ self.data.xmat[b2].reshape(3, 3))
        self.model.eq_data[eq, 0:3] = 0.0
        self.model.eq_data[eq, 3:6] = relpos
        self.model.eq_data[eq, 6:10] = relquat
        self.model.eq_data[eq, 10] = 1.0
        self.data.eq_active[eq] = 1
        self.held[arm] = ring
