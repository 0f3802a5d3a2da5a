"""Limits the safety supervisor enforces, validated once at start-up (pydantic) so a bad robot.toml
fails with the field name and the fix instead of surfacing as odd motion in theatre.

Defaults come from the references in DESIGN.md §3: Raven II's step cap (0.1 mm per 1 ms step, so
0.1 m/s), dVRK's 5° master/tool alignment, a 50 ms watchdog (dVRK's hardware watchdog is 30 ms; ours
sits above the link, whose first-copy-wins delivery over two paths absorbs single-path losses) and a
1 s fault time before latching. Freshness 0.3 s: Xu et al. judge 300 ms "suitable", beyond that a
command describes a surgeon's intent that is too old to act on.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

from telesurg.robot.config import CartConfig
from telesurg.robot.safety_geometry import Vec3


class WorkspaceBox(BaseModel):
    """Axis-aligned box (robot base frame, metres) a tool tip target must lie in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    low: tuple[float, float, float]
    high: tuple[float, float, float]

    @model_validator(mode="after")
    def _ordered(self) -> WorkspaceBox:
        for axis, lo, hi in zip("xyz", self.low, self.high, strict=True):
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
                raise ValueError(f"workspace {axis}: low ({lo}) must be finite and below high ({hi}); "
                                 f"swap or widen the bounds")
        return self

    def contains(self, p: Vec3) -> bool:
        if len(p) != 3:  # unrolled for the 1 kHz path; the length check keeps zip(strict=True)'s error
            raise ValueError(f"workspace check needs 3 coordinates, got {len(p)}")
        low, high = self.low, self.high
        return low[0] <= p[0] <= high[0] and low[1] <= p[1] <= high[1] and low[2] <= p[2] <= high[2]


class SupervisorConfig(BaseModel):
    """Every bound the supervisor enforces; see the module docstring for where the defaults come from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    servo_period_s: float = Field(0.001, gt=0.0, le=0.01, description="nominal servo period (1 kHz)")
    freshness_s: float = Field(0.3, gt=0.0, le=2.0, description="max command age, robot clock")
    future_tolerance_s: float = Field(0.02, ge=0.0, le=0.5,
                                      description="how far in the future t_sent may be (offset error)")
    max_step_m: float = Field(1e-4, gt=0.0, le=1e-3, description="max tool-tip move per servo step")
    max_speed_m_s: float = Field(0.1, gt=0.0, le=1.0, description="max tool-tip speed")
    max_angular_speed_rad_s: float = Field(2.0, gt=0.0, le=10.0, description="max tool rotation rate")
    jaw_rate_rad_s: float = Field(3.0, gt=0.0, le=20.0, description="max jaw opening/closing rate")
    jaw_min_rad: float = Field(0.0, ge=-1.0, le=0.5)
    jaw_max_rad: float = Field(1.2, gt=0.0, le=3.2)
    jump_m: float = Field(0.01, gt=0.0, le=0.1,
                          description="a target farther than this from the current setpoint is rejected")
    jump_rad: float = Field(math.radians(30.0), gt=0.0, le=math.pi)
    watchdog_s: float = Field(0.05, gt=0.0, le=1.0, description="hold after this long without a valid command")
    fault_s: float = Field(1.0, gt=0.0, le=30.0, description="latch after this long without a valid command")
    align_position_m: float = Field(0.003, gt=0.0, le=0.05,
                                    description="re-engage: master target within this of the tool")
    align_orientation_deg: float = Field(5.0, gt=0.0, le=45.0, description="re-engage: orientation tolerance")
    # the simulated cart's box (robot/config.py Workspace); a real cart sets its own per arm
    default_workspace: WorkspaceBox = WorkspaceBox(low=(-0.09, -0.07, -0.005), high=(0.09, 0.07, 0.12))
    workspace: dict[str, WorkspaceBox] = Field(default_factory=dict, description="per-arm override")

    @model_validator(mode="after")
    def _consistent(self) -> SupervisorConfig:
        if self.fault_s <= self.watchdog_s:
            raise ValueError(f"fault_s ({self.fault_s}) must exceed watchdog_s ({self.watchdog_s}): "
                             f"the robot holds first and latches later")
        if self.watchdog_s < 2 * self.servo_period_s:
            raise ValueError(f"watchdog_s ({self.watchdog_s}) must be at least two servo periods "
                             f"({2 * self.servo_period_s}); raise watchdog_s")
        if self.jaw_min_rad >= self.jaw_max_rad:
            raise ValueError("jaw_min_rad must be below jaw_max_rad")
        if self.jump_m <= self.align_position_m:
            raise ValueError(f"jump_m ({self.jump_m}) must exceed align_position_m ({self.align_position_m}), "
                             f"or an aligned re-engage would be rejected as a jump")
        return self

    def workspace_for(self, arm: str) -> WorkspaceBox:
        return self.workspace.get(arm, self.default_workspace)

    def step_limit_m(self, dt: float) -> float:
        """Largest allowed translation in one step of `dt` seconds (step cap and speed cap)."""
        return min(self.max_step_m, self.max_speed_m_s * dt)

    def rotation_limit_rad(self, dt: float) -> float:
        return self.max_angular_speed_rad_s * min(dt, self.servo_period_s * 1.5)

    def jaw_limit_rad(self, dt: float) -> float:
        return self.jaw_rate_rad_s * min(dt, self.servo_period_s * 1.5)


def workspaces_from_cart(cart: CartConfig) -> dict[str, WorkspaceBox]:
    """Per-arm workspace boxes taken from the cart description, so sim and supervisor agree.

    Only the box is used: the trocar cone is a kinematic limit the driver enforces; the supervisor
    keeps to a check it can state and test independently of the kinematics."""
    return {arm.name: WorkspaceBox(low=arm.workspace.box_min, high=arm.workspace.box_max) for arm in cart.arms}
