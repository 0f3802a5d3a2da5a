"""Application messages carried by the link: servo commands (console → robot) and telemetry (robot → console).

Fixed-size `struct` layouts with a leading type byte and a version byte, so a robot can reject a
message from a newer or older console with a counted reason instead of misreading it. Every field is
authenticated by the link's AEAD; the robot still re-checks every value (see robot/supervisor.py).
"""

from __future__ import annotations

import enum
import json
import math
import struct
from dataclasses import dataclass

import numpy as np

WIRE_VERSION = 1


class MessageType(enum.IntEnum):
    SERVO_CP = 1
    TELEMETRY = 2
    QUALIFY = 3  # pre-operative test traffic (qualify/): the robot answers it and never moves for it
    SERVO_BUNDLE = 4  # one servo period's commands for several arms in one datagram
    ROOM = 5  # who is connected, each console's link health and master poses (ghosts), JSON
    FORCE = 6  # tool contact forces and tool-port energies per arm (robot → console, >= 500 Hz)


class ArmId(enum.IntEnum):
    PSM1 = 0  # left instrument arm
    PSM2 = 1  # right instrument arm
    ECM = 2  # endoscope arm


_MAX_ARM_ID = max(ArmId)  # decode checks every arm number against it: not worked out each time


class DecodeError(ValueError):
    """A payload that is not a well-formed message of this version; the caller counts and drops it."""


# type, version, arm, flags, cmd_seq, t_sent, pos[3], quat[4] (w, x, y, z), jaw
_SERVO = struct.Struct("!BBBBQd3d4dd")

_SERVO_CP = int(MessageType.SERVO_CP)

FLAG_ENGAGED = 0x01  # the surgeon wants this arm to follow (head in console, foot pedal)
FLAG_CLUTCH = 0x02  # clutch pressed: the master moves, the tool must not
FLAG_REENGAGE = 0x04  # explicit operator action asking to resume following after a hold


@dataclass(frozen=True, slots=True)
class ServoCommand:
    """CRTK `servo_cp` for one arm: the tool-tip pose the surgeon wants now, in the robot's base frame."""

    arm: int
    cmd_seq: int  # strictly increasing per arm and per console session
    t_sent: float  # console clock, seconds
    position: tuple[float, float, float]  # metres
    orientation: tuple[float, float, float, float]  # unit quaternion w, x, y, z
    jaw: float  # radians, 0 = closed
    flags: int = FLAG_ENGAGED

    @property
    def engaged(self) -> bool:
        return bool(self.flags & FLAG_ENGAGED)

    @property
    def clutch(self) -> bool:
        return bool(self.flags & FLAG_CLUTCH)

    @property
    def reengage(self) -> bool:
        return bool(self.flags & FLAG_REENGAGE)

    def position_array(self) -> np.ndarray:
        return np.asarray(self.position, dtype=float)

    def encode(self) -> bytes:
        return _SERVO.pack(_SERVO_CP, WIRE_VERSION, self.arm, self.flags, self.cmd_seq,
                           self.t_sent, *self.position, *self.orientation, self.jaw)

    def _fields(self) -> tuple[object, ...]:
        """The `_SERVO` fields in order (for packing several commands in one call)."""
        return (_SERVO_CP, WIRE_VERSION, self.arm, self.flags, self.cmd_seq, self.t_sent, *self.position,
                *self.orientation, self.jaw)


# per-arm telemetry: arm, operating state, supervisor state, owner slot, last applied cmd_seq, pos[3], quat[4], jaw
_ARM = struct.Struct("!BBBBQ3d4dd")
# type, version, n arms, pad, t_robot, holds total
_TELEM_HEAD = struct.Struct("!BBBBdI")


@dataclass(frozen=True, slots=True)
class ArmTelemetry:
    arm: int
    operating_state: int  # robot.driver.OperatingState value
    supervisor_state: int  # robot.supervisor.SupervisorState value
    last_applied_seq: int
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]
    jaw: float
    owner: int = 0  # slot of the console that owns the arm (robot/roles.py): 0 nobody, 255 the local console


@dataclass(frozen=True, slots=True)
class Telemetry:
    """Measured state the robot publishes (default 100 Hz) so the console can align and display."""

    t_robot: float
    holds: int
    arms: tuple[ArmTelemetry, ...]

    def encode(self) -> bytes:
        head = _TELEM_HEAD.pack(MessageType.TELEMETRY, WIRE_VERSION, len(self.arms), 0, self.t_robot, self.holds)
        body = b"".join(_ARM.pack(a.arm, a.operating_state, a.supervisor_state, a.owner, a.last_applied_seq,
                                  *a.position, *a.orientation, a.jaw) for a in self.arms)
        return head + body


# type, version, count; then `count` ServoCommand encodings back to back
_BUNDLE_HEAD = struct.Struct("!BBB")
_BUNDLE_STRUCTS: dict[int, struct.Struct] = {}
_SERVO_BUNDLE = int(MessageType.SERVO_BUNDLE)
MAX_BUNDLE = 8


@dataclass(frozen=True, slots=True)
class ServoBundle:
    """The commands of one console period for all its arms, sent as one link message: half the
    datagrams (and AEAD, relay and receive work) of one message per arm, and both arms' commands
    arrive together or not at all. Each command keeps its own per-arm `cmd_seq`."""

    commands: tuple[ServoCommand, ...]

    def encode(self) -> bytes:
        n = len(self.commands)
        fmt = _BUNDLE_STRUCTS.get(n)
        if fmt is None:  # head + n commands in one Struct: one pack call per 1 kHz bundle, same bytes
            fmt = _BUNDLE_STRUCTS[n] = struct.Struct(_BUNDLE_HEAD.format + _SERVO.format[1:] * n)
        fields: list[object] = [_SERVO_BUNDLE, WIRE_VERSION, n]
        for c in self.commands:
            fields += c._fields()
        return fmt.pack(*fields)


@dataclass(frozen=True, slots=True)
class RoomStatus:
    """The operating room as the robot sees it, sent to every console a few times a second:
    `{"t_robot", "arms": {arm: {"owner", "pending", "local"}}, "peers": {identity: {"role",
    "connected", "rtt_ms": {path: ms}, "ghost": {arm: [x, y, z]}}}}` (positions in metres, robot
    base frame: the last pose each console commanded, so a consultant can follow before taking over)."""

    body: dict

    def encode(self) -> bytes:
        return bytes([MessageType.ROOM, WIRE_VERSION]) + json.dumps(self.body, separators=(",", ":")).encode()


# per-arm force: arm, pad, force[3] (N, tool frame), tool quat[4] (w, x, y, z, base frame), energy in/out (J)
_FORCE_ARM = struct.Struct("!BB3d4d2d")
# type, version, n arms, pad, t_robot
_FORCE_HEAD = struct.Struct("!BBBBd")


@dataclass(frozen=True, slots=True)
class ArmForce:
    """CRTK `measured_cf` of one instrument: the force the environment exerts on the tool (N), in the
    tool frame, with the tool orientation of the same instant so the console can rotate it into the
    base frame without mixing in a pose from another telemetry sample. The two energies are the
    robot-side tool-port observer of the time-domain passivity approach (console/haptics/passivity.py):
    cumulative work done by the environment on the tool (`energy_from_env_j`) and by the tool on the
    environment (`energy_to_env_j`), joules since the robot started; cumulative so a lost message loses
    nothing."""

    arm: int
    force: tuple[float, float, float]  # N, tool frame
    orientation: tuple[float, float, float, float]  # tool orientation in the base frame, w, x, y, z
    energy_from_env_j: float = 0.0
    energy_to_env_j: float = 0.0


@dataclass(frozen=True, slots=True)
class ForceFeedback:
    """Contact forces of every instrument at robot time `t_robot` (robot clock, s)."""

    t_robot: float
    arms: tuple[ArmForce, ...]

    def encode(self) -> bytes:
        head = _FORCE_HEAD.pack(MessageType.FORCE, WIRE_VERSION, len(self.arms), 0, self.t_robot)
        return head + b"".join(_FORCE_ARM.pack(a.arm, 0, *a.force, *a.orientation, a.energy_from_env_j,
                                               a.energy_to_env_j) for a in self.arms)


def _decode_force(payload: bytes) -> ForceFeedback:
    if len(payload) < _FORCE_HEAD.size:
        raise DecodeError("truncated")
    _, _, n, _, t_robot = _FORCE_HEAD.unpack_from(payload)
    if not 1 <= n <= MAX_BUNDLE:
        raise DecodeError("force_count")
    if len(payload) != _FORCE_HEAD.size + n * _FORCE_ARM.size:
        raise DecodeError("length")
    if not math.isfinite(t_robot):
        raise DecodeError("non-finite")
    arms = []
    for i in range(n):
        arm, _, fx, fy, fz, qw, qx, qy, qz, e_from, e_to = _FORCE_ARM.unpack_from(
            payload, _FORCE_HEAD.size + i * _FORCE_ARM.size)
        if arm > _MAX_ARM_ID:
            raise DecodeError("arm")
        if not all(map(math.isfinite, (fx, fy, fz, qw, qx, qy, qz, e_from, e_to))):
            raise DecodeError("non-finite")
        arms.append(ArmForce(arm, (fx, fy, fz), (qw, qx, qy, qz), e_from, e_to))
    return ForceFeedback(t_robot, tuple(arms))


def decode(payload: bytes) -> ServoCommand | ServoBundle | Telemetry | RoomStatus | ForceFeedback:
    """Decode one application payload; raise DecodeError (never anything else) on malformed input."""
    if len(payload) < 2:
        raise DecodeError("truncated")
    kind, version = payload[0], payload[1]
    if version != WIRE_VERSION:
        raise DecodeError("version")
    if kind == MessageType.SERVO_CP:
        if len(payload) != _SERVO.size:
            raise DecodeError("length")
        _, _, arm, flags, seq, t_sent, x, y, z, qw, qx, qy, qz, jaw = _SERVO.unpack(payload)
        values = (t_sent, x, y, z, qw, qx, qy, qz, jaw)
        if not all(map(math.isfinite, values)):  # math, not numpy: ~10x cheaper on 9 floats
            raise DecodeError("non-finite")
        if arm > _MAX_ARM_ID:
            raise DecodeError("arm")
        return ServoCommand(arm, seq, t_sent, (x, y, z), (qw, qx, qy, qz), jaw, flags)
    if kind == MessageType.SERVO_BUNDLE:
        if len(payload) < _BUNDLE_HEAD.size:
            raise DecodeError("truncated")
        count = payload[2]
        if not 1 <= count <= MAX_BUNDLE:
            raise DecodeError("bundle_count")
        if len(payload) != _BUNDLE_HEAD.size + count * _SERVO.size:
            raise DecodeError("length")
        commands = []
        for i in range(count):
            start = _BUNDLE_HEAD.size + i * _SERVO.size
            command = decode(payload[start:start + _SERVO.size])
            if not isinstance(command, ServoCommand):
                raise DecodeError("bundle_content")
            commands.append(command)
        return ServoBundle(tuple(commands))
    if kind == MessageType.TELEMETRY:
        if len(payload) < _TELEM_HEAD.size:
            raise DecodeError("truncated")
        _, _, n, _, t_robot, holds = _TELEM_HEAD.unpack_from(payload)
        if len(payload) != _TELEM_HEAD.size + n * _ARM.size:
            raise DecodeError("length")
        arms = []
        for i in range(n):
            a, op, sup, owner, seq, x, y, z, qw, qx, qy, qz, jaw = _ARM.unpack_from(payload, _TELEM_HEAD.size + i * _ARM.size)
            arms.append(ArmTelemetry(a, op, sup, seq, (x, y, z), (qw, qx, qy, qz), jaw, owner))
        return Telemetry(t_robot, holds, tuple(arms))
    if kind == MessageType.ROOM:
        try:
            body = json.loads(payload[2:])
        except ValueError:
            raise DecodeError("room_json") from None
        if not isinstance(body, dict):
            raise DecodeError("room_json")
        return RoomStatus(body)
    if kind == MessageType.FORCE:
        return _decode_force(payload)
    raise DecodeError("type")
