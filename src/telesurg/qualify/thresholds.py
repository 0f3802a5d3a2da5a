"""Go / no-go limits, with defaults from the literature (DESIGN.md §3), overridable from a TOML file.

RTT: Xu et al. (Surg Endosc 2014) rate ≤ 200 ms ideal, 300 ms suitable, 400–500 ms tiring; Marescaux
(Ann Surg 2002) judged > 330 ms unsafe; hence warn 200 / alarm (no-go) 300 / critical 500 ms, the last
applied to the tail (p99.9). Loss: per-path warn 0.5 %, alarm 1 % (KangDuo required < 1 %, Minerva Urol
Nephrol 2024). Jitter: dedicated links measure ~0.4 ms (Int J Surg 2025); 10 ms is a generous no-go.
A loss burst longer than the 50 ms supervisor watchdog would hold the robot if it hit both paths.
Failover: a single-path outage must lose no command (the link sends every command on every path).
Watchdog: hold 50 ms after the last valid command (DESIGN §4), plus one servo period and scheduling.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from telesurg.site_config import ConfigError, load_config


class ThresholdError(ValueError):
    """A thresholds file that cannot be used; the message names the field and the fix."""


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rtt_warn_ms: float = Field(200.0, gt=0, description="p99 RTT above this: go with a warning (Xu 2014)")
    rtt_alarm_ms: float = Field(300.0, gt=0, description="p99 RTT above this: no-go (Xu 2014; Marescaux 2002)")
    rtt_critical_ms: float = Field(500.0, gt=0, description="p99.9 RTT above this: no-go")
    loss_warn_pct: float = Field(0.5, ge=0, le=100, description="per-path loss warn level")
    loss_alarm_pct: float = Field(1.0, ge=0, le=100, description="per-path loss no-go level")
    jitter_warn_ms: float = Field(5.0, ge=0)
    jitter_alarm_ms: float = Field(10.0, ge=0)
    loss_burst_ms: float = Field(50.0, gt=0, description="longest loss burst on a path (the watchdog time)")
    load_max_lost: int = Field(0, ge=0, description="commands lost at the control rate with both paths up")
    queue_growth_ms: float = Field(10.0, gt=0, description="one-way delay growth over the load test")
    failover_max_lost: int = Field(0, ge=0, description="commands lost while a path is taken away")
    failover_detect_ms: float = Field(1000.0, gt=0, description="cut until the link reports the path DOWN")
    failover_recover_ms: float = Field(3000.0, gt=0, description="restore until the link reports it UP")
    watchdog_hold_ms: float = Field(60.0, gt=0, description="last command to hold: 50 ms + servo period + scheduling")
    estop_ms: float = Field(20.0, gt=0, description="e-stop request to every arm in FAULT, robot clock")
    homing_s: float = Field(30.0, gt=0)
    video_min_fps: float = Field(10.0, gt=0, description="decoded endoscope frames per second per eye")
    video_latency_p99_ms: float = Field(
        250.0, gt=0, description="capture→decoded incl. one-way path delay (~100 ms path + codec/display 40-50 ms, "
                                 "Edge MP1000; 300 ms RTT alarm)")

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        for low, high in (("rtt_warn_ms", "rtt_alarm_ms"), ("rtt_alarm_ms", "rtt_critical_ms"),
                          ("loss_warn_pct", "loss_alarm_pct"), ("jitter_warn_ms", "jitter_alarm_ms")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) must not exceed {high} ({getattr(self, high)})")
        return self


def load_thresholds(path: Path | str | None) -> Thresholds:
    """Defaults, or a TOML file of overrides (top level, or under a [qualify] table)."""
    if path is None:
        return Thresholds()
    try:
        return load_config(path, Thresholds, table="qualify", missing_hint="no such thresholds file")
    except ConfigError as exc:
        raise ThresholdError(str(exc)) from None
