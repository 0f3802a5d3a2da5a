"""The `Driver` protocol: what the patient-side supervisor needs from a robot, simulated or real.

The safety supervisor (robot/supervisor.py) and the servo loop (robot/servo.py) talk only to this
protocol, never to MuJoCo directly, so a hardware driver can replace the simulated one. Names follow
CRTK (Collaborative Robotics Toolkit, as used by dVRK and AMBF): `measured_*` is what sensors report,
`setpoint_*` is what the controller is currently tracking, `servo_*` is a high-rate setpoint that the
caller has already made safe (small steps, within limits), `move_*` is a planned, interpolated motion.
Suffixes: `js` joint state, `jp` joint positions, `cp` Cartesian pose, `cv` Cartesian velocity
(twist). docs/crtk.md maps every operation the console and robot exchange to these names.

A hardware driver must:
- accept `servo_cp`/`servo_jp`/`servo_jaw` at the servo rate (default 1 kHz) without blocking longer
  than a fraction of a period, and hold the last setpoint if no new one arrives (its own hardware
  watchdog, dVRK uses 30 ms, should stop the amplifiers on top of ours);
- report `measured_*` from encoders and `operating_state` honestly (FAULT on any amplifier fault);
- execute `state_command("disable")` immediately, whatever else is happening (e-stop path).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


class OperatingState(enum.IntEnum):
    DISABLED = 0
    ENABLED = 1
    PAUSED = 2
    FAULT = 3


@dataclass(frozen=True, slots=True)
class Pose:
    """A tool-tip pose in the robot base frame: position in metres, unit quaternion (w, x, y, z)."""

    position: np.ndarray
    orientation: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0, 0.0]))


@dataclass(frozen=True, slots=True)
class ArmOperatingState:
    state: OperatingState
    is_homed: bool
    is_busy: bool


@runtime_checkable
class Arm(Protocol):
    """One arm (PSM instrument arm or ECM endoscope arm) with CRTK names."""

    name: str

    def measured_js(self) -> np.ndarray: ...
    def measured_cp(self) -> Pose: ...
    def measured_cv(self) -> np.ndarray:
        """Tool-tip twist (vx, vy, vz, wx, wy, wz) in the base frame, m/s and rad/s."""
        ...
    def setpoint_js(self) -> np.ndarray: ...
    def setpoint_cp(self) -> Pose: ...
    def measured_jaw(self) -> float: ...
    def servo_cp(self, pose: Pose) -> None: ...
    def servo_jp(self, q: np.ndarray) -> None: ...
    def servo_jaw(self, angle: float) -> None: ...
    def move_jp(self, q: np.ndarray) -> None: ...
    def move_cp(self, pose: Pose) -> None:
        """Planned motion to a tool pose, interpolated by the arm; `is_busy` until it arrives."""
        ...
    def operating_state(self) -> ArmOperatingState: ...
    def state_command(self, command: str) -> None:
        """One of "enable", "disable", "home", "pause", "resume"."""
        ...


@runtime_checkable
class ForceSensingArm(Arm, Protocol):
    """An arm that can also report CRTK `measured_cf`: the force (N) the environment exerts on the
    tool, in the tool frame (tool-tip site axes). Optional: an arm without force sensing simply lacks
    the method, and `measured_cf_of` returns None for it (never a made-up zero)."""

    def measured_cf(self) -> np.ndarray: ...


def measured_cf_of(arm: Arm) -> np.ndarray | None:
    """`arm.measured_cf()` when the driver senses force, else None (the console then renders none)."""
    measure = getattr(arm, "measured_cf", None)
    return None if measure is None else np.asarray(measure(), dtype=float)


@runtime_checkable
class Driver(Protocol):
    """A patient-side cart: named arms plus a step function the servo loop calls once per period."""

    def arms(self) -> dict[str, Arm]: ...
    def step(self, dt: float) -> None:
        """Advance the hardware I/O (or the physics) by one servo period of `dt` seconds."""
        ...
    def close(self) -> None: ...


DRIVER_KINDS = ("mujoco", "kinematic")


def open_driver(kind: str, seed: int = 0) -> Driver:
    """The cart for `telesurg robot --driver KIND`: "mujoco" (physics, rings, endoscope pictures) or
    "kinematic" (no physics, for hardware-in-the-loop tests; no rings, no rendered endoscope)."""
    if kind == "mujoco":
        from .sim import SimDriver

        return SimDriver(seed=seed)
    if kind == "kinematic":
        from .kinematic_driver import KinematicConfig, KinematicDriver

        return KinematicDriver(settings=KinematicConfig(seed=seed))
    raise ValueError(f"driver {kind!r}: expected one of {', '.join(DRIVER_KINDS)}")
