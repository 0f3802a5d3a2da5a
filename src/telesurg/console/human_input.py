"""Keyboard and gamepad masters for a person at the console (pygame, imported lazily).

Nobody operates on a patient with a keyboard; these exist for demos, training and bench tests. They
are *virtual* masters: velocity control integrated into a master pose, and `align_to` snaps the
virtual wrist to the tool orientation (a perfect motorised master), so alignment never blocks them.

Keys (the selected arm moves; Tab selects the next arm):
    W/S  +y/−y     A/D  −x/+x     R/F  +z/−z      ←/→ yaw   ↑/↓ pitch     Z/X close/open jaw
    Space (hold) clutch    Enter resume after a hold    P operator present on/off
    Q ask the robot for the selected arm (another console has it)    E release the selected arm
Gamepad (first one found): left stick x/y, right stick vertical z, LB clutch, A resume, RB/LT jaw.

`ManualMaster` holds the logic without pygame (held keys and stick axes → pose); `PygameMaster`
feeds it from pygame events. Works headless with SDL_VIDEODRIVER=dummy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from telesurg.console import quat
from telesurg.console.inputs import ArmMasterState, MasterState
from telesurg.console.quat import Quat, Vec3
from telesurg.messages import ArmId

KEY_AXES: dict[str, tuple[int, float]] = {"w": (1, 1.0), "s": (1, -1.0), "d": (0, 1.0), "a": (0, -1.0),
                                          "r": (2, 1.0), "f": (2, -1.0)}


@dataclass(slots=True)
class _VirtualArm:
    position: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    orientation: Quat = quat.IDENTITY
    jaw: float = 0.3


class ManualMaster:
    """Velocity-controlled virtual masters; `keys` are names like "w", "space", "return", "left"."""

    def __init__(self, arms: Iterable[ArmId] = (ArmId.PSM1, ArmId.PSM2), speed_m_s: float = 0.05,
                 turn_rad_s: float = 0.8, jaw_rad_s: float = 1.0) -> None:
        self.arms = list(arms)
        self._virtual = {arm: _VirtualArm() for arm in self.arms}
        self.selected = 0
        self.held: set[str] = set()
        self.axes: dict[str, float] = {}  # "x", "y", "z" in [-1, 1] from a gamepad
        self.present = True
        self._speed, self._turn, self._jaw_rate = speed_m_s, turn_rad_s, jaw_rad_s
        self._last: float | None = None
        self._handover: list[tuple[str, ArmId]] = []

    def key_down(self, key: str) -> None:
        if key == "tab":
            self.selected = (self.selected + 1) % len(self.arms)
        elif key == "p":
            self.present = not self.present
        elif key in ("q", "e"):
            self._handover.append(("arm_request" if key == "q" else "arm_release", self.arms[self.selected]))
        self.held.add(key)

    def take_handover_actions(self) -> list[tuple[str, ArmId]]:
        """Requests and releases pressed since the last call (the console sends them to the robot)."""
        out, self._handover = self._handover, []
        return out

    def key_up(self, key: str) -> None:
        self.held.discard(key)

    def sample(self, now: float) -> MasterState:
        dt = 0.0 if self._last is None else min(0.1, max(0.0, now - self._last))
        self._last = now
        clutch = "space" in self.held or "button_lb" in self.held
        resume = "return" in self.held or "button_a" in self.held
        active = self.arms[self.selected]
        v = self._virtual[active]
        velocity = [0.0, 0.0, 0.0]
        for key, (axis, sign) in KEY_AXES.items():
            if key in self.held:
                velocity[axis] += sign
        for i, name in enumerate(("x", "y", "z")):
            velocity[i] += self.axes.get(name, 0.0)
        for i in range(3):
            v.position[i] += velocity[i] * self._speed * dt
        yaw = ("left" in self.held) - ("right" in self.held)
        pitch = ("up" in self.held) - ("down" in self.held)
        if yaw:
            v.orientation = quat.multiply(quat.from_axis_angle((0, 0, 1), yaw * self._turn * dt), v.orientation)
        if pitch:
            v.orientation = quat.multiply(quat.from_axis_angle((1, 0, 0), pitch * self._turn * dt), v.orientation)
        jaw = ("x" in self.held or "button_rb" in self.held) - ("z" in self.held)
        v.jaw = min(1.2, max(0.0, v.jaw + jaw * self._jaw_rate * dt))
        arms = {arm: ArmMasterState(tuple(a.position), a.orientation, a.jaw, clutch,  # type: ignore[arg-type]
                                    self.present, resume and arm == active)
                for arm, a in self._virtual.items()}
        return MasterState(now, arms)

    def align_to(self, arm: ArmId, orientation: Quat, now: float) -> None:
        """A virtual master has perfect motors: take the tool orientation at once."""
        if arm in self._virtual:
            self._virtual[arm].orientation = orientation

    def set_force(self, arm: ArmId, force_xyz: Vec3, now: float) -> None:
        """No force feedback on a keyboard."""

    def close(self) -> None:
        pass


class PygameMaster(ManualMaster):
    """`ManualMaster` fed by pygame keyboard and gamepad events; opens a tiny window for key focus."""

    def __init__(self, arms: Iterable[ArmId] = (ArmId.PSM1, ArmId.PSM2), **kwargs: float) -> None:
        super().__init__(arms, **kwargs)
        import pygame  # lazy: only a person at the console needs it

        self._pg = pygame
        pygame.display.init()
        pygame.joystick.init()
        self._screen = pygame.display.set_mode((320, 80))
        pygame.display.set_caption("telesurg master (keys: see console/human_input.py)")
        self._pad = pygame.joystick.Joystick(0) if pygame.joystick.get_count() else None

    def _pump(self) -> None:
        pg = self._pg
        for event in pg.event.get():
            if event.type == pg.KEYDOWN:
                self.key_down(pg.key.name(event.key))
            elif event.type == pg.KEYUP:
                self.key_up(pg.key.name(event.key))
            elif event.type == pg.JOYBUTTONDOWN:
                self.key_down({0: "button_a", 4: "button_lb", 5: "button_rb"}.get(event.button, f"b{event.button}"))
            elif event.type == pg.JOYBUTTONUP:
                self.key_up({0: "button_a", 4: "button_lb", 5: "button_rb"}.get(event.button, f"b{event.button}"))
        if self._pad is not None:
            dead = 0.1

            def axis(i: int) -> float:
                value = self._pad.get_axis(i) if i < self._pad.get_numaxes() else 0.0
                return 0.0 if abs(value) < dead else math.copysign(min(1.0, abs(value)), value)

            self.axes = {"x": axis(0), "y": -axis(1), "z": -axis(3)}

    def sample(self, now: float) -> MasterState:
        self._pump()
        return super().sample(now)

    def close(self) -> None:
        self._pg.display.quit()
