"""The messages from a site's pump thread to its publisher process (one SOCK_SEQPACKET message each).

    b"J" | key_len u16 | key | JSON body      a ready-to-publish record (schema.RecordEncoder)
    b"V" | clock_shift f64 | (len u32 | fragment)*   one tap VIDEO batch (link video payloads)
    b"S" | JSON                               the pump's counters, re-published with the process's own
    b"Q"                                      stop
and one message the other way, from the publisher process to the pump:
    b"O" | count u32                          observers of this site now (their liveliness tokens)
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

_KEY_LEN = struct.Struct("!H")
_SHIFT = struct.Struct("!d")
_LEN = struct.Struct("!I")
MAX_MESSAGE = 1 << 19  # one video batch above this is split (a keyframe of both eyes is ~0.2 MB)


def pack_record(key: str, body: bytes) -> bytes:
    raw = key.encode()
    return b"J" + _KEY_LEN.pack(len(raw)) + raw + body


def unpack_record(message: bytes) -> tuple[str, bytes]:
    (n,) = _KEY_LEN.unpack_from(message, 1)
    start = 1 + _KEY_LEN.size
    return message[start:start + n].decode(), message[start + n:]


def pack_video(clock_shift: float, fragments: Iterable[bytes]) -> list[bytes]:
    """One or more `V` messages carrying the fragments, each under MAX_MESSAGE."""
    head = b"V" + _SHIFT.pack(clock_shift)
    messages, parts, size = [], [head], len(head)
    for fragment in fragments:
        if size + _LEN.size + len(fragment) > MAX_MESSAGE and len(parts) > 1:
            messages.append(b"".join(parts))
            parts, size = [head], len(head)
        parts += [_LEN.pack(len(fragment)), fragment]
        size += _LEN.size + len(fragment)
    if len(parts) > 1:
        messages.append(b"".join(parts))
    return messages


def unpack_video(message: bytes) -> tuple[float, list[bytes]]:
    (shift,) = _SHIFT.unpack_from(message, 1)
    out, offset = [], 1 + _SHIFT.size
    while offset + _LEN.size <= len(message):
        (n,) = _LEN.unpack_from(message, offset)
        offset += _LEN.size
        out.append(message[offset:offset + n])
        offset += n
    return shift, out


def pack_observers(count: int) -> bytes:
    return b"O" + _LEN.pack(count)


def unpack_observers(message: bytes) -> int | None:
    """The count of an `O` message; None for anything else."""
    if len(message) != 1 + _LEN.size or message[:1] != b"O":
        return None
    return _LEN.unpack_from(message, 1)[0]
