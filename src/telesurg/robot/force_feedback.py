"""`ForceSampler`: the robot's side of force feedback, one `messages.ForceFeedback` every few servo periods.

Called once per servo period (after `driver.step`), it decimates to `force_hz` (default 500 Hz: the
console renders forces at 1 kHz, and the time-domain passivity controller there needs the force and
the energy flow sampled much faster than the contact dynamics) and reads each force-sensing arm's
CRTK `measured_cf` and pose. It also runs the robot half of the time-domain passivity approach
(Ryu & Hannaford 2004; Artigas et al. 2010): an energy observer on each tool port, i.e. the work the
environment does on the tool and the tool on the environment, integrated from the force and the
measured tool displacement between samples. Both are cumulative, so the console can use the newest
value it received and a lost message costs nothing. Sans-I/O: `now` comes from the servo loop.

Arms without force sensing (`driver.measured_cf_of` is None) are left out of the message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from telesurg.messages import ArmForce, ArmId, ForceFeedback
from telesurg.robot.driver import Arm, measured_cf_of
from telesurg.robot.kinematics import quat_to_matrix

DEFAULT_FORCE_HZ = 500.0


class ToolPortObserver:
    """Energy observer on one tool port (the robot half of the time-domain passivity approach).

    `observe(force, position)` takes the force the environment exerts on the tool and the tool
    position, both in one frame (base frame here), at each sample; the work over the last interval
    goes to `energy_from_env_j` when the environment pushed the tool along its motion (energy coming
    back towards the console) and to `energy_to_env_j` otherwise."""

    def __init__(self) -> None:
        self.energy_from_env_j = 0.0
        self.energy_to_env_j = 0.0
        self._last: np.ndarray | None = None

    def observe(self, force: np.ndarray, position: np.ndarray) -> None:
        position = np.array(position, dtype=float)
        if self._last is not None:
            work = float(np.dot(force, position - self._last))
            if work > 0.0:
                self.energy_from_env_j += work
            else:
                self.energy_to_env_j -= work
        self._last = position


class ForceSampler:
    """Per-arm contact force + tool-port energy observer, decimated from the servo rate."""

    def __init__(self, arms: Mapping[str, Arm], arm_names: Sequence[str], servo_rate_hz: float,
                 force_hz: float = DEFAULT_FORCE_HZ) -> None:
        if not 0.0 < force_hz <= servo_rate_hz:
            raise ValueError(f"force_hz={force_hz}: must be > 0 and <= the servo rate {servo_rate_hz}")
        self._arms = {n: arms[n] for n in arm_names if measured_cf_of(arms[n]) is not None}
        self._ids = {n: (ArmId[n].value if n in ArmId.__members__ else i) for i, n in enumerate(arm_names)}
        self._every = max(1, round(servo_rate_hz / force_hz))
        self._count = 0
        self.observers = {n: ToolPortObserver() for n in self._arms}

    def sample(self, now: float) -> ForceFeedback | None:
        """Call once per servo period; a message every `servo_rate / force_hz` calls, else None."""
        self._count += 1
        if self._count % self._every or not self._arms:
            return None
        arms = []
        for name, arm in self._arms.items():
            force_tool = measured_cf_of(arm)
            pose = arm.measured_cp()
            observer = self.observers[name]
            observer.observe(quat_to_matrix(np.asarray(pose.orientation, dtype=float)) @ force_tool, pose.position)
            arms.append(ArmForce(self._ids[name], tuple(float(v) for v in force_tool),
                                 tuple(float(v) for v in pose.orientation),
                                 observer.energy_from_env_j, observer.energy_to_env_j))
        return ForceFeedback(now, tuple(arms))
