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
"""

from __future__ import annotations

import logging
import math

import mujoco
import numpy as np

from . import scene
from .config import ArmConfig, CartConfig
from .driver import ArmOperatingState, OperatingState, Pose
from .kinematics import ArmKinematics, matrix_to_quat
from .model import build_mjcf

log = logging.getLogger(__name__)

JAW_GRASP_BELOW = 0.25  # rad: commanded jaw under this counts as "closing" for the grasp assist
TRACKING_LIMIT = np.array([0.25, 0.25, 0.02, 0.6, 0.6, 0.6])  # rad / m, per joint
CHECK_EVERY = 5  # steps between tracking-fault and grasp-assist checks
_COMMANDS = ("enable", "disable", "home", "pause", "resume")


class SimArm:
    """One simulated arm with CRTK names (see `driver.Arm`)."""

    def __init__(self, config: ArmConfig, model: mujoco.MjModel, data: mujoco.MjData,
                 fault_seconds: float) -> None:
        self.name = config.name
        self.config = config
        self.kinematics = ArmKinematics(config)
        self._data = data
        self._qadr = np.array([model.jnt_qposadr[model.joint(f"{self.name}_{j}").id] for j in config.joint_names])
        self._act = np.array([model.actuator(f"{self.name}_{j}").id for j in config.joint_names])
        self.has_jaw = config.kind == "psm"
        if self.has_jaw:
            self._jaw_qadr = np.array([model.jnt_qposadr[model.joint(f"{self.name}_jaw{i}").id] for i in (1, 2)])
            self._jaw_act = np.array([model.actuator(f"{self.name}_jaw{i}").id for i in (1, 2)])
        self._home = np.array(config.home, dtype=float)
        self._lower, self._upper, self._vmax = config.lower, config.upper, config.max_velocity
        self._setpoint = self._home.copy()
        self._goal = self._home.copy()
        self._speed_scale = 1.0
        self._moving = False
        self._jaw_setpoint = self._jaw_goal = 0.0
        self._state = OperatingState.DISABLED
        self._homed = self._homing = self._busy = False
        self._fault_seconds = fault_seconds
        self._tracking_bad_for = 0.0
        self.ignored_commands = 0
        self.fault_reason: str | None = None
        data.qpos[self._qadr] = self._home  # the simulated arm starts parked at home
        self._write_ctrl()

    # -- CRTK: measured / setpoint ---------------------------------------------------------------
    def measured_js(self) -> np.ndarray:
        return self._data.qpos[self._qadr].copy()

    def measured_cp(self) -> Pose:
        position, quat = self.kinematics.forward_quat(self.measured_js())
        return Pose(position, quat)

    def setpoint_js(self) -> np.ndarray:
        return self._setpoint.copy()

    def setpoint_cp(self) -> Pose:
        position, quat = self.kinematics.forward_quat(self._setpoint)
        return Pose(position, quat)

    def measured_jaw(self) -> float:
        if not self.has_jaw:
            return 0.0
        q = self._data.qpos[self._jaw_qadr]
        return float(q[0] - q[1])

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
        self._goal = np.clip(q, self._lower, self._upper)
        self._moving = True
        self._speed_scale = speed_scale
        self._busy = busy

    def servo_cp(self, pose: Pose) -> None:
        if not np.all(np.isfinite(pose.position)) or np.shape(pose.position) != (3,):
            raise ValueError(f"{self.name}: servo_cp position must be 3 finite values, got {pose.position!r}")
        if self._accepting():
            self._set_goal(self.kinematics.inverse(pose.position, pose.orientation, self._goal), 1.0, False)

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
            self._jaw_goal = float(np.clip(angle, self.config.jaw.lower, self.config.jaw.upper))

    def jaw_goal(self) -> float:
        return self._jaw_goal

    def operating_state(self) -> ArmOperatingState:
        return ArmOperatingState(self._state, self._homed, self._busy or self._homing)

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
            self._goal, self._speed_scale, self._homing, self._homed = self._home.copy(), 0.5, True, False
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
        self._setpoint = np.clip(self.measured_js(), self._lower, self._upper)
        self._goal = self._setpoint.copy()
        self._jaw_setpoint = self._jaw_goal = self.measured_jaw()
        self._moving = False
        self._write_ctrl()

    def _enter(self, state: OperatingState, cause: str) -> None:
        if state != self._state:
            log.info("%s: %s -> %s (%s)", self.name, self._state.name, state.name, cause)
        if state != OperatingState.ENABLED:  # hold where the setpoint is now
            self._goal = self._setpoint.copy()
            self._jaw_goal = self._jaw_setpoint
            self._moving = False
        self._state = state

    # -- simulation -------------------------------------------------------------------------------
    def advance(self, dt: float) -> None:
        """Move the setpoints toward their goals within the velocity limits and write the servos."""
        if self._state != OperatingState.ENABLED:
            return
        if self._moving:
            delta = self._goal - self._setpoint
            ratio = float(np.max(np.abs(delta) / (self._vmax * self._speed_scale * dt)))
            if ratio <= 1.0:
                self._setpoint = self._goal.copy()
                self._moving = False
                self._busy = False
                if self._homing:
                    self._homing, self._homed = False, True
            else:
                self._setpoint = self._setpoint + delta / ratio
            self._data.ctrl[self._act] = self._setpoint
        if self._jaw_goal != self._jaw_setpoint:
            jaw_step = self.config.jaw.max_velocity * dt
            self._jaw_setpoint += min(jaw_step, max(-jaw_step, self._jaw_goal - self._jaw_setpoint))
            self._write_ctrl()

    def check_tracking(self, dt: float) -> None:
        error = np.abs(self.measured_js() - self._setpoint)
        if not np.all(np.isfinite(error)):
            self.fault("non-finite joint state")
        elif np.any(error > TRACKING_LIMIT[: error.size]):
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
        if self.has_jaw:
            self._data.ctrl[self._jaw_act] = (self._jaw_setpoint / 2, -self._jaw_setpoint / 2)


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
        for arm in self._arms.values():
            arm.advance(dt)
        mujoco.mj_step(self.model, self.data, nstep=substeps)
        self._steps += 1
        if self._steps % CHECK_EVERY == 0:  # slow checks at 200 Hz keep one 1 kHz step cheap
            for arm in self._arms.values():
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
    def _rings_touched_by_both_fingers(self, arm: str) -> set[int]:
        ncon = self.data.ncon
        g1, g2 = self.data.contact.geom1[:ncon], self.data.contact.geom2[:ncon]
        touched = []
        for finger in self._finger_geoms[arm]:
            other = np.concatenate([g2[g1 == finger], g1[g2 == finger]])
            touched.append({int(r) for r in self._ring_of_geom[other] if r >= 0})
        return touched[0] & touched[1]

    def _update_grasp_assist(self) -> None:
        for name, ring in self.held.items():
            closing = self._arms[name].jaw_goal() < JAW_GRASP_BELOW
            if ring is not None and not closing:
                self.data.eq_active[self._welds[(name, ring)]] = 0
                self.held[name] = None
            elif ring is None and closing:
                touched = sorted(self._rings_touched_by_both_fingers(name))
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


class StereoRenderer:
    """Two off-screen cameras on the endoscope tip (5 mm baseline) looking at the board.

    With osmesa this is CPU rendering: render small (640x360) or at a lower rate than the servo loop.
    `fast` (default) turns off multisample anti-aliasing, shadows and reflections, which the CPU
    rasteriser pays for dearly: a 640x360 stereo pair took 120 ms with them and 42 ms without
    (1280x720: 159 ms -> 58 ms), measured here. It also tessellates the round shapes (pegs, rings,
    tools) with 12x6 instead of 28x16 facets, which halves the remaining cost (640x360: 39 -> 18 ms
    per pair) with no difference visible at endoscope distance. It changes the driver's model's visual quality, so
    give the renderer a driver of its own (the robot's video process does).
    Call `close()` explicitly; MuJoCo's renderer finaliser complains at interpreter shutdown.
    """

    def __init__(self, driver: SimDriver, width: int = 640, height: int = 360, arm: str = "ECM",
                 *, fast: bool = True) -> None:
        if not (0 < width <= 1280 and 0 < height <= 720):
            raise ValueError(f"width x height must be within 1280x720 (the model's offscreen buffer), got "
                             f"{width}x{height}")
        self._driver = driver
        if fast:
            driver.model.vis.quality.offsamples = 0
            driver.model.vis.quality.numslices = 12
            driver.model.vis.quality.numstacks = 6
        self._renderer = mujoco.Renderer(driver.model, height=height, width=width)
        if fast:
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                         mujoco.mjtRndFlag.mjRND_SKYBOX):
                self._renderer.scene.flags[flag] = False
        self._cameras = (f"{arm}_left", f"{arm}_right")

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) RGB uint8 images, HxWx3."""
        images = []
        for camera in self._cameras:
            self._renderer.update_scene(self._driver.data, camera=camera)
            images.append(self._renderer.render().copy())
        return images[0], images[1]

    def close(self) -> None:
        self._renderer.close()
