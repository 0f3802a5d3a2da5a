"""Datagram keys by epoch: AES-256-GCM, 64-bit counter nonces, one replay window per receive epoch.

A rekey installs the next epoch's receive key before anyone sends with it, and the previous epoch
stays accepted for a grace period after the peer is seen using the new one, so traffic never stops.
The nonce is the header's epoch || counter, so it is authenticated and never repeats under one key.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from telesurg.link.replay import ReplayWindow
from telesurg.link.wire import SEALED_HEADER, VERSION, Kind, WireError

KEY_BYTES = 32
_HEADER_SIZE = SEALED_HEADER.size
_NONCE_START = 10  # epoch u32 + counter u64 at the end of the sealed header form the 12-byte nonce
_MAX_COUNTER = 2**64 - 1
_SEALED = int(Kind.SEALED)  # plain int: an IntEnum attribute read per datagram costs ~0.2 µs
_UNPACK_HEADER = SEALED_HEADER.unpack_from


class _RecvEpoch:
    __slots__ = ("aead", "window", "expires_at")

    def __init__(self, key: bytes) -> None:
        self.aead = AESGCM(key)
        self.window = ReplayWindow()
        self.expires_at: float | None = None


class KeyEpochs:
    """Seal outgoing and open incoming SEALED datagrams of one session."""

    __slots__ = ("session", "grace_s", "_send_epoch", "_send_aead", "_counter", "_recv", "_newest_used",
                 "_pack", "decrypts")

    def __init__(self, session: int, grace_s: float) -> None:
        self.session = session
        self.grace_s = grace_s
        self._send_epoch = 0
        self._send_aead: AESGCM | None = None
        self._counter = 0
        self._recv: dict[int, _RecvEpoch] = {}
        self._newest_used = 0  # newest receive epoch the peer has actually used
        self._pack = SEALED_HEADER.pack
        self.decrypts = 0  # AEAD open attempts: shows (in tests) that refused counters never reach the cipher

    @property
    def can_send(self) -> bool:
        return self._send_aead is not None

    @property
    def send_epoch(self) -> int:
        return self._send_epoch

    @property
    def recv_epochs(self) -> list[int]:
        return sorted(self._recv)

    def install_send(self, epoch: int, key: bytes) -> None:
        if epoch <= self._send_epoch:
            raise ValueError("send epochs must increase: a key is never reused")
        self._send_epoch, self._send_aead, self._counter = epoch, AESGCM(key), 0

    def install_recv(self, epoch: int, key: bytes) -> None:
        if epoch in self._recv:
            raise ValueError("receive epoch already installed")
        self._recv[epoch] = _RecvEpoch(key)

    def seal(self, inner: bytes) -> bytes:
        """Encrypt one inner frame into a full datagram (header || ciphertext || tag)."""
        counter = self._counter
        if counter >= _MAX_COUNTER or self._send_aead is None:
            raise RuntimeError("no usable send key (not established, or counter exhausted: rekey)")
        self._counter = counter + 1
        header = self._pack(VERSION, _SEALED, self.session, self._send_epoch, counter)
        return header + self._send_aead.encrypt(header[_NONCE_START:], inner, header)

    def open(self, datagram: bytes, now: float) -> tuple[int, bytes]:
        """(epoch, inner plaintext), or WireError with the reason to count."""
        if len(datagram) < _HEADER_SIZE + 16:
            raise WireError("malformed")
        _, _, session, epoch, counter = _UNPACK_HEADER(datagram)
        if session != self.session:
            raise WireError("session")
        state = self._recv.get(epoch)
        if state is None or (state.expires_at is not None and now >= state.expires_at):
            raise WireError("epoch")
        # Read-only check before any AEAD work; the window moves only once the datagram authenticated,
        # so a forged counter can neither advance it nor burn a genuine one.
        if state.window.check(counter) is not None:
            raise WireError("replay")
        header = datagram[:_HEADER_SIZE]
        self.decrypts += 1
        try:
            inner = state.aead.decrypt(header[_NONCE_START:], datagram[_HEADER_SIZE:], header)
        except InvalidTag:
            raise WireError("auth") from None
        state.window.accept(counter)
        if epoch > self._newest_used:
            self._on_new_epoch_used(epoch, now)
        return epoch, inner

    def _on_new_epoch_used(self, epoch: int, now: float) -> None:
        """The peer switched: older epochs stay valid for grace_s (late copies), then are forgotten."""
        self._newest_used = epoch
        for old_epoch, state in list(self._recv.items()):
            if old_epoch < epoch:
                if state.expires_at is None:
                    state.expires_at = now + self.grace_s
                elif now >= state.expires_at:
                    del self._recv[old_epoch]
