"""`KinematicDriver`: the cart without physics, behind `Driver`/`Arm`, for hardware-in-the-loop tests.

A second implementation of the driver seam (robot/driver.py), so the supervisor and servo loop are
proven against more than MuJoCo, and so a test bench can stand in for a real arm: it is cheap (no
contact solver), deterministic under a seed, and its imperfections are explicit settings.

Per arm, every `step(dt)`:
- the setpoint moves toward the commanded goal no faster than the joint velocity limits (all joints
  scaled together, as SimArm does), goals clamped to the joint limits;
- the measured joints follow the setpoint with a first-order lag (`lag_s`, an amplifier + PID);
- the encoders read the measured joints plus seeded Gaussian noise (`encoder_noise_rad`, `_m`),
  drawn once per step so every read in one period agrees;
- the tool pose is the closed-form forward kinematics (robot/kinematics.py) of the encoder reading.

CRTK states as SimArm: DISABLED --enable/home--> ENABLED <--pause/resume--> PAUSED; any --disable-->
DISABLED; FAULT latches (tracking error held `fault_seconds`, or `inject_fault`) until "disable".
Commands count as `ignored_commands` unless ENABLED and homed. For tests: `inject_fault(reason)`
(an amplifier fault) and `stall(True)` (a jammed joint: the measured joints stop, the tracking
check then faults the arm as a real controller would).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from .arm_states import CrtkArmStates
from .config import ArmConfig, CartConfig
from .driver import ArmOperatingState, OperatingState, Pose
from .kinematics import ArmKinematics, float_list, rows_quat

log = logging.getLogger("telesurg.robot.kinematic")

TRACKING_LIMIT = np.array([0.25, 0.25, 0.02, 0.6, 0.6, 0.6])  # rad / m per joint, as the simulated arm
_PRISMATIC = 2  # joint index of the insertion (metres); the others are rotary (radians)


@dataclass(frozen=True, slots=True)
class KinematicConfig:
    lag_s: float = 0.005  # first-order time constant of measured behind setpoint; 0: measured = setpoint
    encoder_noise_rad: float = 0.0  # standard deviation on rotary joint readings
    encoder_noise_m: float = 0.0  # standard deviation on the insertion reading
    seed: int = 0
    fault_seconds: float = 0.25  # tracking error above TRACKING_LIMIT this long latches FAULT

    def __post_init__(self) -> None:
        if not 0.0 <= self.lag_s <= 1.0:
            raise ValueError(f"kinematic lag_s={self.lag_s}: use 0..1 s (0 = no lag)")
        if not (0.0 <= self.encoder_noise_rad <= 0.1 and 0.0 <= self.encoder_noise_m <= 0.01):
            raise ValueError("kinematic encoder noise: use 0..0.1 rad and 0..0.01 m (standard deviations)")
        if not self.fault_seconds > 0.0:
            raise ValueError(f"kinematic fault_seconds={self.fault_seconds}: must be > 0")


class KinematicArm(CrtkArmStates):
    """One arm: rate-limited setpoint, lagging joints, noisy encoders (see the module docstring)."""

    _log = log

    def __init__(self, config: ArmConfig, settings: KinematicConfig, rng: np.random.Generator) -> None:
        self.name = config.name
        self.config = config
        self.kinematics = ArmKinematics(config)
        self.settings = settings
        self.has_jaw = config.kind == "psm"
        self._rng = rng
        self._home = np.array(config.home, dtype=float)
        self._lower, self._upper, self._vmax = config.lower, config.upper, config.max_velocity
        self._noise_std = np.full(self._home.size, settings.encoder_noise_rad)
        self._noise_std[_PRISMATIC] = settings.encoder_noise_m
        self._setpoint = self._home.copy()
        self._goal = self._home.copy()
        self._joints = self._home.copy()  # true (noise-free) joint positions
        self._velocity = np.zeros_like(self._home)
        self._noise = np.zeros_like(self._home)
        self._speed_scale = 1.0
        self._jaw_lower, self._jaw_upper = float(config.jaw.lower), float(config.jaw.upper)
        self._jaw_vmax = float(config.jaw.max_velocity)
        self._jaw_goal = self._jaw_setpoint = self._jaw = 0.0
        self._state = OperatingState.DISABLED
        self._homed = self._homing = self._busy = False
        self._stalled = False
        self._moving = False  # the setpoint still has to travel to the goal
        self._settled = True  # joints (and jaw) sit exactly on the setpoint: nothing to integrate
        self._tracking_bad_for = 0.0
        self.ignored_commands = 0
        self.fault_reason: str | None = None

    # -- CRTK: measured / setpoint ---------------------------------------------------------------
    def measured_js(self) -> np.ndarray:
        return self._joints + self._noise

    def measured_cp(self) -> Pose:
        position, rot = self.kinematics.forward_rows((self._joints + self._noise).tolist())
        return Pose(np.array(position), np.array(rows_quat(rot)))

    def measured_cv(self) -> np.ndarray:
        return self.kinematics.twist(self._joints, self._velocity)

    def setpoint_js(self) -> np.ndarray:
        return self._setpoint.copy()

    def setpoint_cp(self) -> Pose:
        position, rot = self.kinematics.forward_rows(self._setpoint.tolist())
        return Pose(np.array(position), np.array(rows_quat(rot)))

    def measured_jaw(self) -> float:
        return self._jaw if self.has_jaw else 0.0

    def operating_state(self) -> ArmOperatingState:
        return ArmOperatingState(self._state, self._homed, self._busy or self._homing)

    # -- CRTK: commands ---------------------------------------------------------------------------
    def _set_goal(self, q: np.ndarray, speed_scale: float, busy: bool) -> None:
        q = np.asarray(q, dtype=float)
        if q.shape != self._home.shape or not np.all(np.isfinite(q)):
            raise ValueError(f"{self.name}: joint vector must be {self._home.size} finite values, got {q!r}")
        self._goal = np.clip(q, self._lower, self._upper)
        self._speed_scale, self._busy, self._moving = speed_scale, busy, True

    def _ik(self, pose: Pose, command: str) -> np.ndarray:
        position = float_list(pose.position, 3)
        if not all(map(math.isfinite, position)):
            raise ValueError(f"{self.name}: {command} position must be 3 finite values, got {pose.position!r}")
        return np.array(self.kinematics.inverse_floats(position, float_list(pose.orientation, 4), float(self._goal[3])))

    def servo_cp(self, pose: Pose) -> None:
        if self._accepting():
            self._set_goal(self._ik(pose, "servo_cp"), 1.0, False)

    def move_cp(self, pose: Pose) -> None:
        if self._accepting():
            self._set_goal(self._ik(pose, "move_cp"), 0.5, True)

    def servo_jaw(self, angle: float) -> None:
        if not math.isfinite(angle):
            raise ValueError(f"{self.name}: jaw angle must be finite, got {angle!r}")
        if self.has_jaw and self._accepting():
            self._jaw_goal = min(max(float(angle), self._jaw_lower), self._jaw_upper)

    # -- test hooks -------------------------------------------------------------------------------
    def inject_fault(self, reason: str = "injected amplifier fault") -> None:
        """Latch FAULT now, as an amplifier or encoder fault would; cleared only by "disable"."""
        if self._state is not OperatingState.FAULT:
            self.fault_reason = reason
            self._enter(OperatingState.FAULT, reason)
            self._homing = self._busy = False

    def stall(self, stalled: bool = True) -> None:
        """Freeze the measured joints (a jammed joint); the tracking check faults the arm in time."""
        self._stalled = stalled
        self._settled = False

    # -- simulation -------------------------------------------------------------------------------
    def advance(self, dt: float) -> None:
        """One period. An arm at rest (setpoint reached, joints settled on it) costs only its noise
        draw: most arms are idle most of the time, and three arms step in every 1 kHz period."""
        if self._state is OperatingState.ENABLED:
            if self._moving:
                self._advance_setpoint(dt)
            if self._jaw_goal != self._jaw_setpoint:
                jaw_step = self._jaw_vmax * dt
                self._jaw_setpoint += min(jaw_step, max(-jaw_step, self._jaw_goal - self._jaw_setpoint))
                self._settled = False
        if not self._settled and not self._stalled:
            previous = self._joints
            lag = self.settings.lag_s
            alpha = 1.0 if lag == 0.0 else 1.0 - math.exp(-dt / lag)
            self._joints = previous + alpha * (self._setpoint - previous)
            self._jaw += alpha * (self._jaw_setpoint - self._jaw)
            self._velocity = (self._joints - previous) / dt
            if float(np.max(np.abs(self._setpoint - self._joints))) < 1e-12 and abs(self._jaw_setpoint - self._jaw) < 1e-12:
                self._joints, self._jaw, self._settled = self._setpoint.copy(), self._jaw_setpoint, True
        elif self._velocity.any():
            self._velocity = np.zeros_like(self._velocity)
        if self.settings.encoder_noise_rad or self.settings.encoder_noise_m:
            self._noise = self._rng.normal(0.0, self._noise_std)
        if not self._settled and self._state in (OperatingState.ENABLED, OperatingState.PAUSED):
            self._check_tracking(dt)  # amplifiers on and something to track
        else:
            self._tracking_bad_for = 0.0

    def _advance_setpoint(self, dt: float) -> None:
        delta = self._goal - self._setpoint
        ratio = float(np.max(np.abs(delta) / (self._vmax * self._speed_scale * dt)))
        if ratio <= 1.0:
            self._setpoint = self._goal.copy()
            self._moving = self._busy = False
            if self._homing:
                self._homing, self._homed = False, True
        else:
            self._setpoint = self._setpoint + delta / ratio
        self._settled = False

    def _check_tracking(self, dt: float) -> None:
        error = np.abs(self._joints - self._setpoint)
        if np.any(error > TRACKING_LIMIT[: error.size]):
            self._tracking_bad_for += dt
            if self._tracking_bad_for >= self.settings.fault_seconds:
                self.inject_fault(f"tracking error {np.round(error, 4).tolist()} for {self._tracking_bad_for:.2f} s")
        else:
            self._tracking_bad_for = 0.0

    def _resync_setpoint(self) -> None:
        """Start from where the arm is, so powering on never snaps it back to a stale setpoint."""
        self._setpoint = np.clip(self._joints, self._lower, self._upper)
        self._goal = self._setpoint.copy()
        self._jaw_setpoint = self._jaw_goal = self._jaw
        self._moving, self._settled = False, False

    def _setpoint_goal(self) -> np.ndarray:
        return self._setpoint.copy()

    def _home_goal(self) -> np.ndarray:
        return self._home.copy()


class KinematicDriver:
    """The cart as kinematics only (`driver.Driver`): PSM1, PSM2, ECM from a `CartConfig`."""

    def __init__(self, config: CartConfig | None = None, settings: KinematicConfig | None = None) -> None:
        self.config = config or CartConfig()
        self.settings = settings or KinematicConfig()
        rng = np.random.default_rng(self.settings.seed)
        self._arms = {a.name: KinematicArm(a, self.settings, rng) for a in self.config.arms}
        self.time = 0.0

    def arms(self) -> dict[str, KinematicArm]:
        return dict(self._arms)

    def step(self, dt: float) -> None:
        if not 0.0 < dt < 1.0:
            raise ValueError(f"dt must be a servo period in seconds (0 < dt < 1), got {dt!r}")
        for arm in self._arms.values():
            arm.advance(dt)
        self.time += dt

    def close(self) -> None:
        """Nothing to release; kept for the protocol."""
