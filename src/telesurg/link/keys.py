"""Site identities: an Ed25519 key pair and a self-signed X.509 certificate per site.

Peers trust each other by exchanging certificates out of band (an allowlist), not through a CA: a
telesurgery link joins two known sites, and a pinned certificate is simpler to audit than a PKI.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

VALIDITY_DAYS = 3650


class IdentityError(ValueError):
    """A key or certificate file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Identity:
    """One site's name, certificate and private key, all PEM; files are optional (tests work in memory)."""

    name: str
    cert_pem: bytes
    key_pem: bytes
    cert_path: Path | None = None
    key_path: Path | None = None

    @property
    def fingerprint(self) -> str:
        return cert_fingerprint(self.cert_pem)


def cert_fingerprint(cert_pem_or_der: bytes) -> str:
    """SHA-256 of the certificate DER, lowercase hex: the value operators compare and pin."""
    der = cert_pem_or_der
    if cert_pem_or_der.lstrip().startswith(b"-----BEGIN"):
        der = x509.load_pem_x509_certificate(cert_pem_or_der).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def cert_common_name(cert_pem_or_der: bytes) -> str:
    """The subject CN, used as the peer's human-readable name in events and commands."""
    if cert_pem_or_der.lstrip().startswith(b"-----BEGIN"):
        cert = x509.load_pem_x509_certificate(cert_pem_or_der)
    else:
        cert = x509.load_der_x509_certificate(cert_pem_or_der)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def make_identity(name: str) -> Identity:
    """Create a fresh in-memory identity (self-signed Ed25519 certificate, CN = name)."""
    if not name or "/" in name or name.startswith("."):
        raise IdentityError(f"name {name!r}: expected a plain site name such as 'robot' or 'console'")
    key = ed25519.Ed25519PrivateKey.generate()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, algorithm=None)
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return Identity(name, cert.public_bytes(serialization.Encoding.PEM), key_pem)


def generate_identity(directory: Path, name: str) -> Identity:
    """Write NAME.key (mode 0600) and NAME.crt into directory; refuse to overwrite an existing key."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    if key_path.exists():
        raise IdentityError(f"{key_path} already exists: remove it or choose another --name/--out")
    ident = make_identity(name)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(ident.key_pem)
    cert_path.write_bytes(ident.cert_pem)
    return Identity(name, ident.cert_pem, ident.key_pem, cert_path, key_path)


def load_identity(cert_path: Path, key_path: Path) -> Identity:
    """Read an identity written by `generate_identity` (or any PEM cert + matching key)."""
    cert_pem = read_cert(cert_path)
    try:
        key_pem = Path(key_path).read_bytes()
        key = serialization.load_pem_private_key(key_pem, password=None)
    except OSError as exc:
        raise IdentityError(f"{key_path}: cannot read key ({exc.strerror}); run `telesurg keys`") from exc
    except ValueError as exc:
        raise IdentityError(f"{key_path}: not an unencrypted PEM private key") from exc
    cert = x509.load_pem_x509_certificate(cert_pem)
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, pub) != cert.public_key().public_bytes(
            serialization.Encoding.DER, pub):
        raise IdentityError(f"{key_path} does not match {cert_path}: regenerate both with `telesurg keys`")
    return Identity(cert_common_name(cert_pem), cert_pem, key_pem, Path(cert_path), Path(key_path))


def read_cert(path: Path) -> bytes:
    """Read and validate one PEM certificate file."""
    try:
        pem = Path(path).read_bytes()
        x509.load_pem_x509_certificate(pem)
    except OSError as exc:
        raise IdentityError(f"{path}: cannot read certificate ({exc.strerror})") from exc
    except ValueError as exc:
        raise IdentityError(f"{path}: not a PEM X.509 certificate") from exc
    return pem
