"""Binary layout of link datagrams: fixed `struct` headers, versioned, parsed without raising.

Outer header (all packets): version u8, kind u8, session id u64.
  HS_DATA / HS_ACK (plaintext, before datagram keys exist): reliable-channel frames carrying TLS bytes.
  SEALED: + epoch u32 + counter u64, then AEAD(inner); the whole 22-byte header is the associated data.
Inner frames (inside SEALED): kind u8 then a kind-specific body (message, probe, reliable data/ack).
"""

from __future__ import annotations

import enum
import struct

VERSION = 1
MAX_DATAGRAM = 1400
MAX_PAYLOAD = 1200  # largest application payload per message (video fragments are sized for it)


class Kind(enum.IntEnum):
    HS_DATA = 1
    HS_ACK = 2
    SEALED = 3
    HS_PAD = 4  # client padding while handshaking: it buys the server's reply bytes (no amplification)


class Inner(enum.IntEnum):
    MSG = 1
    PROBE = 2
    PROBE_REPLY = 3
    REL_DATA = 4
    REL_ACK = 5
    CLOSE = 6


OUTER = struct.Struct("!BBQ")
SEALED_HEADER = struct.Struct("!BBQIQ")
REL_DATA = struct.Struct("!I")
REL_ACK = struct.Struct("!IQ")
MSG = struct.Struct("!BBQ")  # inner kind, message class, message seq
PROBE = struct.Struct("!BId")  # inner kind, probe id, t1 (sender clock)
PROBE_REPLY = struct.Struct("!BIdd")

_SEALED_PREFIX = bytes([VERSION, Kind.SEALED])
_KINDS = frozenset(int(k) for k in Kind)  # parse_outer runs per datagram: no enum attribute reads there
_OUTER_UNPACK = OUTER.unpack_from
_OUTER_SIZE = OUTER.size


class WireError(ValueError):
    """A datagram that does not parse; `reason` is the counter key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def peek_session_id(datagram: bytes) -> int | None:
    """Session id of a datagram without any other parsing: lets a listener route to the right LinkCore."""
    if len(datagram) < OUTER.size or datagram[0] != VERSION:
        return None
    return OUTER.unpack_from(datagram)[2]


def parse_outer(datagram: bytes) -> tuple[int, int]:
    """(kind, session id) or WireError("malformed"/"version")."""
    if len(datagram) < _OUTER_SIZE:
        raise WireError("malformed")
    version, kind, session = _OUTER_UNPACK(datagram)
    if version != VERSION:
        raise WireError("version")
    if kind not in _KINDS:
        raise WireError("malformed")
    return kind, session


def encode_hs_pad(session: int, size: int) -> bytes:
    """A padding datagram of `size` bytes in all (at least the header) for a handshaking session."""
    return OUTER.pack(VERSION, Kind.HS_PAD, session) + bytes(max(0, size - OUTER.size))


def encode_hs_data(session: int, seq: int, data: bytes) -> bytes:
    return OUTER.pack(VERSION, Kind.HS_DATA, session) + REL_DATA.pack(seq) + data


def encode_hs_ack(session: int, cumulative: int, sack: int) -> bytes:
    return OUTER.pack(VERSION, Kind.HS_ACK, session) + REL_ACK.pack(cumulative, sack)


def sealed_header(session: int, epoch: int, counter: int) -> bytes:
    return SEALED_HEADER.pack(VERSION, Kind.SEALED, session, epoch, counter)


def parse_sealed_header(datagram: bytes) -> tuple[int, int, int]:
    """(session, epoch, counter); the datagram must be at least header + 16-byte tag."""
    if len(datagram) < SEALED_HEADER.size + 16:
        raise WireError("malformed")
    _, _, session, epoch, counter = SEALED_HEADER.unpack_from(datagram)
    return session, epoch, counter


def parse_rel_data(body: bytes | memoryview) -> tuple[int, bytes]:
    if len(body) < REL_DATA.size:
        raise WireError("malformed")
    return REL_DATA.unpack_from(body)[0], bytes(body[REL_DATA.size:])


def parse_rel_ack(body: bytes | memoryview) -> tuple[int, int]:
    if len(body) != REL_ACK.size:
        raise WireError("malformed")
    cumulative, sack = REL_ACK.unpack_from(body)
    return cumulative, sack
