"""One link session: its TLS channel, reliable channel, datagram key epochs and the records that
travel inside TLS (datagram keys, session events, close)."""

from __future__ import annotations

import struct

from telesurg.link.epochs import KEY_BYTES, KeyEpochs
from telesurg.link.reliable import ReliableChannel
from telesurg.link.tls import TlsChannel

Addr = tuple[str, int]
RECORD = struct.Struct("!BH")  # records inside the TLS stream: type, length
RECORD_KEYS, RECORD_EVENT, RECORD_CLOSE = 1, 2, 3
KEYS = struct.Struct(f"!I{KEY_BYTES}s{KEY_BYTES}s")  # epoch, client->server key, server->client key
_MAX_RECORD = 65535


class Session:
    """Pending until mutual authentication is done; then the live session of its link (handshake.py's
    SessionManager), established once datagram keys are in use both ways."""

    def __init__(self, sid: int, tls: TlsChannel, now: float, grace_s: float) -> None:
        self.sid = sid
        self.tls = tls
        self.rel = ReliableChannel()
        self.epochs = KeyEpochs(sid, grace_s)
        self.started = now
        self.addrs: dict[str, Addr] = {}  # peer address per path, learnt from its datagrams
        self.verified = False  # TLS done and the peer's certificate accepted
        self.established = False  # and datagram keys in use both ways: the application may send
        # silence (no datagram on any path) is counted from here: establishment, or a local clock step
        self.silence_from = now
        self.pending_send: tuple[int, bytes] | None = None  # server: next send key, used once the peer has it
        self.next_rekey: float | None = None
        # server, until the peer is authenticated: never send more bytes than it sent (amplification)
        self.bytes_in = 0
        self.bytes_out = 0
        self.held: list[tuple[str, bytes, Addr | None]] = []  # plaintext frames over that budget, for later
        self.heard: list[str] = []  # paths the peer was heard on, first heard first
        self._records = bytearray()

    def write_record(self, record_type: int, body: bytes) -> None:
        """Encrypt one record with TLS and queue the TLS bytes on the reliable channel."""
        for start in range(0, max(len(body), 1), _MAX_RECORD):
            part = body[start:start + _MAX_RECORD]
            self.tls.write(RECORD.pack(record_type, len(part)) + part)
        self.rel.send(self.tls.take_output())

    def read_records(self, data: bytes) -> list[tuple[int, bytes]]:
        """Complete (type, body) records from decrypted TLS application data."""
        buf = self._records
        buf += data
        records = []
        while len(buf) >= RECORD.size:
            record_type, length = RECORD.unpack_from(buf)
            if len(buf) < RECORD.size + length:
                break
            records.append((record_type, bytes(buf[RECORD.size:RECORD.size + length])))
            del buf[:RECORD.size + length]
        return records
