"""The CRTK operating states of an arm, shared by the MuJoCo arm (sim_arm.py) and the kinematic
driver (kinematic_driver.py), so a second driver cannot drift from the first in what `enable`,
`home`, `pause` or a FAULT mean (DISABLED/ENABLED/PAUSED/FAULT, homing; servo and move commands
count as `ignored_commands` unless ENABLED and homed).

A driver's arm supplies the joint-space details: `_set_goal(q, speed_scale, busy)`,
`_resync_setpoint()` (start from where the arm is), `_setpoint_goal()` and `_home_goal()` (fresh goal
objects at the setpoint and at home), and the state fields named below.
"""

from __future__ import annotations

import logging
from typing import Any

from .driver import OperatingState

STATE_COMMANDS = ("enable", "disable", "home", "pause", "resume")


class CrtkArmStates:
    """Mixin: `state_command`, `servo_jp`, `move_jp` and the checks behind them (see the module doc)."""

    _log: logging.Logger = logging.getLogger(__name__)  # each driver logs under its own name
    name: str
    fault_reason: str | None
    ignored_commands: int
    _state: OperatingState
    _homed: bool
    _homing: bool
    _busy: bool
    _moving: bool
    _speed_scale: float
    _goal: Any
    _jaw_goal: float
    _jaw_setpoint: float

    def _set_goal(self, q: Any, speed_scale: float, busy: bool) -> None:
        raise NotImplementedError

    def _resync_setpoint(self) -> None:
        raise NotImplementedError

    def _setpoint_goal(self) -> Any:
        raise NotImplementedError

    def _home_goal(self) -> Any:
        raise NotImplementedError

    def _accepting(self) -> bool:
        if self._state is OperatingState.ENABLED and self._homed and not self._homing:
            return True
        self.ignored_commands += 1
        return False

    def servo_jp(self, q: Any) -> None:
        if self._accepting():
            self._set_goal(q, 1.0, False)

    def move_jp(self, q: Any) -> None:
        """Planned move at half the velocity limits; `is_busy` until the setpoint arrives."""
        if self._accepting():
            self._set_goal(q, 0.5, True)

    def state_command(self, command: str) -> None:
        if command not in STATE_COMMANDS:
            raise ValueError(f"{self.name}: unknown state command {command!r}; expected one of {STATE_COMMANDS}")
        state = self._state
        if command == "disable":
            self._enter(OperatingState.DISABLED, "disable")
            self._homing = self._busy = False
        elif state is OperatingState.FAULT:
            self._log.warning("%s: %r refused in FAULT (%s); send 'disable' first", self.name, command, self.fault_reason)
        elif command == "enable" and state is OperatingState.DISABLED:
            self._resync_setpoint()
            self._enter(OperatingState.ENABLED, "enable")
        elif command == "home" and state is not OperatingState.PAUSED:
            if state is OperatingState.DISABLED:
                self._resync_setpoint()
            self._enter(OperatingState.ENABLED, "home")
            self._goal, self._speed_scale, self._moving = self._home_goal(), 0.5, True
            self._homing, self._homed, self._jaw_goal = True, False, 0.0
        elif command == "pause" and state is OperatingState.ENABLED:
            self._enter(OperatingState.PAUSED, "pause")
        elif command == "resume" and state is OperatingState.PAUSED:
            self._enter(OperatingState.ENABLED, "resume")
        else:
            self._log.warning("%s: %r ignored in state %s", self.name, command, state.name)

    def _enter(self, state: OperatingState, cause: str) -> None:
        if state is not self._state:
            self._log.info("%s: %s -> %s (%s)", self.name, self._state.name, state.name, cause)
        if state is not OperatingState.ENABLED:  # hold where the setpoint is now
            self._goal = self._setpoint_goal()
            self._jaw_goal = self._jaw_setpoint
            self._moving = False
        self._state = state
