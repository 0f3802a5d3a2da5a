"""Haptic master devices behind one interface (`servo_cf` in, `measured_cp` out), and a simulated one.

`HapticDevice` is the CRTK subset force feedback needs, per master arm:
- `servo_cf(force)`: the Cartesian force (N, master frame) to render from now until the next call;
- `measured_cp()`: the handle position (m, master frame), newest sample, never blocking.

How a real device plugs in:
- vendor SDK (OpenHaptics for a Touch, Force Dimension SDK for a sigma.7/omega): run the SDK's servo
  callback (1 kHz, its own thread); `servo_cf` stores the force in a lock-free slot the callback
  writes to the motors (`hdSetDoublev(HD_CURRENT_FORCE, ...)` / `dhdSetForce`), `measured_cp` returns
  the position the callback read last (`HD_CURRENT_POSITION` / `dhdGetPosition`, mm -> m). Keep the
  device's own force limit and its safety watchdog on; saturation here is on top of it.
- ROS / dVRK MTM (CRTK topics): publish `servo_cf` as a `geometry_msgs/WrenchStamped` on
  `/MTMR/body/servo_cf` and subscribe `measured_cp` (`PoseStamped`) keeping only the newest message.
- The console's `HapticMaster.set_force(arm, force, now)` (console/inputs.py) maps to `servo_cf`.

`SimulatedMaster` is a mass–damper handle driven by the rendered force and the force of a
`HumanArm`: a spring–damper pulling the handle toward the hand's intended trajectory (a relaxed grip
is roughly 100–500 N/m and 5–10 N·s/m; Hogan 1985 / Kuchenbecker et al.). Semi-implicit Euler,
stepped by the caller's virtual clock; the hand's own mass is lumped into the device mass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class HapticDevice(Protocol):
    """One master arm with motors; see the module docstring for vendor SDKs and ROS."""

    def servo_cf(self, force: np.ndarray) -> None: ...
    def measured_cp(self) -> np.ndarray: ...


class HumanArm:
    """Spring–damper from the handle toward the hand's intended position `target(t)` (m, master frame).
    `stiffness_n_per_m = 0` models a surgeon who let go of the handle."""

    def __init__(self, target: Callable[[float], np.ndarray], stiffness_n_per_m: float = 300.0,
                 damping_ns_per_m: float = 8.0) -> None:
        self.target = target
        self.stiffness = stiffness_n_per_m
        self.damping = damping_ns_per_m
        self._previous_target: np.ndarray | None = None

    def force(self, t: float, dt: float, position: np.ndarray, velocity: np.ndarray) -> np.ndarray:
        target = np.asarray(self.target(t), dtype=float)
        target_velocity = np.zeros(3) if self._previous_target is None else (target - self._previous_target) / dt
        self._previous_target = target
        if self.stiffness == 0.0:
            return np.zeros(3)
        return self.stiffness * (target - position) + self.damping * (target_velocity - velocity)


class SimulatedMaster:
    """Mass–damper handle (`HapticDevice`): m·a = f_rendered + f_hand − b·v."""

    def __init__(self, mass_kg: float = 0.3, damping_ns_per_m: float = 2.0, human: HumanArm | None = None,
                 position: np.ndarray | None = None, max_force_n: float = 40.0) -> None:
        self.mass = mass_kg
        self.damping = damping_ns_per_m
        self.human = human
        self.max_force = max_force_n  # the motors' own limit
        self.position = np.zeros(3) if position is None else np.array(position, dtype=float)
        self.velocity = np.zeros(3)
        self.rendered = np.zeros(3)
        self.hand_force = np.zeros(3)

    def servo_cf(self, force: np.ndarray) -> None:
        force = np.asarray(force, dtype=float)
        magnitude = float(np.linalg.norm(force))
        self.rendered = force if magnitude <= self.max_force else force * (self.max_force / magnitude)

    def measured_cp(self) -> np.ndarray:
        return self.position.copy()

    def step(self, t: float, dt: float) -> None:
        """Advance the handle by `dt` seconds (virtual clock `t`, the start of the step)."""
        self.hand_force = (self.human.force(t, dt, self.position, self.velocity) if self.human is not None
                           else np.zeros(3))
        accel = (self.rendered + self.hand_force - self.damping * self.velocity) / self.mass
        self.velocity = self.velocity + accel * dt
        self.position = self.position + self.velocity * dt
