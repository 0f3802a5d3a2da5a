"""Who may do what at the robot: the roles of the consoles in `robot.toml` (`[[robot.consoles]]`).

- `lead`: controls arms; the arms listed are given to it when it connects (if nobody else has them);
- `consultant`: sees everything and may request control of an arm (a handover, robot/ownership.py);
- `observer`: telemetry and video only; never controls an arm, its requests are refused.

The patient-side console (`local`) is above all of them (DESIGN.md §4.6) and needs no entry. An
authenticated console with no entry is an observer: being in the link's allowlist lets it connect,
this roster decides whether it may move anything.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

INSTRUMENT_ARMS = ("PSM1", "PSM2")
LOCAL_SLOT = 255  # the patient-side console, in telemetry's owner byte
NO_OWNER_SLOT = 0


class Role(enum.StrEnum):
    LEAD = "lead"
    CONSULTANT = "consultant"
    OBSERVER = "observer"


class ConsoleEntry(BaseModel):
    """One console identity (the name in its certificate) and what it may do."""

    model_config = ConfigDict(extra="forbid")
    identity: str = Field(min_length=1, description="certificate name of the console (telesurg keys --name)")
    role: Role = Field(description="lead, consultant or observer")
    arms: list[str] = Field(default_factory=list, description="lead only: arms it gets when it connects")

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: object) -> object:
        if isinstance(value, str) and value not in {r.value for r in Role}:
            raise ValueError(f"unknown role {value!r}: use one of lead, consultant, observer")
        return value


class Roster:
    """The validated roles, with the slot number each identity has in telemetry (1, 2, ...)."""

    def __init__(self, entries: Sequence[ConsoleEntry], arm_names: Iterable[str], *,
                 default_role: Role = Role.OBSERVER) -> None:
        self.arm_names = tuple(arm_names)
        self.default_role = default_role
        self._entries = {e.identity: e for e in entries}
        self._slots = {e.identity: i + 1 for i, e in enumerate(entries)}
        problems = validate_entries(entries, self.arm_names)
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def single_lead(cls, identity: str | None, arm_names: Iterable[str]) -> Roster:
        """No roster configured: `identity` (or, if None, whoever connects) leads every arm."""
        arms = list(arm_names)
        if identity is None:
            return cls([], arms, default_role=Role.LEAD)
        return cls([ConsoleEntry(identity=identity, role=Role.LEAD, arms=arms)], arms)

    def role(self, identity: str) -> Role:
        entry = self._entries.get(identity)
        return entry.role if entry is not None else self.default_role

    def lead_arms(self, identity: str) -> tuple[str, ...]:
        entry = self._entries.get(identity)
        if entry is None:
            return self.arm_names if self.default_role is Role.LEAD else ()
        return tuple(entry.arms) if entry.role is Role.LEAD else ()

    def slot(self, identity: str) -> int:
        """A small stable number for telemetry; identities outside the roster get the next free ones."""
        slot = self._slots.get(identity)
        if slot is None:
            slot = self._slots[identity] = min(len(self._slots) + 1, LOCAL_SLOT - 1)
        return slot

    def entries(self) -> list[ConsoleEntry]:
        return list(self._entries.values())


def validate_entries(entries: Sequence[ConsoleEntry], arm_names: Sequence[str]) -> list[str]:
    """Each problem names the field and the fix: duplicate identities, unknown arms, two leads for an arm."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    owner: dict[str, str] = {}
    for i, entry in enumerate(entries):
        where = f"robot.consoles.{i}"
        if entry.identity in seen:
            problems.append(f"{where}.identity: {entry.identity!r} is already listed as robot.consoles."
                            f"{seen[entry.identity]}; give each console one entry")
        seen[entry.identity] = i
        if entry.arms and entry.role is not Role.LEAD:
            problems.append(f"{where}.arms: only a lead is given arms at start; remove arms from this "
                            f"{entry.role.value} (it requests control instead)")
        for arm in entry.arms:
            if arm not in arm_names:
                problems.append(f"{where}.arms: unknown arm {arm!r}; this robot has {list(arm_names)}")
            elif arm in owner and entry.role is Role.LEAD:
                problems.append(f"{where}.arms: {arm} is already led by {owner[arm]!r}; one lead per arm "
                                "(make the other a consultant, or give it other arms)")
            elif entry.role is Role.LEAD:
                owner[arm] = entry.identity
    return problems
