"""Secure multi-path datagram link: mutual TLS 1.3 handshake, AEAD datagrams, first-copy-wins paths."""

from telesurg.link.config import LinkConfig, LinkSettings, PathConfig
from telesurg.link.core import LinkCore
from telesurg.link.events import (
    Event,
    HandshakeComplete,
    MessageClass,
    MessageReceived,
    PathStateChanged,
    PeerRefused,
    SessionClosed,
    SessionEventReceived,
)
from telesurg.link.hub import HubSession, LinkHub
from telesurg.link.keys import Identity, generate_identity, load_identity, make_identity
from telesurg.link.paths import PathState, PathStats

__all__ = [
    "Event", "HandshakeComplete", "HubSession", "Identity", "LinkConfig", "LinkCore", "LinkHub", "LinkSettings",
    "MessageClass", "MessageReceived", "PathConfig", "PathState", "PathStateChanged", "PathStats", "PeerRefused",
    "SessionClosed", "SessionEventReceived", "generate_identity", "load_identity", "make_identity",
]
