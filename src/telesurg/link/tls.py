"""Mutually authenticated TLS 1.3 over memory buffers (stdlib `ssl`), so the handshake stays sans-I/O.

The TLS bytes travel on the link's own reliable channel; this module only turns "bytes in" into
"bytes out", "handshake done" and "application records", and reports failures with a reason.
"""

from __future__ import annotations

import os
import ssl
import tempfile

from telesurg.link.keys import Identity, cert_common_name, cert_fingerprint


class TlsFailure(Exception):
    """The TLS handshake or stream failed; `reason` is a short counter key (e.g. "not_allowed")."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def make_context(identity: Identity, peer_certs_pem: list[bytes], *, is_client: bool) -> ssl.SSLContext:
    """TLS 1.3 only, our certificate presented, the peer's required and checked against the allowlist."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT if is_client else ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # identity is the pinned certificate, not a DNS name
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if not peer_certs_pem:
        raise ValueError("peer_certs: at least one trusted peer certificate is required")
    ctx.load_verify_locations(cadata="".join(p.decode() for p in peer_certs_pem))
    # load_cert_chain only reads files: write the PEMs to a private temporary directory for a moment.
    with tempfile.TemporaryDirectory(prefix="telesurg-tls-") as tmp:
        cert_file, key_file = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
        with open(cert_file, "wb") as f:
            f.write(identity.cert_pem)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(identity.key_pem)
        ctx.load_cert_chain(cert_file, key_file)
    if not is_client:
        ctx.num_tickets = 0  # no resumption: every session is a full mutual handshake
    return ctx


class TlsChannel:
    """One TLS connection over two MemoryBIOs: feed peer bytes in, take bytes to send out."""

    def __init__(self, ctx: ssl.SSLContext, *, is_client: bool) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = ctx.wrap_bio(self._in, self._out, server_side=not is_client)
        self.handshake_done = False
        self.peer_cert_der: bytes | None = None

    def start(self) -> None:
        self._step()

    def feed(self, data: bytes) -> list[bytes]:
        """Give bytes from the peer; returns application data now readable. Raises TlsFailure."""
        self._in.write(data)
        if not self.handshake_done:
            self._step()
            if not self.handshake_done:
                return []
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._ssl.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError as exc:
                raise TlsFailure("closed", "peer closed the TLS channel") from exc
            except ssl.SSLError as exc:
                raise TlsFailure("tls", str(exc)) from exc
            if not chunk:
                break
            chunks.append(chunk)
        return chunks

    def write(self, data: bytes) -> None:
        if not self.handshake_done:
            raise RuntimeError("TLS handshake not complete")
        self._ssl.write(data)

    def take_output(self) -> bytes:
        return self._out.read()

    @property
    def peer_name(self) -> str:
        return cert_common_name(self.peer_cert_der) if self.peer_cert_der else ""

    @property
    def peer_fingerprint(self) -> str:
        return cert_fingerprint(self.peer_cert_der) if self.peer_cert_der else ""

    def _step(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            return
        except ssl.SSLCertVerificationError as exc:
            raise TlsFailure("not_allowed", exc.verify_message or str(exc)) from exc
        except ssl.SSLError as exc:
            reason = "not_allowed" if "CERTIFICATE" in str(exc).upper() or "UNKNOWN_CA" in str(exc).upper() \
                else "tls"
            raise TlsFailure(reason, str(exc)) from exc
        self.handshake_done = True
        self.peer_cert_der = self._ssl.getpeercert(binary_form=True)
