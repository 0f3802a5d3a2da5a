"""Identities, the `telesurg keys` command and configuration errors that name the field."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from telesurg.cli import main
from telesurg.link.config import LinkConfig
from telesurg.link.core import LinkCore
from telesurg.link.keys import IdentityError, generate_identity, load_identity, make_identity


def test_generate_identity_writes_key_and_self_signed_cert(tmp_path: Path) -> None:
    ident = generate_identity(tmp_path / "keys", "robot")
    assert ident.key_path == tmp_path / "keys" / "robot.key" and ident.cert_path == tmp_path / "keys" / "robot.crt"
    assert stat.S_IMODE(ident.key_path.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(ident.cert_path.read_bytes())
    assert cert.subject == cert.issuer
    assert cert.subject.rfc4514_string() == "CN=robot"
    der = cert.public_bytes(serialization.Encoding.DER)
    assert ident.fingerprint == hashlib.sha256(der).hexdigest()
    loaded = load_identity(ident.cert_path, ident.key_path)
    assert (loaded.name, loaded.fingerprint) == ("robot", ident.fingerprint)
    with pytest.raises(IdentityError, match="already exists"):
        generate_identity(tmp_path / "keys", "robot")


def test_keys_are_fresh_every_time() -> None:
    assert make_identity("a").key_pem != make_identity("a").key_pem


def test_mismatched_key_and_cert_are_refused(tmp_path: Path) -> None:
    a, b = generate_identity(tmp_path, "a"), generate_identity(tmp_path, "b")
    with pytest.raises(IdentityError, match="does not match"):
        load_identity(a.cert_path, b.key_path)
    with pytest.raises(IdentityError, match="cannot read certificate"):
        load_identity(tmp_path / "missing.crt", a.key_path)


def test_keys_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "--name", "console", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    ident = load_identity(tmp_path / "console.crt", tmp_path / "console.key")
    assert ident.fingerprint in out
    assert main(["keys", "--name", "console", "--out", str(tmp_path)]) == 1  # never overwrite a key


def _config(tmp_path: Path, **changes: object) -> dict:
    robot, console = generate_identity(tmp_path, "robot"), generate_identity(tmp_path, "console")
    base = {
        "identity_cert": robot.cert_path, "identity_key": robot.key_path, "peer_certs": [console.cert_path],
        "paths": [{"name": "a", "local": "127.0.0.1:47001"}, {"name": "b", "local": "127.0.0.1:47002"}],
    }
    return {**base, **changes}


def test_config_builds_a_core_from_files(tmp_path: Path) -> None:
    config = LinkConfig(**_config(tmp_path))
    core = LinkCore(config, load_identity(config.identity_cert, config.identity_key), is_client=False)
    assert core.path_names == ("a", "b") and not core.established


@pytest.mark.parametrize(("changes", "field", "hint"), [
    ({"paths": [{"name": "a", "local": "127.0.0.1:1"}, {"name": "b", "local": "x:2", "remote": "nope"}]},
     "paths.1.remote", "expected host:port"),
    ({"paths": [{"name": "a", "local": "127.0.0.1"}]}, "paths.0.local", "expected host:port"),
    ({"paths": [{"name": "a", "local": "h:1"}, {"name": "a", "local": "h:2"}]}, "paths", "unique"),
    ({"allowed_cidrs": ["10.0.0.0/33"]}, "allowed_cidrs", "expected a CIDR"),
    ({"allowed_fingerprints": ["abc"]}, "allowed_fingerprints", "SHA-256"),
    ({"rekey_s": 600}, "rekey_s", "less than or equal to 120"),
    ({"probe_hz": 0}, "probe_hz", "greater than or equal to 1"),
    ({"peer_certs": []}, "peer_certs", "at least 1"),
    ({"recover_loss_pct": 5.0}, "", "recover_loss_pct must be below degraded_loss_pct"),
])
def test_config_errors_name_the_field_and_the_fix(tmp_path: Path, changes: dict, field: str, hint: str) -> None:
    with pytest.raises(ValidationError) as info:
        LinkConfig(**_config(tmp_path, **changes))
    text = str(info.value)
    assert field in text and hint in text, text


def test_missing_peer_certificate_file_is_named(tmp_path: Path) -> None:
    config = LinkConfig(**_config(tmp_path, peer_certs=[tmp_path / "nobody.crt"]))
    with pytest.raises(IdentityError, match="nobody.crt"):
        config.to_settings()
