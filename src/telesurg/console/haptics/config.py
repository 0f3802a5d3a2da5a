"""Validated settings of console force feedback (pydantic v2, same style as console/config.py).

Every field names its unit. Defaults, and why:
- `force_scale` 1.0: the master renders the tool force 1:1. With the console's motion scale of 0.2 (dVRK)
  the channel then has a power gain of force_scale / motion_scale = 5, which the passivity controller
  accounts for (energies are compared in master units).
- `max_force_n` 3.0: a Geomagic Touch renders 3.3 N peak; a dVRK MTM a few newtons continuously.
- Fade: telemetry older than `stale_after_s` (20 ms, ten lost 500 Hz force messages in a row) fades the
  force to zero over `fade_s` (25 ms), so it is gone within the robot's 50 ms watchdog (DESIGN.md §4).
- `max_feedback_travel_m` 10 mm of master travel (2 mm of tool travel at scale 0.2): how far the
  feedback alone may push the master from where contact started before it is faded out.
  The anchor survives short force gaps (a tool bouncing on the contact, a chopped force) for
  `anchor_reset_s`, longer than any round trip we accept, so bounces cannot walk the master away.
- `max_damping_ns_per_m` 300: the passivity controller's damper is applied by a 1 kHz loop to a device of
  a few hundred grams; explicit damping above m·2/dt (600 N·s/m for 0.3 kg) would itself go unstable.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PassivityConfig(_Strict):
    """Time-domain passivity controller on the master port (Ryu & Hannaford 2004; Artigas et al. 2010)."""

    enabled: bool = True
    max_damping_ns_per_m: float = Field(300.0, gt=0.0, description="cap of the variable damper (N·s/m)")
    min_speed_m_per_s: float = Field(1e-4, gt=0.0,
                                     description="below this master speed the damper cannot dissipate (m/s)")


class HapticsConfig(_Strict):
    """Force feedback from the robot's measured tool forces to the master."""

    enabled: bool = False
    force_scale: float = Field(1.0, gt=0.0, le=10.0, description="master force per tool force (N/N)")
    max_force_n: float = Field(3.0, gt=0.0, le=40.0, description="saturation of the rendered force (N)")
    stale_after_s: float = Field(0.02, gt=0.0, description="force older than this starts fading (s)")
    fade_s: float = Field(0.025, gt=0.0, description="linear fade to zero after stale_after_s (s)")
    watchdog_s: float = Field(0.05, gt=0.0, description="the robot's watchdog; the fade must end within it (s)")
    contact_threshold_n: float = Field(0.05, ge=0.0,
                                       description="below this the force is off and the travel anchor resets (N)")
    max_feedback_travel_m: float = Field(0.01, gt=0.0,
                                         description="master travel along the force allowed from the contact start (m)")
    travel_brake_ns_per_m: float = Field(100.0, ge=0.0,
                                         description="damper against motion along the force once past the "
                                                     "ramp start, so the master does not coast on (N·s/m)")
    anchor_reset_s: float = Field(0.5, ge=0.0,
                                  description="force off this long ends the contact and frees the travel anchor (s)")
    travel_ramp_m: float = Field(0.003, gt=0.0, description="the force fades over this last part of the travel (m)")
    passivity: PassivityConfig = PassivityConfig()

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.stale_after_s + self.fade_s > self.watchdog_s:
            raise ValueError(f"haptics: stale_after_s + fade_s = {self.stale_after_s + self.fade_s:g} s must be "
                             f"<= watchdog_s = {self.watchdog_s:g} s (feedback must be gone before the robot holds)")
        if self.travel_ramp_m > self.max_feedback_travel_m:
            raise ValueError("haptics: travel_ramp_m must be <= max_feedback_travel_m")
        return self
