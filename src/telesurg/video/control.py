"""Video control messages carried on the link's reliable event channel (console -> robot).

`KeyframeRequest`: the receiver lost a frame it cannot conceal safely and asks the sender for a
keyframe on one stream. The first byte (0x40) keeps these apart from `telesurg.messages` types.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VIDEO_CONTROL_TYPE = 0x40
CONTROL_VERSION = 1
_KEYFRAME_REQUEST = struct.Struct("!BBBBI")  # type, version, kind, stream, last good frame number
_KIND_KEYFRAME = 1


class ControlDecodeError(ValueError):
    """Not a well-formed video control message; the caller counts and drops it."""


@dataclass(frozen=True, slots=True)
class KeyframeRequest:
    stream: int
    last_good_frame: int  # newest frame the receiver decoded on this stream (0xFFFFFFFF: none yet)

    def encode(self) -> bytes:
        return _KEYFRAME_REQUEST.pack(VIDEO_CONTROL_TYPE, CONTROL_VERSION, _KIND_KEYFRAME, self.stream,
                                      self.last_good_frame & 0xFFFFFFFF)

    @staticmethod
    def decode(payload: bytes) -> KeyframeRequest:
        if len(payload) != _KEYFRAME_REQUEST.size:
            raise ControlDecodeError("length")
        kind_type, version, kind, stream, last_good = _KEYFRAME_REQUEST.unpack(payload)
        if kind_type != VIDEO_CONTROL_TYPE or version != CONTROL_VERSION or kind != _KIND_KEYFRAME:
            raise ControlDecodeError("type/version")
        return KeyframeRequest(stream, last_good)


def is_video_control(payload: bytes) -> bool:
    """Cheap routing test for an event-channel payload."""
    return len(payload) >= 1 and payload[0] == VIDEO_CONTROL_TYPE
