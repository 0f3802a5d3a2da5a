"""Validated settings of the surgeon console core (pydantic v2).

Defaults come from the literature collected in DESIGN.md §3: dVRK teleoperates at 1 kHz with a motion
scale of 0.2 and a 5° orientation alignment tolerance; link alarms warn at RTT 200 ms (Xu et al. 2014:
≤ 200 ms ideal), alarm at 300 ms (suitable limit; Marescaux judged > 330 ms unsafe) and go critical at
500 ms (tiring / near rejection); per-path loss warns at 0.5 % and alarms at 1 % (KangDuo 5G: < 1 %).
Every model forbids unknown keys so a typo in `console.toml` is an error naming the field.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from telesurg.console.haptics.config import HapticsConfig
from telesurg.messages import ArmId


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TremorFilterConfig(_Strict):
    """Elliptic band-stop on the master position; see console/tremor.py for the measured figures."""

    enabled: bool = True
    stop_low_hz: float = Field(7.5, gt=0.5, description="lower band edge (tremor starts ~8 Hz)")
    stop_high_hz: float = Field(12.5, gt=1.0, description="upper band edge (tremor ends ~12 Hz)")
    order: int = Field(4, ge=1, le=8, description="prototype order; the band-stop has twice as many poles")
    passband_ripple_db: float = Field(0.5, gt=0.0, le=3.0)
    stopband_attenuation_db: float = Field(23.0, ge=6.0, le=80.0)

    @model_validator(mode="after")
    def _band_ordered(self) -> Self:
        if self.stop_high_hz <= self.stop_low_hz:
            raise ValueError("tremor_filter.stop_high_hz must be greater than tremor_filter.stop_low_hz")
        return self


class AlarmConfig(_Strict):
    """Link and robot alarm thresholds with hysteresis (DESIGN.md §3)."""

    rtt_warn_ms: float = Field(200.0, gt=0)
    rtt_alarm_ms: float = Field(300.0, gt=0)
    rtt_critical_ms: float = Field(500.0, gt=0)
    loss_warn_pct: float = Field(0.5, ge=0)
    loss_alarm_pct: float = Field(1.0, ge=0)
    one_way_warn_ms: float = Field(100.0, gt=0, description="Nankaku 2022: ≤ 100 ms no loss of performance")
    one_way_alarm_ms: float = Field(150.0, gt=0, description="half the 300 ms RTT alarm")
    clear_fraction: float = Field(0.9, gt=0.0, lt=1.0,
                                  description="a level clears only once the value is below fraction × threshold")
    clear_after_s: float = Field(2.0, ge=0.0, description="and has stayed there this long (no flapping)")
    telemetry_stale_s: float = Field(0.5, gt=0, description="no telemetry this long → alarm")

    @model_validator(mode="after")
    def _levels_ordered(self) -> Self:
        if not self.rtt_warn_ms < self.rtt_alarm_ms < self.rtt_critical_ms:
            raise ValueError("alarms: need rtt_warn_ms < rtt_alarm_ms < rtt_critical_ms")
        if not self.loss_warn_pct < self.loss_alarm_pct:
            raise ValueError("alarms: need loss_warn_pct < loss_alarm_pct")
        if not self.one_way_warn_ms < self.one_way_alarm_ms:
            raise ValueError("alarms: need one_way_warn_ms < one_way_alarm_ms")
        return self


class ConsoleConfig(_Strict):
    """Everything `ConsoleCore` needs; the app layer adds link and display settings around it."""

    rate_hz: float = Field(1000.0, ge=10.0, le=5000.0, description="servo_cp command rate per arm (dVRK: 1 kHz)")
    scale: float = Field(0.2, gt=0.0, le=1.0, description="tool motion / master motion (dVRK: 0.2)")
    arms: tuple[ArmId, ...] = Field((ArmId.PSM1, ArmId.PSM2), min_length=1)
    align_tolerance_deg: float = Field(5.0, gt=0.0, le=30.0,
                                       description="master/tool orientation error allowed to start following")
    registration_wxyz: tuple[float, float, float, float] = Field(
        (1.0, 0.0, 0.0, 0.0), description="rotation from master frame to robot base frame (unit quaternion)")
    # generous: the robot supervisor owns the real jaw limits (a small negative command = grip force)
    jaw_min_rad: float = Field(-0.5, description="jaw command floor (rad)")
    jaw_max_rad: float = Field(1.5, gt=0.0, description="jaw command ceiling (rad)")
    reengage_timeout_s: float = Field(2.0, gt=0.0,
                                      description="resend REENGAGE this long before asking the operator again")
    following_states: tuple[str, ...] = Field(
        ("FOLLOWING",), min_length=1,
        description="robot.supervisor.SupervisorState names in which the arm follows the console")
    tremor_filter: TremorFilterConfig = TremorFilterConfig()
    alarms: AlarmConfig = AlarmConfig()
    haptics: HapticsConfig = HapticsConfig()  # force feedback, off by default (console/haptics/)

    @field_validator("arms", mode="before")
    @classmethod
    def _arm_names(cls, value: object) -> object:
        """Accept "PSM1"/"psm2" as well as numbers, so console.toml can say arms = ["PSM1", "PSM2"]."""
        if isinstance(value, list | tuple):
            names = ArmId.__members__
            return tuple(names[v.upper()] if isinstance(v, str) and v.upper() in names else v for v in value)
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        norm = sum(c * c for c in self.registration_wxyz) ** 0.5
        if abs(norm - 1.0) > 1e-6:
            raise ValueError(f"registration_wxyz must be a unit quaternion (norm is {norm:.6f}); normalise it")
        if len(set(self.arms)) != len(self.arms):
            raise ValueError("arms: each arm may be listed once")
        if self.jaw_max_rad <= self.jaw_min_rad:
            raise ValueError("jaw_max_rad must be greater than jaw_min_rad")
        nyquist = self.rate_hz / 2
        if self.tremor_filter.enabled and self.tremor_filter.stop_high_hz >= nyquist:
            raise ValueError(f"tremor_filter.stop_high_hz must be below rate_hz/2 = {nyquist:g} Hz")
        return self


def load_console_config(data: dict) -> ConsoleConfig:
    """Validate a `[console]` table; raise ValueError whose message names each bad field and the fix."""
    try:
        return ConsoleConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "console"
            problems.append(f"console.{where}: {err['msg']}")
        raise ValueError("invalid console config:\n  " + "\n  ".join(problems)) from None
