"""Qualification echo payloads: the first byte is `MessageType.QUALIFY`, so the robot app routes them
to `apps/robot_checks.echo_probe` and never to the supervisor.

Below both sides (like messages.py): `telesurg qualify` (qualify/) sends them, the robot site
(apps/) answers, and neither imports the other for it.

A request carries a stream id (one per phase), a sequence number, the console's send time and how many
bytes of padding the reply should carry (so a few small requests can load the robot→console direction
at the video bitrate). The reply adds the robot's clock at reception (one-way delays) and how many
requests of that stream the robot has received so far (so command-direction loss is told apart from
reply loss).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from telesurg.link.wire import MAX_PAYLOAD
from telesurg.messages import MessageType

VERSION = 1
KIND_REQUEST = 1
KIND_REPLY = 2
# type, version, kind, pad, stream, seq, t_sent (console clock), t_robot, robot_received, reply_pad
_HEAD = struct.Struct("!BBBBIQddIH")
HEADER_SIZE = _HEAD.size
MAX_REPLY_PAD = MAX_PAYLOAD - HEADER_SIZE


class ProbeDecodeError(ValueError):
    """Not a well-formed qualification payload (counted and dropped by the caller)."""


@dataclass(frozen=True, slots=True)
class EchoProbe:
    kind: int
    stream: int
    seq: int
    t_sent: float
    t_robot: float = 0.0
    robot_received: int = 0
    reply_pad: int = 0

    def encode(self, padding: int = 0) -> bytes:
        head = _HEAD.pack(MessageType.QUALIFY, VERSION, self.kind, 0, self.stream, self.seq, self.t_sent,
                          self.t_robot, self.robot_received, self.reply_pad)
        return head + bytes(padding)


def request(stream: int, seq: int, t_sent: float, reply_pad: int = 0) -> bytes:
    if not 0 <= reply_pad <= MAX_REPLY_PAD:
        raise ValueError(f"reply_pad={reply_pad}: use 0..{MAX_REPLY_PAD} bytes (one link message)")
    return EchoProbe(KIND_REQUEST, stream, seq, t_sent, reply_pad=reply_pad).encode()


def decode(payload: bytes) -> EchoProbe:
    if len(payload) < HEADER_SIZE:
        raise ProbeDecodeError("truncated")
    typ, version, kind, _, stream, seq, t_sent, t_robot, received, pad = _HEAD.unpack_from(payload)
    if typ != MessageType.QUALIFY:
        raise ProbeDecodeError("type")
    if version != VERSION:
        raise ProbeDecodeError("version")
    if kind not in (KIND_REQUEST, KIND_REPLY):
        raise ProbeDecodeError("kind")
    if pad > MAX_REPLY_PAD:
        raise ProbeDecodeError("reply_pad")
    return EchoProbe(kind, stream, seq, t_sent, t_robot, received, pad)
