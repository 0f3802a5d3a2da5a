"""Configuration of the simulated patient-side cart: arm placement, joint limits, workspaces.

Pydantic models so a bad `robot.toml` fails at load time with the field's path in the message
(e.g. ``arms.0.joints.2.upper: must be greater than lower``) instead of as a strange motion later.
Units are metres and radians throughout. Defaults describe a small dVRK-like cart around an FLS
peg board centred at the base-frame origin (board surface at z = 0, z up).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

Vec3 = tuple[float, float, float]

PSM_JOINT_NAMES = ("yaw", "pitch", "insertion", "roll", "wrist_pitch", "wrist_yaw")
ECM_JOINT_NAMES = ("yaw", "pitch", "insertion", "roll")


class JointLimit(BaseModel):
    """Position range and speed limit of one joint (rad or m, rad/s or m/s)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lower: float
    upper: float
    max_velocity: float = Field(gt=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> JointLimit:
        if not self.lower < self.upper:
            raise ValueError(f"upper ({self.upper}) must be greater than lower ({self.lower})")
        return self


class Workspace(BaseModel):
    """Where the tool tip may go: an axis-aligned box in the base frame, intersected with a cone
    about the trocar axis (apex at the RCM), the way an incision limits the reachable volume."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    box_min: Vec3 = (-0.09, -0.07, -0.005)
    box_max: Vec3 = (0.09, 0.07, 0.12)
    cone_half_angle: float = Field(default=math.radians(60.0), gt=0.0, lt=math.pi / 2)

    @model_validator(mode="after")
    def _box_ordered(self) -> Workspace:
        for axis, lo, hi in zip("xyz", self.box_min, self.box_max, strict=True):
            if not lo < hi:
                raise ValueError(f"box_min.{axis} ({lo}) must be below box_max.{axis} ({hi})")
        return self

    def contains(self, position: np.ndarray, rcm: np.ndarray, trocar_axis: np.ndarray) -> bool:
        """True if `position` is inside the box and inside the cone about `trocar_axis` (unit)."""
        p = np.asarray(position, dtype=float)
        if np.any(p < self.box_min) or np.any(p > self.box_max):
            return False
        offset = p - rcm
        distance = float(np.linalg.norm(offset))
        if distance < 1e-9:
            return False
        return float(offset @ trocar_axis) / distance >= math.cos(self.cone_half_angle)

    def clamp_box(self, position: np.ndarray) -> np.ndarray:
        """The nearest point of the box (the cone is left to the caller's step logic)."""
        return np.clip(np.asarray(position, dtype=float), self.box_min, self.box_max)


def _psm_joints() -> list[JointLimit]:
    return [
        JointLimit(lower=-1.2, upper=1.2, max_velocity=1.0),  # outer yaw
        JointLimit(lower=-1.0, upper=1.0, max_velocity=1.0),  # outer pitch
        JointLimit(lower=0.02, upper=0.26, max_velocity=0.1),  # insertion (m)
        JointLimit(lower=-4.5, upper=4.5, max_velocity=3.0),  # instrument roll
        JointLimit(lower=-1.4, upper=1.4, max_velocity=3.0),  # wrist pitch (kept off the ±90° gimbal)
        JointLimit(lower=-1.4, upper=1.4, max_velocity=3.0),  # wrist yaw
    ]


def _ecm_joints() -> list[JointLimit]:
    return [
        JointLimit(lower=-1.0, upper=1.0, max_velocity=0.5),
        JointLimit(lower=-1.0, upper=1.0, max_velocity=0.5),
        JointLimit(lower=0.02, upper=0.20, max_velocity=0.05),
        JointLimit(lower=-1.5, upper=1.5, max_velocity=1.0),
    ]


class ArmConfig(BaseModel):
    """One arm: where its trocar is, where the trocar axis points, and its limits.

    The chain is rooted at the RCM (the incision): yaw and pitch rotate about axes through it and
    insertion slides along the shaft, so the shaft always passes through the RCM by construction.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["psm", "ecm"]
    rcm_position: Vec3
    trocar_target: Vec3 = Field(description="a point the shaft aims at when yaw = pitch = 0")
    joints: list[JointLimit]
    home: list[float]
    tool_length: float = Field(default=0.009, ge=0.0, description="wrist axis to tool tip (m)")
    jaw: JointLimit = JointLimit(lower=-0.3, upper=1.0, max_velocity=4.0)
    workspace: Workspace = Workspace()

    @model_validator(mode="after")
    def _consistent(self) -> ArmConfig:
        expected = len(PSM_JOINT_NAMES) if self.kind == "psm" else len(ECM_JOINT_NAMES)
        if len(self.joints) != expected:
            raise ValueError(f"joints: a {self.kind} needs {expected} joint limits, got {len(self.joints)}")
        if len(self.home) != expected:
            raise ValueError(f"home: a {self.kind} needs {expected} values, got {len(self.home)}")
        for i, (value, limit) in enumerate(zip(self.home, self.joints, strict=True)):
            if not limit.lower <= value <= limit.upper:
                raise ValueError(f"home.{i}: {value} is outside joints.{i} [{limit.lower}, {limit.upper}]")
        aim = np.subtract(self.trocar_target, self.rcm_position)
        if np.linalg.norm(aim) < 1e-3:
            raise ValueError("trocar_target: must be at least 1 mm away from rcm_position")
        return self

    @property
    def joint_names(self) -> tuple[str, ...]:
        return PSM_JOINT_NAMES if self.kind == "psm" else ECM_JOINT_NAMES

    @property
    def lower(self) -> np.ndarray:
        return np.array([j.lower for j in self.joints])

    @property
    def upper(self) -> np.ndarray:
        return np.array([j.upper for j in self.joints])

    @property
    def max_velocity(self) -> np.ndarray:
        return np.array([j.max_velocity for j in self.joints])


def default_arms() -> list[ArmConfig]:
    """PSM1 on the surgeon's left, PSM2 on the right, ECM between them looking at the board.

    At home (all angles zero) each instrument lies along its trocar axis with the tool tip about
    7 cm above the board, out of the way of the rings; the scripted task starts from there.
    """
    return [
        ArmConfig(name="PSM1", kind="psm", rcm_position=(-0.10, -0.07, 0.14), trocar_target=(-0.02, 0.0, 0.0),
                  joints=_psm_joints(), home=[0.0, 0.0, 0.08, 0.0, 0.0, 0.0]),
        ArmConfig(name="PSM2", kind="psm", rcm_position=(0.10, -0.07, 0.14), trocar_target=(0.02, 0.0, 0.0),
                  joints=_psm_joints(), home=[0.0, 0.0, 0.08, 0.0, 0.0, 0.0]),
        ArmConfig(name="ECM", kind="ecm", rcm_position=(0.0, -0.13, 0.16), trocar_target=(0.0, 0.0, 0.0),
                  joints=_ecm_joints(), home=[0.0, 0.0, 0.06, 0.0], tool_length=0.0),
    ]


class CartConfig(BaseModel):
    """The whole simulated cart plus the physics settings that matter for grasping."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arms: list[ArmConfig] = Field(default_factory=default_arms)
    physics_timestep: float = Field(default=0.001, gt=0.0, le=0.002,
                                    description="MuJoCo timestep (s); grasping needs <= 2 ms")
    grasp_assist: bool = Field(default=True, description="weld a ring to the jaw once both fingers touch it")
    tracking_fault_seconds: float = Field(default=0.25, gt=0.0)

    @model_validator(mode="after")
    def _unique_names(self) -> CartConfig:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arms: names must be unique, got {names}")
        return self

    def arm(self, name: str) -> ArmConfig:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"no arm named {name!r}; configured arms: {[a.name for a in self.arms]}")
