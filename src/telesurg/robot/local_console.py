"""The patient-side console: takeover and emergency stop, with priority over every network sender.

Invariant 6 (DESIGN.md §4): the surgeon beside the patient outranks anyone abroad. A takeover gives
the local identity control of one or all arms and locks them, so a network `assign` is refused until
the local side hands the arm back; the moving arm holds, and the local surgeon re-engages (aligned)
like anyone else. The emergency stop sends every arm to FAULT and disabled at once and stays latched
until the local operator releases it and resets each arm.

Sans-I/O like the supervisor: every call takes `now`. In the running robot, call these through
`ServoLoop.operator(...)`, which runs operator actions at the start of the next servo period, before
any network command of that period. `KeyboardConsole` is a minimal line-based front end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from telesurg.robot.supervisor import LOCAL_SENDER, SafetySupervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OperatorEvent:
    at_s: float
    action: str
    arms: tuple[str, ...]


class LocalConsole:
    """Operator actions of the patient-side console, applied to a supervisor."""

    identity = LOCAL_SENDER

    def __init__(self, supervisor: SafetySupervisor) -> None:
        self.supervisor = supervisor
        self.events: list[OperatorEvent] = []
        self._returned_to: dict[str, str | None] = {}

    def takeover(self, now: float, arm: str | None = None) -> None:
        """Take control of `arm` (or every arm); network senders are refused until `hand_back`."""
        arms = self._arms(arm)
        for name in arms:
            self._returned_to.setdefault(name, self.supervisor.controller(name))
            self.supervisor.set_local_lock(name, True)
            self.supervisor.assign(name, LOCAL_SENDER, now, local=True, cause="takeover")
        self._record(now, "takeover", arms)

    def hand_back(self, now: float, arm: str | None = None, to: str | None = None) -> None:
        """Release the lock and give the arm to `to` (default: whoever had it before the takeover)."""
        arms = self._arms(arm)
        for name in arms:
            self.supervisor.set_local_lock(name, False)
            sender = to if to is not None else self._returned_to.pop(name, None)
            if sender is not None:
                self.supervisor.assign(name, sender, now, local=True, cause="hand_back")
        self._record(now, "hand_back", arms)

    def emergency_stop(self, now: float) -> None:
        self.supervisor.emergency_stop(now, cause="local_estop")
        self._record(now, "emergency_stop", tuple(self.supervisor.arm_names))

    def release_estop(self, now: float) -> None:
        """Release the e-stop and reset every arm to DISABLED; `enable` homes them again."""
        self.supervisor.release_estop(now)
        self.supervisor.reset_fault(None, now)
        self._record(now, "release_estop", tuple(self.supervisor.arm_names))

    def enable(self, now: float, arm: str | None = None) -> None:
        self.supervisor.enable(arm, now)
        self._record(now, "enable", self._arms(arm))

    def clear_latch(self, now: float, arm: str | None = None) -> None:
        self.supervisor.clear_latch(arm, now)
        self._record(now, "clear_latch", self._arms(arm))

    def _arms(self, arm: str | None) -> tuple[str, ...]:
        return tuple(self.supervisor.arm_names) if arm is None else (arm,)

    def _record(self, now: float, action: str, arms: tuple[str, ...]) -> None:
        self.events.append(OperatorEvent(now, action, arms))
        log.warning("t=%.3f local console: %s %s", now, action, ",".join(arms))


# A keyboard front end: one command per line, so it works on any terminal and over a serial console.
_KEYS = {
    "e": ("emergency_stop", False), "estop": ("emergency_stop", False),
    "t": ("takeover", True), "takeover": ("takeover", True),
    "h": ("hand_back", True), "handback": ("hand_back", True),
    "r": ("release_estop", False), "release": ("release_estop", False),
    "n": ("enable", True), "enable": ("enable", True),
    "c": ("clear_latch", True), "clear": ("clear_latch", True),
}


class KeyboardConsole:
    """Parses lines like `e`, `t PSM1`, `h`, `c PSM2` into operator actions.

    `submit` is how an action reaches the supervisor: in the robot that is `ServoLoop.operator`, so
    the action runs on the servo thread with the servo clock."""

    help = "e=emergency stop  t [ARM]=takeover  h [ARM]=hand back  r=release e-stop  n [ARM]=enable  c [ARM]=clear latch"

    def __init__(self, submit: Callable[[Callable[[LocalConsole, float], None]], None]) -> None:
        self._submit = submit

    def handle_line(self, line: str) -> str:
        words = line.strip().split()
        if not words:
            return self.help
        entry = _KEYS.get(words[0].lower())
        if entry is None:
            return f"unknown command {words[0]!r}; {self.help}"
        method, takes_arm = entry
        arm = words[1].upper() if takes_arm and len(words) > 1 else None

        def action(console: LocalConsole, now: float) -> None:
            fn = getattr(console, method)
            if takes_arm:
                fn(now, arm)
            else:
                fn(now)

        self._submit(action)
        return f"{method} {arm or ''}".strip()
