"""Message classes and the events a LinkCore hands to its application.

Events about a session carry its `sid` (0 when none applies), so an application behind a LinkHub can
tell its consoles apart: HandshakeComplete maps a sid to the peer's identity.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from telesurg.link.paths import PathState


class MessageClass(enum.IntEnum):
    CONTROL = 0  # servo commands and safety messages: sent at once, never queued behind anything
    TELEMETRY = 1
    VIDEO = 2  # bounded queue, dropped first under pressure
    EVENT = 3  # rare session events: reliable and ordered (through the TLS channel)


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """Mutual authentication done and datagram keys in use; commands can carry this identity."""

    peer_name: str
    peer_fingerprint: str
    at: float
    sid: int = 0  # the session's id, see the module docstring


@dataclass(frozen=True, slots=True)
class PeerRefused:
    reason: str  # "not_allowed", "fingerprint", "cidr", "rate_limited", "half_open_full", "tls", ...
    path: str
    addr: tuple[str, int] | None
    at: float
    sid: int = 0


@dataclass(frozen=True, slots=True)
class MessageReceived:
    msg_class: MessageClass
    seq: int
    payload: bytes
    path: str  # the path whose copy arrived first
    at: float
    sid: int = 0


@dataclass(frozen=True, slots=True)
class SessionEventReceived:
    payload: bytes
    at: float
    sid: int = 0


@dataclass(frozen=True, slots=True)
class PathStateChanged:
    path: str
    old: PathState
    new: PathState
    at: float
    sid: int = 0


@dataclass(frozen=True, slots=True)
class SessionClosed:
    reason: str
    at: float
    sid: int = 0


Event = (HandshakeComplete | PeerRefused | MessageReceived | SessionEventReceived | PathStateChanged
         | SessionClosed)
