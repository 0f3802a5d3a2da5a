"""Link configuration: pydantic v2 models whose errors name the field and the fix.

`LinkConfig` is what a site's TOML holds (file paths); `LinkSettings` is the same thing in memory
(certificate PEMs), which tests and embedded demos build directly without touching the disk.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from telesurg.link.keys import read_cert


def parse_hostport(value: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); ValueError with the expected form otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port (e.g. 127.0.0.1:47001), got {value!r}")
    return host, int(port)


class PathConfig(BaseModel):
    """One network path: where we bind and (on the side that dials) where the peer listens."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=32)
    local: str  # "127.0.0.1:47001"
    remote: str | None = None  # None on a server that learns the peer's address from authenticated traffic

    @field_validator("local", "remote")
    @classmethod
    def _hostport(cls, value: str | None) -> str | None:
        if value is not None:
            parse_hostport(value)
        return value


class LinkTuning(BaseModel):
    """Timing and safety knobs shared by file-based and in-memory configuration."""

    model_config = ConfigDict(extra="forbid")
    allowed_fingerprints: list[str] = []  # optional extra pin; empty = any cert in the allowlist
    allowed_cidrs: list[str] = []  # optional source-address filter (checked before any TLS work)
    probe_hz: float = Field(20.0, ge=1.0, le=1000.0)
    rekey_s: float = Field(120.0, gt=0.0, le=120.0)  # WireGuard's 120 s is the upper bound
    epoch_grace_s: float = Field(5.0, gt=0.0)
    down_after_s: float = Field(0.25, gt=0.0)  # silence on a path before it is declared DOWN
    suspect_after_s: float = Field(0.03, gt=0.0)  # silence after which control is doubled on the other path
    recover_replies: int = Field(3, ge=1)  # consecutive probe replies before a DOWN path is used as UP
    probe_timeout_s: float = Field(1.0, gt=0.0)
    loss_window: int = Field(100, ge=10)  # probes over which loss % is computed
    degraded_loss_pct: float = Field(2.0, gt=0.0, le=100.0)
    recover_loss_pct: float = Field(0.5, ge=0.0, le=100.0)
    degraded_rtt_ms: float = Field(300.0, gt=0.0)  # "alarm" level of DESIGN.md section 3
    handshake_timeout_s: float = Field(10.0, gt=0.0)
    # No authenticated datagram on any path for this long: the peer is gone (crashed, rebooted), the
    # session ends ("peer_silent"). Raven II's ITP uses a 5 s link timeout; the robot's own safety
    # reacts long before (watchdog 50 ms, latch 1 s), this only frees the session.
    session_timeout_s: float = Field(5.0, gt=0.0)
    # Client only: when an established session ends because the peer fell silent or closed it (not
    # when we closed it, nor when a newer session of ours replaced it), start a new handshake at once
    # and keep trying, so a console finds a restarted robot by itself.
    reconnect: bool = False
    max_half_open: int = Field(8, ge=1)
    handshake_rate_per_s: float = Field(2.0, gt=0.0)  # new handshakes per source address
    handshake_burst: int = Field(4, ge=1)
    video_queue_max: int = Field(256, ge=1)

    @field_validator("allowed_fingerprints")
    @classmethod
    def _fingerprints(cls, values: list[str]) -> list[str]:
        out = []
        for value in values:
            clean = value.replace(":", "").lower()
            if len(clean) != 64 or any(c not in "0123456789abcdef" for c in clean):
                raise ValueError(f"expected a SHA-256 hex fingerprint (64 hex digits), got {value!r}")
            out.append(clean)
        return out

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(f"expected a CIDR such as 10.0.0.0/8, got {value!r}") from None
        return values

    @model_validator(mode="after")
    def _hysteresis(self) -> LinkTuning:
        if self.recover_loss_pct >= self.degraded_loss_pct:
            raise ValueError("recover_loss_pct must be below degraded_loss_pct (hysteresis)")
        return self


class LinkSettings(LinkTuning):
    """In-memory form: path names and trusted peer certificates as PEM bytes."""

    path_names: list[str] = Field(min_length=1)
    peer_certs_pem: list[bytes] = Field(min_length=1)

    @field_validator("path_names")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("path names must be unique")
        return names


class LinkConfig(LinkTuning):
    """File-based form, as written in robot.toml / console.toml."""

    identity_cert: Path
    identity_key: Path
    peer_certs: list[Path] = Field(min_length=1)  # allowlist: trusted peer certificates
    paths: list[PathConfig] = Field(min_length=1)

    @field_validator("paths")
    @classmethod
    def _unique_paths(cls, paths: list[PathConfig]) -> list[PathConfig]:
        names = [p.name for p in paths]
        if len(set(names)) != len(names):
            raise ValueError(f"path names must be unique, got {names}")
        return paths

    def to_settings(self) -> LinkSettings:
        """Read the peer certificates (IdentityError names a bad file)."""
        return LinkSettings(
            path_names=[p.name for p in self.paths],
            peer_certs_pem=[read_cert(p) for p in self.peer_certs],
            **self.model_dump(exclude={"identity_cert", "identity_key", "peer_certs", "paths"}),
        )
