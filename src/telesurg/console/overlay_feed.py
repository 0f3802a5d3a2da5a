"""Tool positions for the predictive overlay, from the console site to its display process.

The console's 1 kHz ticker only stores its latest commands; the asyncio loop samples them with the
latest telemetry at the display rate (30 Hz) into a `ToolMarkers`, which crosses to the video child
as a small struct-packed message (`b"T"` + `encode()`), where `ToolOverlayPainter` draws it onto both
eyes with `PredictiveOverlay`. The endoscope pose travels with it when the robot reports the ECM;
today telemetry carries only the instrument arms, so the child falls back to the ECM's home pose.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from telesurg.console.overlay import PredictiveOverlay, endoscope_home_pose
from telesurg.messages import ArmId, ServoCommand, Telemetry

Vec3 = tuple[float, float, float]
Pose = tuple[Vec3, tuple[float, float, float, float]]  # position (m), orientation (w, x, y, z)
_HEAD = struct.Struct("!BBB")  # commanded count, measured count, endoscope pose present (0/1)
_TOOL = struct.Struct("!B3d")  # arm id, position (m, robot base frame)
_POSE = struct.Struct("!7d")  # endoscope tip position (m) and orientation (w, x, y, z)


@dataclass(frozen=True)
class ToolMarkers:
    """Where each tool is commanded to be now and where the robot last reported it (base frame, m)."""

    commanded: dict[int, Vec3] = field(default_factory=dict)
    measured: dict[int, Vec3] = field(default_factory=dict)
    endoscope: Pose | None = None

    @classmethod
    def from_messages(cls, commands: Sequence[ServoCommand], telemetry: Telemetry | None) -> ToolMarkers:
        """The console's latest command bundle and telemetry: the endoscope arm's pose, if reported, places
        the cameras; the other arms are tools."""
        commanded = {c.arm: c.position for c in commands if c.arm != ArmId.ECM}
        measured: dict[int, Vec3] = {}
        endoscope: Pose | None = None
        for arm in telemetry.arms if telemetry is not None else ():
            if arm.arm == ArmId.ECM:
                endoscope = (arm.position, arm.orientation)
            else:
                measured[arm.arm] = arm.position
        return cls(commanded, measured, endoscope)

    def encode(self) -> bytes:
        parts = [_HEAD.pack(len(self.commanded), len(self.measured), self.endoscope is not None)]
        parts += [_TOOL.pack(arm, *position) for arm, position in self.commanded.items()]
        parts += [_TOOL.pack(arm, *position) for arm, position in self.measured.items()]
        if self.endoscope is not None:
            parts.append(_POSE.pack(*self.endoscope[0], *self.endoscope[1]))
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> ToolMarkers:
        """Raises ValueError naming what is wrong; the display counts and drops such a message."""
        if len(data) < _HEAD.size:
            raise ValueError(f"tool markers: {len(data)} bytes, shorter than the {_HEAD.size}-byte header")
        n_commanded, n_measured, has_pose = _HEAD.unpack_from(data)
        if has_pose > 1:
            raise ValueError(f"tool markers: byte 2 (endoscope pose present) is {has_pose}; expected 0 or 1")
        expected = _HEAD.size + (n_commanded + n_measured) * _TOOL.size + has_pose * _POSE.size
        if len(data) != expected:
            raise ValueError(f"tool markers: {len(data)} bytes, expected {expected} for {n_commanded} commanded "
                             f"+ {n_measured} measured tools{' and an endoscope pose' if has_pose else ''}")
        tools = [_TOOL.unpack_from(data, _HEAD.size + i * _TOOL.size) for i in range(n_commanded + n_measured)]
        endoscope: Pose | None = None
        if has_pose:
            values = _POSE.unpack_from(data, expected - _POSE.size)
            endoscope = (values[:3], values[3:])
        return cls({arm: tuple(p) for arm, *p in tools[:n_commanded]},  # type: ignore[misc]
                   {arm: tuple(p) for arm, *p in tools[n_commanded:]}, endoscope)  # type: ignore[misc]


class ToolOverlayPainter:
    """The display side: keeps the newest markers and draws them on the two eyes it is given."""

    def __init__(self, width: int, height: int) -> None:
        self.overlay = PredictiveOverlay(width, height)
        self.home = endoscope_home_pose()
        self.markers: ToolMarkers | None = None  # replaced whole by the receiving thread (no lock needed)
        self.malformed = 0
        self.frames_drawn = 0

    def receive(self, data: bytes) -> None:
        try:
            self.markers = ToolMarkers.decode(data)
        except ValueError:
            self.malformed += 1

    def paint(self, left: np.ndarray, right: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Copies of the frames with the markers (the frames themselves when there is nothing to draw)."""
        markers = self.markers
        size = (self.overlay.height, self.overlay.width, 3)
        if markers is None or not (markers.commanded or markers.measured) or left.shape != size or (
                right is not None and right.shape != size):
            return left, right
        position, orientation = markers.endoscope if markers.endoscope is not None else self.home
        commanded = {arm: np.asarray(p) for arm, p in markers.commanded.items()}
        measured = {arm: np.asarray(p) for arm, p in markers.measured.items()}
        new_left, new_right = self.overlay.draw(left, right if right is not None else left, np.asarray(position),
                                                np.asarray(orientation), commanded, measured)
        self.frames_drawn += 1
        return new_left, (new_right if right is not None else None)
