"""WAN profiles: named sets of paths, each with forward (console→robot) and reverse impairments.

Profiles are TOML files shipped in `telesurg/netem/profiles/` (found with `importlib.resources`) or any
file path. A path may give `both = {...}` for impairments common to both directions; `forward` and
`reverse` tables then override single fields.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from telesurg.netem.core import Impairment
from telesurg.netem.errors import NetemConfigError, describe_validation_error

_PACKAGE = "telesurg.netem"  # profiles live in its `profiles/` folder (next to this module)


class PathProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="path name, e.g. 'a' (letters, digits, _ -)")
    forward: Impairment = Field(default_factory=Impairment, description="console → robot direction")
    reverse: Impairment = Field(default_factory=Impairment, description="robot → console direction")

    @model_validator(mode="before")
    @classmethod
    def _expand_both(cls, data: Any) -> Any:
        if isinstance(data, dict) and "both" in data:
            data = dict(data)
            both = data.pop("both")
            if not isinstance(both, dict):
                raise ValueError("'both' must be a table of impairment fields, e.g. both = { delay_ms = 50 }")
            for direction in ("forward", "reverse"):
                extra = data.get(direction) or {}
                if isinstance(extra, Impairment):
                    extra = extra.model_dump(exclude_unset=True)
                data[direction] = {**both, **extra}
        return data


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(min_length=1)
    description: str = ""
    paths: list[PathProfile] = Field(min_length=1, alias="path", description="one [[path]] table per path")

    @field_validator("paths")
    @classmethod
    def _unique_names(cls, paths: list[PathProfile]) -> list[PathProfile]:
        names = [p.name for p in paths]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"path names must be unique; rename the duplicate(s) {dupes}")
        return paths

    @property
    def path_names(self) -> list[str]:
        return [p.name for p in self.paths]

    def path(self, name: str) -> PathProfile:
        for p in self.paths:
            if p.name == name:
                return p
        raise KeyError(f"profile {self.name!r} has no path {name!r}; its paths are {self.path_names}")


def list_profiles() -> list[str]:
    """Names of the profiles shipped with telesurg."""
    root = resources.files(_PACKAGE) / "profiles"
    return sorted(entry.name[:-5] for entry in root.iterdir() if entry.name.endswith(".toml"))


def parse_profile(data: dict[str, Any], source: str = "profile") -> Profile:
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise describe_validation_error(source, exc) from None


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a shipped profile by name (`shanghai-casablanca`) or a profile TOML file by path."""
    text, source = _read(str(name_or_path))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise NetemConfigError(f"{source}: not valid TOML: {exc}") from None
    return parse_profile(data, source)


def _read(name_or_path: str) -> tuple[str, str]:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise NetemConfigError(f"cannot read profile file {path}: {exc.strerror}") from None
    resource = resources.files(_PACKAGE) / "profiles" / f"{name_or_path}.toml"
    if not resource.is_file():
        raise NetemConfigError(
            f"unknown profile {name_or_path!r}: use one of {', '.join(list_profiles())} "
            "or the path of a .toml profile file"
        )
    return resource.read_text(encoding="utf-8"), f"profile {name_or_path!r}"
