"""Split encoded frames into link-sized VIDEO payloads with XOR parity (sans-I/O, pure functions).

Wire format of one VIDEO payload (network byte order, 26-byte header, then the fragment):

    version u8 | stream u8 | flags u8 (1 keyframe, 2 parity) | reserved u8 | frame_number u32 |
    index u16 | data_count u16 | parity_count u16 | capture_time f64 (sender clock, s) | frame_len u32

Every fragment of a frame has the same size (the last data fragment is zero-padded only inside the
parity computation, never on the wire), so the receiver knows the padding from `frame_len`.
The default payload limit (1100 bytes) leaves room for the link header and AEAD tag in a
1200-byte datagram, which passes any path MTU without IP fragmentation.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from telesurg.video.codec import EncodedFrame
from telesurg.video.fec import make_parity, parity_count

VIDEO_WIRE_VERSION = 1
HEADER = struct.Struct("!BBBBIHHHdI")
FLAG_KEYFRAME = 0x01
FLAG_PARITY = 0x02
DEFAULT_MAX_PAYLOAD = 1100
MAX_FRAGMENTS = 4096  # 4.5 MB per frame: far above any sane frame, bounds receiver memory


class MalformedFragment(ValueError):
    """A VIDEO payload that is not a well-formed fragment; the receiver counts and drops it."""


@dataclass(frozen=True, slots=True)
class Fragment:
    stream: int
    frame_number: int
    keyframe: bool
    parity: bool
    index: int
    data_count: int
    parity_count: int
    capture_time: float
    frame_len: int
    body: bytes

    @property
    def fragment_size(self) -> int:
        """Full (unpadded-on-wire) fragment size of this frame, derived from any data/parity fragment."""
        return math.ceil(self.frame_len / self.data_count)


def parse(payload: bytes) -> Fragment:
    """Parse and validate one payload; raise MalformedFragment (only) on anything inconsistent."""
    if len(payload) < HEADER.size:
        raise MalformedFragment("truncated header")
    version, stream, flags, _, frame, index, k, m, t_capture, frame_len = HEADER.unpack_from(payload)
    if version != VIDEO_WIRE_VERSION:
        raise MalformedFragment(f"version {version}")
    if not 1 <= k <= MAX_FRAGMENTS or m > k or frame_len == 0 or frame_len > k * 65535:
        raise MalformedFragment("counts")
    parity = bool(flags & FLAG_PARITY)
    if index >= (m if parity else k):
        raise MalformedFragment("index")
    size = math.ceil(frame_len / k)
    if frame_len < (k - 1) * size + 1:
        raise MalformedFragment("length/count mismatch")
    body = payload[HEADER.size :]
    expected = size if parity or index < k - 1 else frame_len - (k - 1) * size
    if len(body) != expected or t_capture != t_capture:  # NaN check
        raise MalformedFragment("body length")
    return Fragment(stream, frame, bool(flags & FLAG_KEYFRAME), parity, index, k, m, t_capture,
                    frame_len, body)


class Packetizer:
    """Encoded frame -> list of payloads for `LinkCore.send(MessageClass.VIDEO, payload, now)`."""

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD, fec_overhead: float = 0.25) -> None:
        if max_payload <= HEADER.size + 16:
            raise ValueError(f"max_payload: {max_payload} leaves no room after the {HEADER.size}-byte header")
        if not 0 <= fec_overhead <= 1:
            raise ValueError(f"fec_overhead: {fec_overhead} must be within 0..1 (0 disables FEC)")
        self.max_body = max_payload - HEADER.size
        self.fec_overhead = fec_overhead

    def packetize(self, frame: EncodedFrame) -> list[bytes]:
        total = len(frame.data)
        if total == 0:
            return []
        k = math.ceil(total / self.max_body)
        if k > MAX_FRAGMENTS:
            raise ValueError(f"frame of {total} bytes needs {k} fragments (max {MAX_FRAGMENTS})")
        size = math.ceil(total / k)  # balanced fragments: the last one is not a tiny runt
        k = math.ceil(total / size)  # so the last fragment is never empty
        chunks = [frame.data[i * size : (i + 1) * size] for i in range(k)]
        m = parity_count(k, self.fec_overhead)
        flags = FLAG_KEYFRAME if frame.keyframe else 0
        payloads = [
            HEADER.pack(VIDEO_WIRE_VERSION, frame.stream, flags, 0, frame.frame_number, i, k, m,
                        frame.capture_time, total) + chunk
            for i, chunk in enumerate(chunks)
        ]
        for j, par in enumerate(make_parity(chunks, m, size)):
            payloads.append(HEADER.pack(VIDEO_WIRE_VERSION, frame.stream, flags | FLAG_PARITY, 0,
                                        frame.frame_number, j, k, m, frame.capture_time, total) + par)
        return payloads
