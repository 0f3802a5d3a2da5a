"""OpenIGTLink publishing, sans-I/O: what to send and when, and how to swallow what clients send.

OpenIGTLink (the protocol 3D Slicer, PLUS and most navigation systems speak) carries a tool pose as
a TRANSFORM message: a 4x4 homogeneous matrix, translation in millimetres by convention. The robot
publishes each arm's measured tool-tip pose in its base frame under the arm's name (``PSM1``,
``PSM2``, ``ECM``) and, optionally, a small endoscope picture as IMAGE. Message encoding is pyigtl's
(`TransformMessage`, `ImageMessage`, its CRC-64 in C); this module only schedules.

`IgtlPublisher` never reads a clock: `due(now)` returns the packed messages to send at `now`, at most
one pose set per `1 / pose_hz` and one picture per `1 / image_hz`, and only samples that are new
since the last send (a stopped servo loop does not keep re-announcing a stale pose).
`IgtlInbound` parses the byte stream a client sends just far enough to count each message by type
and throw it away: nothing a client sends is ever acted on.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyigtl
from pyigtl.messages import MessageBase

from telesurg.messages import ArmId, Telemetry
from telesurg.robot.kinematics import quat_rows

HEADER_SIZE = MessageBase.IGTL_HEADER_SIZE  # 58 bytes: version, type, device, timestamp, body size, CRC
MAX_INCOMING_BODY = 1 << 20  # a read-only server has no use for big uploads: larger bodies end the connection


class IgtlProtocolError(ValueError):
    """A client's byte stream is not OpenIGTLink (or exceeds our limits); the connection is closed."""


@dataclass(frozen=True, slots=True)
class IgtlConfig:
    pose_hz: float = 30.0  # TRANSFORM sets per second (Slicer redraws at ~30-60 Hz)
    image_hz: float = 2.0  # IMAGE messages per second (a thumbnail for orientation, not the video feed)
    image_device: str = "Endoscope"
    image_max_width: int = 320  # larger pictures are decimated: packing 320x180 RGB costs ~1.4 ms
    max_clients: int = 4
    max_backlog_bytes: int = 4 << 20  # per client: a slow reader loses messages, never stalls the others
    send_buffer_bytes: int | None = None  # SO_SNDBUF per client (None: the kernel's); small = less stale data queued

    def __post_init__(self) -> None:
        if not 0.1 <= self.pose_hz <= 200.0:
            raise ValueError(f"igtl pose_hz={self.pose_hz}: use 0.1..200 (telemetry itself is 100 Hz)")
        if not 0.0 <= self.image_hz <= 30.0:
            raise ValueError(f"igtl image_hz={self.image_hz}: use 0 (off)..30")
        if not 1 <= self.max_clients <= 64:
            raise ValueError(f"igtl max_clients={self.max_clients}: use 1..64")
        if not 16 <= self.image_max_width <= 1920:
            raise ValueError(f"igtl image_max_width={self.image_max_width}: use 16..1920")


def pose_matrix_mm(position_m: tuple[float, ...] | np.ndarray, orientation_wxyz: tuple[float, ...] | np.ndarray
                   ) -> np.ndarray:
    """4x4 homogeneous transform of a pose: rotation of the (w, x, y, z) quaternion, translation in mm.

    Raises ValueError on a non-finite position or a zero/non-finite quaternion."""
    position = np.asarray(position_m, dtype=float)
    quat = np.asarray(orientation_wxyz, dtype=float)
    if position.shape != (3,) or not np.all(np.isfinite(position)):
        raise ValueError(f"position must be 3 finite values (m), got {position_m!r}")
    norm = float(np.linalg.norm(quat)) if quat.shape == (4,) else math.nan
    if not math.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"orientation must be a non-zero finite quaternion (w, x, y, z), got {orientation_wxyz!r}")
    matrix = np.eye(4)
    matrix[:3, :3] = np.array(quat_rows(*(quat / norm).tolist())).reshape(3, 3)  # MuJoCo's formula, as the FK
    matrix[:3, 3] = position * 1000.0
    return matrix


def arm_device_name(arm: int) -> str:
    """OpenIGTLink device name of an arm id: its ArmId name (PSM1, PSM2, ECM), else ARM<n>."""
    try:
        return ArmId(arm).name
    except ValueError:
        return f"ARM{arm}"


def decimate(image: np.ndarray, max_width: int) -> np.ndarray:
    """Every n-th pixel in both directions so the width is at most `max_width` (cheap, no filtering)."""
    step = max(1, math.ceil(image.shape[1] / max_width))
    return np.ascontiguousarray(image[::step, ::step]) if step > 1 else np.ascontiguousarray(image)


class IgtlPublisher:
    """Rate-limited TRANSFORM/IMAGE messages from the latest telemetry and picture (see module docstring).

    `offer_telemetry`/`offer_image` only store a reference (one attribute write, atomic under the GIL),
    so the servo thread can call them without waiting for anything. `wall_minus_mono` converts the
    robot's monotonic telemetry time to the Unix time OpenIGTLink timestamps use."""

    def __init__(self, config: IgtlConfig | None = None, wall_minus_mono: float = 0.0) -> None:
        self.config = config or IgtlConfig()
        self.wall_minus_mono = wall_minus_mono
        self._telemetry: Telemetry | None = None
        self._image: tuple[np.ndarray, float] | None = None
        self._sent_telemetry: Telemetry | None = None
        self._sent_image: tuple[np.ndarray, float] | None = None
        self._next_pose = -math.inf
        self._next_image = -math.inf
        self.counts: Counter[str] = Counter()  # transforms, images, pose_sets, bad_pose

    # -- inputs (any thread) -----------------------------------------------------------------------
    def offer_telemetry(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def offer_image(self, rgb: np.ndarray, t_mono: float) -> None:
        """The latest endoscope picture (HxWx3 RGB or HxW grey, uint8) taken at monotonic time `t_mono`."""
        self._image = (rgb, t_mono)

    # -- schedule ----------------------------------------------------------------------------------
    def next_deadline(self) -> float:
        """Earliest time at which `due` may return something (monotonic seconds)."""
        return min(self._next_pose, self._next_image) if self.config.image_hz > 0 else self._next_pose

    def image_due(self, now: float) -> bool:
        """True when a picture offered now would be sent now (the caller may fetch one first)."""
        return self.config.image_hz > 0 and now >= self._next_image

    def due(self, now: float) -> list[bytes]:
        """Packed messages to send at `now`. A deadline with nothing new moves one period on (the
        caller sleeps until `next_deadline()`, so a silent source costs one wake per period)."""
        out: list[bytes] = []
        if now >= self._next_pose:
            period = 1.0 / self.config.pose_hz
            telemetry = self._telemetry
            if telemetry is not None and telemetry is not self._sent_telemetry:
                self._sent_telemetry = telemetry
                self._next_pose = _next_on_grid(self._next_pose, now, period)
                out += self._transforms(telemetry)
            else:
                self._next_pose = now + period
        if self.config.image_hz > 0 and now >= self._next_image:
            period = 1.0 / self.config.image_hz
            image = self._image
            if image is not None and image is not self._sent_image:
                self._sent_image = image
                self._next_image = _next_on_grid(self._next_image, now, period)
                out.append(self._image_message(*image))
            else:
                self._next_image = now + period
        return out

    def _transforms(self, telemetry: Telemetry) -> list[bytes]:
        timestamp = telemetry.t_robot + self.wall_minus_mono
        out = []
        for arm in telemetry.arms:
            try:
                matrix = pose_matrix_mm(arm.position, arm.orientation)
            except ValueError:
                self.counts["bad_pose"] += 1
                continue
            message = pyigtl.TransformMessage(matrix, timestamp=timestamp, device_name=arm_device_name(arm.arm))
            out.append(message.pack())
        self.counts["transforms"] += len(out)
        self.counts["pose_sets"] += 1
        return out

    def _image_message(self, rgb: np.ndarray, t_mono: float) -> bytes:
        picture = decimate(np.asarray(rgb, dtype=np.uint8), self.config.image_max_width)
        if picture.ndim in (2, 3):  # pyigtl axes are (k, j, i[, components]): one slice of HxW pixels
            picture = picture[np.newaxis]
        message = pyigtl.ImageMessage(picture, timestamp=t_mono + self.wall_minus_mono,
                                      device_name=self.config.image_device)
        self.counts["images"] += 1
        return message.pack()


def _next_on_grid(previous: float, now: float, period: float) -> float:
    """The next deadline on the `period` grid; after a late wake, one period from now (never a burst)."""
    following = previous + period
    return following if following > now else now + period


class IgtlInbound:
    """Counts and discards what one client sends; raises IgtlProtocolError on a stream that is not
    OpenIGTLink (the caller closes that connection: a TCP byte stream cannot resynchronise)."""

    def __init__(self, max_body: int = MAX_INCOMING_BODY) -> None:
        self.max_body = max_body
        self.counts: Counter[str] = Counter()  # message type -> messages received and ignored
        self._header = bytearray()
        self._skip = 0  # body bytes of the current message still to discard

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                taken = min(self._skip, len(view))
                self._skip -= taken
                view = view[taken:]
                continue
            need = HEADER_SIZE - len(self._header)
            self._header += view[:need]
            view = view[need:]
            if len(self._header) < HEADER_SIZE:
                return
            header, self._header = bytes(self._header), bytearray()
            try:
                fields = MessageBase.parse_header(header)
            except (UnicodeDecodeError, ValueError) as exc:
                raise IgtlProtocolError(f"not an OpenIGTLink header ({exc})") from None
            kind = fields["message_type"]
            if fields["header_version"] not in (1, 2) or not kind.isascii() or not kind.isprintable() or not kind:
                raise IgtlProtocolError(f"not an OpenIGTLink header (version {fields['header_version']}, "
                                        f"type {kind!r})")
            if fields["body_size"] > self.max_body:
                raise IgtlProtocolError(f"{kind} body of {fields['body_size']} bytes exceeds {self.max_body}")
            self.counts[kind] += 1
            self._skip = fields["body_size"]
