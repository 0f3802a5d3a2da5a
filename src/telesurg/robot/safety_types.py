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
