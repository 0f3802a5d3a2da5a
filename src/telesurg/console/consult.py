"""A scripted consultant: takes an arm when it is handed over, shows something, and hands it back.

For the several-console demo and tests (`telesurg console --script consult`): while another console
owns the arm, this master rests; once the console follows with it (after the handover's alignment
and re-engage), the tool traces one small closed loop, so it ends where it began and the lead can
carry on where it stopped, and then the consultant is `finished` and its console releases the arm.

It is a motorised master (`HapticMaster`): asked to align, it turns onto the tool; its jaw is the
tool's own (`set_tool_jaw`), so a ring held in the jaws stays held through the handover.
"""

from __future__ import annotations

import math

from telesurg.console import quat
from telesurg.console.inputs import ArmMasterState, MasterState
from telesurg.console.quat import Quat, Vec3
from telesurg.messages import ArmId


class ConsultantInput:
    """Master poses of a consultant who, per arm it is given, draws one loop of `radius_m` (tool space)."""

    def __init__(self, arms: list[ArmId], scale: float, *, radius_m: float = 0.005, loop_s: float = 3.0,
                 press_period_s: float = 0.5, press_s: float = 0.05) -> None:
        if scale <= 0 or radius_m < 0 or loop_s <= 0:
            raise ValueError("scale and loop_s must be > 0, radius_m >= 0")
        self._arms = list(arms)
        self._radius = radius_m / scale  # master-space radius
        self._loop_s = loop_s
        self._press_period, self._press = press_period_s, press_s
        self._orientation: dict[ArmId, Quat] = dict.fromkeys(self._arms, quat.IDENTITY)
        self._jaw: dict[ArmId, float] = dict.fromkeys(self._arms, 0.0)
        self._started: dict[ArmId, float] = {}
        self.loops_done: dict[ArmId, int] = dict.fromkeys(self._arms, 0)

    def started(self, arm: ArmId, now: float) -> None:
        """The console follows with `arm` now: the loop starts (once per handover)."""
        self._started.setdefault(arm, now)

    def finished(self, arm: ArmId, now: float) -> bool:
        """The loop on `arm` is done; `reset(arm)` before the next handover."""
        t0 = self._started.get(arm)
        return t0 is not None and now - t0 >= self._loop_s

    def reset(self, arm: ArmId) -> None:
        if self._started.pop(arm, None) is not None:
            self.loops_done[arm] += 1

    def set_tool_jaw(self, arm: ArmId, jaw: float) -> None:
        if arm not in self._started:  # keep the jaw as the tool has it while waiting for the arm
            self._jaw[arm] = jaw

    def sample(self, now: float) -> MasterState:
        pressed = now % self._press_period >= self._press_period - self._press
        arms = {}
        for arm in self._arms:
            arms[arm] = ArmMasterState(self._offset(arm, now), self._orientation[arm], self._jaw[arm],
                                       reengage=pressed and arm not in self._started)
        return MasterState(now, arms)

    def _offset(self, arm: ArmId, now: float) -> Vec3:
        t0 = self._started.get(arm)
        if t0 is None:
            return (0.0, 0.0, 0.0)
        phase = min(max((now - t0) / self._loop_s, 0.0), 1.0)
        s = 0.5 - 0.5 * math.cos(math.pi * phase)  # eased: starts and ends at rest
        a = 2.0 * math.pi * s
        return (self._radius * (math.cos(a) - 1.0), self._radius * math.sin(a), 0.0)

    def align_to(self, arm: ArmId, orientation: Quat, now: float) -> None:
        if arm in self._orientation:
            self._orientation[arm] = quat.normalize(orientation)

    def set_force(self, arm: ArmId, force_xyz: Vec3, now: float) -> None:
        """A script feels nothing."""

    def close(self) -> None:
        pass
