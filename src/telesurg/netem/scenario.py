"""Scenario timelines: replayable network faults per path (down/up, loss, delay), relay or virtual clock.

A scenario TOML file is a list of `[[event]]` tables:

    [[event]]
    at = 2.0          # seconds from the start of the run
    path = "a"        # a path name, or "*" for every path
    action = "down"   # "down", "up" or "set" (with any of delay_ms, jitter_ms, loss, reorder,
                      # duplicate, corrupt: the fields of netem.core.Impairment of the same names)
    duration = 3.0    # optional: undo the event after this many seconds

Auto-revert of `down` is `up` (and of `up` is `down`); auto-revert of `set` restores the profile's
values of the fields it changed. `ScenarioPlayer` is sans-I/O: it hands out due actions for a `now`.
"""

from __future__ import annotations

import heapq
import tomllib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from telesurg.netem.core import SETTABLE_FIELDS
from telesurg.netem.errors import NetemConfigError, describe_validation_error

ALL_PATHS = "*"


class ScenarioEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: float = Field(ge=0, description="seconds from the start of the run")
    path: str = Field(min_length=1, description="path name, or '*' for all paths")
    action: Literal["down", "up", "set"]
    delay_ms: float | None = Field(None, ge=0, description="new one-way delay in ms (set only)")
    jitter_ms: float | None = Field(None, ge=0, description="new jitter in ms (set only)")
    loss: float | None = Field(None, ge=0, le=1, description="new loss probability 0..1 (set only)")
    reorder: float | None = Field(None, ge=0, le=1, description="new reordering probability 0..1 (set only)")
    duplicate: float | None = Field(None, ge=0, le=1, description="new duplication probability 0..1 (set only)")
    corrupt: float | None = Field(None, ge=0, le=1, description="new bit-flip probability 0..1 (set only)")
    duration: float | None = Field(None, gt=0, description="seconds until the event is undone; omit to keep")

    @model_validator(mode="after")
    def _changes_match_action(self) -> ScenarioEvent:
        if self.action == "set" and not self.changes:
            raise ValueError(f"action 'set' needs at least one of {', '.join(SETTABLE_FIELDS)}")
        if self.action != "set" and self.changes:
            raise ValueError(
                f"action {self.action!r} takes no {', '.join(self.changes)}; use action = 'set' for those"
            )
        return self

    @property
    def changes(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in SETTABLE_FIELDS if getattr(self, name) is not None}


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    description: str = ""
    events: list[ScenarioEvent] = Field(default_factory=list, alias="event", description="[[event]] tables")

    def check_paths(self, path_names: Iterable[str]) -> None:
        """Raise `NetemConfigError` if an event names a path the profile does not have."""
        known = set(path_names)
        for index, event in enumerate(self.events):
            if event.path != ALL_PATHS and event.path not in known:
                raise NetemConfigError(
                    f"scenario event[{index}].path: no path {event.path!r} in the profile; "
                    f"use one of {sorted(known)} or '*'"
                )


class ScenarioAction(NamedTuple):
    """What to do now. `action` is down/up/set, or `revert` (changes name the fields to restore)."""

    at: float
    path: str
    action: Literal["down", "up", "set", "revert"]
    changes: dict[str, Any]


_REVERSE = {"down": "up", "up": "down"}


class ScenarioPlayer:
    """Sans-I/O timeline: `due(now)` returns actions whose time has come, auto-reverts included."""

    def __init__(self, scenario: Scenario, start: float = 0.0) -> None:
        self._heap: list[tuple[float, int, ScenarioAction]] = []
        self._seq = 0
        for event in scenario.events:
            t = start + event.at
            self._push(ScenarioAction(t, event.path, event.action, event.changes))
            if event.duration is not None:
                end = t + event.duration
                if event.action == "set":
                    self._push(ScenarioAction(end, event.path, "revert", dict.fromkeys(event.changes)))
                else:
                    self._push(ScenarioAction(end, event.path, _REVERSE[event.action], {}))

    def _push(self, action: ScenarioAction) -> None:
        self._seq += 1  # keeps file order for events at the same time
        heapq.heappush(self._heap, (action.at, self._seq, action))

    def due(self, now: float) -> list[ScenarioAction]:
        out = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[2])
        return out

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None


def parse_scenario(data: dict[str, Any], source: str = "scenario") -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise describe_validation_error(source, exc) from None


def list_scenarios() -> list[str]:
    root = resources.files("telesurg.netem") / "scenarios"
    return sorted(entry.name[:-5] for entry in root.iterdir() if entry.name.endswith(".toml"))


def load_scenario(path: str | Path) -> Scenario:
    """Load a scenario TOML file, or a shipped scenario by name (`cut-path-a`)."""
    file = Path(path)
    if file.suffix == ".toml" or file.exists():
        try:
            text, source = file.read_text(encoding="utf-8"), str(file)
        except OSError as exc:
            raise NetemConfigError(f"cannot read scenario file {file}: {exc.strerror}") from None
    else:
        resource = resources.files("telesurg.netem") / "scenarios" / f"{path}.toml"
        if not resource.is_file():
            raise NetemConfigError(
                f"unknown scenario {str(path)!r}: use one of {', '.join(list_scenarios())} "
                "or the path of a .toml scenario file"
            )
        text, source = resource.read_text(encoding="utf-8"), f"scenario {str(path)!r}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise NetemConfigError(f"{source}: not valid TOML: {exc}") from None
    return parse_scenario(data, source)
