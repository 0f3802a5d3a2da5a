"""Site configuration files (`robot.toml`, `console.toml`): TOML in, validated objects out.

One loader for both sites so every error reads the same way: the file, the dotted field and the fix,
on one line (`console.toml: link.paths.1.remote: expected host:port ...`). Relative file paths inside
a config are resolved against the config file's folder, so a site folder can be moved as a whole.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from telesurg.console.config import ConsoleConfig
from telesurg.link.config import LinkConfig
from telesurg.robot.roles import INSTRUMENT_ARMS, ConsoleEntry, validate_entries
from telesurg.robot.safety_config import SupervisorConfig


class ConfigError(ValueError):
    """A configuration problem, phrased for the person editing the file."""


class VideoConfig(BaseModel):
    """Stereo endoscope stream (robot side sends, console side shows)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    width: int = Field(640, ge=64, le=3840)
    height: int = Field(360, ge=64, le=2160)
    fps: float = Field(15.0, gt=0, le=120)
    bitrate_kbps: int = Field(2500, ge=100, le=50000)
    source: Literal["sim-endoscope", "test-pattern"] = Field(
        "sim-endoscope", description="robot side: the simulated stereo endoscope, or a synthetic moving pattern "
                                     "(tests the transport without the CPU renderer's cost)")

    def overridden(self, **changes: object) -> VideoConfig:
        """A validated copy with the given fields changed (command-line overrides); None keeps a field."""
        return VideoConfig.model_validate({**self.model_dump(), **{k: v for k, v in changes.items() if v is not None}})


class SiteInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)


class RobotSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    servo_hz: float = Field(1000.0, ge=100, le=5000)
    telemetry_hz: float = Field(100.0, ge=1, le=1000)
    force_hz: float = Field(0.0, ge=0, le=1000, description="tool force messages per second for force feedback "
                                                            "(robot/force_feedback.py); 0 = off, 500 with haptics")
    controller: str | None = Field(None, description="certificate name of the console given the arms at start "
                                                      "(when no [[robot.consoles]] roster is given)")
    consoles: list[ConsoleEntry] = Field(default_factory=list, description="roles of the consoles (robot/roles.py)")

    @model_validator(mode="after")
    def _roster(self) -> RobotSection:
        problems = validate_entries(self.consoles, INSTRUMENT_ARMS)
        if problems:
            raise ValueError("; ".join(p.removeprefix("robot.") for p in problems))
        if self.consoles and self.controller is not None:
            raise ValueError("controller: with a [[robot.consoles]] roster, give the arms with a lead's `arms` "
                             "and remove `controller`")
        return self


class RobotSiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site: SiteInfo
    link: LinkConfig
    robot: RobotSection = RobotSection()
    safety: SupervisorConfig = SupervisorConfig()
    video: VideoConfig = VideoConfig()


class ConsoleSiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site: SiteInfo
    link: LinkConfig
    console: ConsoleConfig = ConsoleConfig()
    video: VideoConfig = VideoConfig()


Model = TypeVar("Model", bound=BaseModel)


def _resolve_paths(raw: dict, base: Path) -> dict:
    link = raw.get("link")
    if isinstance(link, dict):
        for key in ("identity_cert", "identity_key"):
            if isinstance(link.get(key), str):
                link[key] = str((base / link[key]).resolve())
        if isinstance(link.get("peer_certs"), list):
            link["peer_certs"] = [str((base / p).resolve()) if isinstance(p, str) else p
                                  for p in link["peer_certs"]]
    return raw


def format_validation_error(source: str, error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{source}: {where}: {message}")
    return "; ".join(parts)


def load_config(path: Path | str, model: type[Model], *, table: str | None = None,
                missing_hint: str = "create a site pair with `telesurg init DIR`") -> Model:
    """Read and validate a TOML file (or its `[table]`, when present); raise ConfigError with a one-line,
    field-naming message."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file ({missing_hint})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if table is not None and isinstance(raw.get(table), dict):
        raw = raw[table]
    try:
        return model.model_validate(_resolve_paths(raw, path.parent))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path.name, exc)) from None
