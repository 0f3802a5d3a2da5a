"""Black-box recording of a site (issue #12): the audit log's on-disk format, shared by its writer
(`telesurg.record.audit.AuditLog`) and its verifier (`telesurg.record.audit_cli.verify`, the command
`telesurg audit verify`). Both are importable from here: `from telesurg.record import AuditLog, verify`.

Format: one line per entry, canonical JSON (`json.dumps(sort_keys=True, separators=(",", ":"))`),
with fields `i` (index from 0, continuing across files and runs), `t` (wall clock, epoch s),
`t_local` (the site's monotonic clock, or null), `site`, `kind`, `data`, `prev` (SHA-256 hex of the
previous entry's line; 64 zeros for the very first entry) and `hash` (SHA-256 hex of the canonical
JSON of the entry without `hash`). Files are `<site>-audit-<n>.jsonl`. Each begins with a `header`
entry (`format`, `file`, `previous_file`, `cert_fingerprint`) whose `prev` chains to the previous
file's last line; a run that finds earlier files continues their chain in a new file, its header's
`data.resumed` saying whether the previous one was closed and how many bytes of a cut-off last line
it ends with. A `head` entry (at each rotation and at close) holds `last_hash` (its own `prev`),
`entries` (its own `i`: how many entries it covers), `signature` (base64 Ed25519 over
`HEAD_CONTEXT + last_hash` as ASCII, the context so that a head signature can never pass for another
use of the site key; null without an identity), `cert_fingerprint` and `reason`. A `lost` entry
counts entries a disk error kept from being written.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

FORMAT = "telesurg-audit/1"
ZERO_HASH = "0" * 64
HEAD_CONTEXT = b"telesurg-audit-head/1\n"
FIELDS = frozenset({"i", "t", "t_local", "site", "kind", "data", "prev", "hash"})
FILE_RE = re.compile(r"^(?P<site>.+)-audit-(?P<n>\d+)\.jsonl$")

_LAZY = {"AuditLog": "telesurg.record.audit", "SYNC_INTERVAL_S": "telesurg.record.audit",
         "verify": "telesurg.record.audit_cli", "VerifyResult": "telesurg.record.audit_cli",
         "AuditInputError": "telesurg.record.audit_cli"}


def canonical(obj: Any) -> str:
    """The one serialisation that is hashed and written (values JSON cannot hold become strings)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def entry_hash(entry: dict[str, Any]) -> str:
    """What an entry's `hash` holds: SHA-256 of its canonical JSON without `hash`."""
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"}).encode()).hexdigest()


def line_hash(line: bytes) -> str:
    """What the next entry's `prev` holds: SHA-256 of this entry's line (without the newline)."""
    return hashlib.sha256(line).hexdigest()


def head_message(last_hash: str) -> bytes:
    """The bytes a head's signature is over."""
    return HEAD_CONTEXT + last_hash.encode("ascii")


def file_name(site: str, n: int) -> str:
    return f"{site}-audit-{n}.jsonl"


def __getattr__(name: str) -> Any:
    """The writer and the verifier load on first use, so the format alone costs no `cryptography` import."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'telesurg.record' has no attribute {name!r}")
