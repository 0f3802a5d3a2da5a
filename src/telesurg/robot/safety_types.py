"""Records the safety supervisor hands out: states, decisions, setpoints, transitions and holds.

Kept apart from the state machine (robot/supervisor.py) so the servo loop, telemetry and reports can
use them without importing the logic; `telesurg.robot.supervisor` re-exports every name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from telesurg.robot.driver import Pose


class SupervisorState(enum.IntEnum):
    DISABLED = 0
    HOMING = 1
    READY = 2
    FOLLOWING = 3
    HOLD = 4
    LATCHED = 5
    FAULT = 6


class Outcome(enum.Enum):
    APPLIED = "applied"
    CLIPPED = "clipped"  # applied, but a value was brought inside its limit (jaw range)
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.outcome is not Outcome.REJECTED


@dataclass(frozen=True, slots=True)
class Setpoint:
    """One servo period's safe setpoint for one arm."""

    pose: Pose
    jaw: float


@dataclass(frozen=True, slots=True)
class Transition:
    at_s: float
    arm: str
    from_state: SupervisorState
    to_state: SupervisorState
    cause: str


@dataclass(slots=True)
class HoldRecord:
    at_s: float
    arm: str
    reaction_ms: float  # time from the last valid command to the hold
    cause: str
    resumed_by: str | None = None  # operator action that ended it, None while still held

    def as_dict(self) -> dict[str, object]:
        return {"at_s": self.at_s, "arm": self.arm, "reaction_ms": self.reaction_ms, "cause": self.cause,
                "resumed_by": self.resumed_by}


@dataclass(slots=True)
class HandoverRecord:
    """One change of an arm's owner, and how long the arm was without an applied command across it.

    `gap_ms` runs from the old owner's last applied command to the new owner's first; `align_ms` is
    the part of it after the grant (the notice's trip to the new console, its alignment and its
    re-engage command's trip back), so `gap_ms - align_ms` is what the handover itself cost."""

    at_s: float  # when the new owner was given the arm
    arm: str
    from_sender: str | None
    to_sender: str
    reason: str
    last_old_applied_s: float | None
    first_new_applied_s: float | None = None
    moved_m: float | None = None  # measured tool displacement between the grant and the first new command

    @property
    def gap_ms(self) -> float | None:
        if self.first_new_applied_s is None or self.last_old_applied_s is None:
            return None
        return 1000.0 * (self.first_new_applied_s - self.last_old_applied_s)

    @property
    def align_ms(self) -> float | None:
        return None if self.first_new_applied_s is None else 1000.0 * (self.first_new_applied_s - self.at_s)
