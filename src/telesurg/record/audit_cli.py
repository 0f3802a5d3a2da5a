"""`telesurg audit verify FILE_OR_DIR [--cert site.crt]`: is a site's audit log intact, and if not, where not?

The investigator's side of `telesurg.record.audit`. `verify` reads every line of every file and checks
that it parses, is in canonical form, that its `hash` recomputes, that `prev` links it to the line
before, that indices are consecutive, that each file's header names the file before it, and that
each head describes the chain before it and (given the site's certificate) carries a valid signature.
It stops at the first broken entry and says why in one line naming the file, the line and the index.

Three outcomes are kept apart, because they mean different things after an incident:
- broken: something was changed, removed, inserted or reordered, or a signature does not verify;
- truncated or not closed: the site stopped without a final head (a crash, a kill, power loss); the
  entries before verify, but the last ones are not covered by a signature. This is not evidence of
  tampering, and it cannot be told apart from someone cutting off the tail: compare with off-site copies;
- intact, with notes when signatures were not checked (no `--cert`): the chain alone is consistent, but
  anyone can recompute a chain, so only a checked signature binds it to the site.
Giving `--cert` demands signatures: an unsigned head is then broken (a stripped signature looks so).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from telesurg.link.keys import IdentityError, cert_fingerprint, read_cert
from telesurg.record import (
    FIELDS,
    FILE_RE,
    ZERO_HASH,
    canonical,
    entry_hash,
    file_name,
    head_message,
    line_hash,
)


class AuditInputError(ValueError):
    """Nothing to verify (missing path, not an audit log, unusable certificate): not a broken log."""


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int  # entries that verified (all of them when ok)
    files: int
    signed_heads: int  # heads carrying a signature (checked against the certificate when one was given)
    first_broken: int | None = None  # index of the first entry that is broken or not covered
    problem: str | None = None  # why not ok; when ok, notes such as "signatures unchecked"
    status: str = "intact"  # intact | broken | truncated | not_closed
    where: str | None = None  # "file:line" of first_broken


class _Stop(Exception):
    def __init__(self, status: str, index: int | None, where: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.index, self.where, self.reason = status, index, where, reason


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


class _Checker:
    def __init__(self, cert_pem: bytes | None, whole_log: bool) -> None:
        self.public_key: ed25519.Ed25519PublicKey | None = None
        self.fingerprint: str | None = None
        if cert_pem is not None:
            try:
                key = x509.load_pem_x509_certificate(cert_pem).public_key()
            except ValueError as exc:
                raise AuditInputError("certificate: not a PEM X.509 certificate") from exc
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise AuditInputError("certificate: not an Ed25519 site certificate")
            self.public_key, self.fingerprint = key, cert_fingerprint(cert_pem)
        self.whole_log = whole_log  # a directory: the chain must start at entry 0 of file 0
        self.expect_i: int | None = 0 if whole_log else None
        self.prev: str | None = ZERO_HASH if whole_log else None
        self.site: str | None = None
        self.start: int | None = self.expect_i
        self.count = self.files = self.signed = 0
        self.last_kind = ""
        self.covered: int | None = None  # index of the last head
        self.uncovered_at: str | None = None  # where the first entry after the last head is
        self.prev_name: str | None = None
        self.partial: tuple[int, str] | None = None  # a cut-off last line of the previous file
        self.notes: list[str] = []

    def stop(self, where: str, reason: str, status: str = "broken") -> _Stop:
        return _Stop(status, self.expect_i, where, reason)

    def check_file(self, path: Path, number: int | None, last: bool) -> None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise AuditInputError(f"{path}: cannot read ({exc.strerror})") from exc
        lines = raw.split(b"\n")
        partial = lines.pop()  # b"" when the file ends with a newline
        if not self.whole_log and not any(_looks_like_entry(line) for line in lines):
            raise AuditInputError(f"{path}: not a telesurg audit log (no line is a JSON audit entry)")
        self.files += 1
        if self.whole_log and number != self.files - 1:
            site = m["site"] if (m := FILE_RE.match(path.name)) else "?"
            raise self.stop(f"{path.name}:1", f"file {file_name(site, self.files - 1)} is missing")
        if not lines:
            raise self.stop(f"{path.name}:1", "the file holds no complete entry (a crash just after it was "
                            "created, not tampering)" if last else "the file holds no complete entry",
                            "truncated" if last else "broken")
        for lineno, line in enumerate(lines, 1):
            self.check_line(line, f"{path.name}:{lineno}", lineno == 1, number)
        if partial:
            where = f"{path.name}:{len(lines) + 1}"
            if last:
                raise self.stop(where, f"truncated: the last line was cut off mid-write ({len(partial)} bytes): "
                                f"a crash, not tampering; the {self.count} entries before it verify"
                                f"{self._uncovered_note()}", "truncated")
            self.partial = (len(partial), where)
        self.prev_name = path.name

    def check_line(self, line: bytes, where: str, first_in_file: bool, number: int | None) -> None:
        try:
            entry = json.loads(line)
        except ValueError:
            raise self.stop(where, "not valid JSON (the line was damaged or edited)") from None
        if not isinstance(entry, dict) or set(entry) != FIELDS:
            raise self.stop(where, "not an audit entry (wrong fields)")
        if not (type(entry["i"]) is int and isinstance(entry["t"], int | float) and isinstance(entry["site"], str)
                and isinstance(entry["kind"], str) and isinstance(entry["data"], dict)
                and (entry["t_local"] is None or isinstance(entry["t_local"], int | float))
                and _is_hex64(entry["prev"]) and _is_hex64(entry["hash"])):
            raise self.stop(where, "not an audit entry (a field has the wrong type)")
        if self.expect_i is None:  # a single file: log file 0 starts from zeros, a later one where it starts
            first = entry["kind"] == "header" and entry["data"].get("file") == 0
            self.expect_i = self.start = 0 if first else entry["i"]
            self.prev = ZERO_HASH if first else None
        if entry_hash(entry) != entry["hash"]:
            raise self.stop(where, "hash does not match the entry's content (the entry was edited)")
        if canonical(entry).encode() != line:
            raise self.stop(where, "the line is not in canonical form (it was rewritten)")
        i, kind, data = entry["i"], entry["kind"], entry["data"]
        if i != self.expect_i:
            raise self.stop(where, f"expected entry {self.expect_i}, found entry {i} (an entry was removed, "
                            "inserted or moved)")
        if self.prev is not None and entry["prev"] != self.prev:
            raise self.stop(where, "prev does not match the line before it (that line was rewritten with a "
                            "recomputed hash, or this entry's prev was changed)")
        if self.site is None:
            self.site = entry["site"]
        elif entry["site"] != self.site:
            raise self.stop(where, f"site changes from {self.site!r} to {entry['site']!r}")
        if (kind == "header") != first_in_file:
            raise self.stop(where, "a file must begin with a header entry, and only there")
        if kind == "header":
            self.check_header(data, where, number)
        elif kind == "head":
            self.check_head(i, entry["prev"], data, where)
        if kind != "head" and self.uncovered_at is None:
            self.uncovered_at = where
        self.prev, self.expect_i, self.count, self.last_kind = line_hash(line), i + 1, self.count + 1, kind

    def check_header(self, data: dict[str, Any], where: str, number: int | None) -> None:
        if number is not None and data.get("file") != number:
            raise self.stop(where, f"the header says file {data.get('file')!r}, the name says {number} "
                            "(a file was renamed)")
        if self.whole_log and data.get("previous_file") != self.prev_name:
            raise self.stop(where, f"the header names previous file {data.get('previous_file')!r}, "
                            f"expected {self.prev_name!r}")
        resumed = data.get("resumed") if isinstance(data.get("resumed"), dict) else {}
        cut = self.partial[0] if self.partial else 0
        if self.whole_log and resumed.get("partial_bytes", 0) != cut:
            raise self.stop(self.partial[1] if self.partial else where,
                            "a cut-off line in the middle of the log that the next file's header does not "
                            "account for" if cut else "the header accounts for a cut-off line that is not there")
        self.partial = None
        if self.prev is None:
            self.notes.append(f"the first entry chains to {data.get('previous_file')}, not checked: verify the "
                              "directory to check across files")

    def check_head(self, i: int, prev: str, data: dict[str, Any], where: str) -> None:
        if data.get("last_hash") != prev or data.get("entries") != i:
            raise self.stop(where, "the head does not describe the chain before it")
        sig = data.get("signature")
        if self.public_key is not None:
            if sig is None:
                raise self.stop(where, "the head is unsigned, but a certificate was given (a signature "
                                "was stripped, or the site ran without its key)")
            if data.get("cert_fingerprint") != self.fingerprint:
                raise self.stop(where, f"the head names certificate {str(data.get('cert_fingerprint'))[:16]}..., "
                                f"not the given one ({self.fingerprint[:16] if self.fingerprint else ''}...)")
            try:
                self.public_key.verify(base64.b64decode(sig, validate=True), head_message(prev))
            except (InvalidSignature, ValueError, TypeError):
                raise self.stop(where, "the head's signature does not verify against the certificate: "
                                f"entries {self.start}..{i - 1} are not authenticated") from None
        if sig is not None:
            self.signed += 1
        self.covered, self.uncovered_at = i, None

    def first_uncovered(self) -> int:
        return (self.start or 0) if self.covered is None else self.covered + 1

    def _uncovered_note(self) -> str:
        n = (self.expect_i or 0) - self.first_uncovered()
        return f"; the last {n} are not covered by a signature" if n else ""

    def finish(self) -> None:
        if self.last_kind != "head":
            first = self.first_uncovered()
            n = (self.expect_i or 0) - first
            signed = "signed " if self.public_key is not None else ""
            raise _Stop("not_closed", first, self.uncovered_at or "?",
                        f"not closed: the last {n} entries after the last {signed}head are not covered by a "
                        "signature (a crash or a kill leaves this; it is not evidence of tampering)")
        if self.public_key is None:
            self.notes.insert(0, f"unsigned/unchecked: no certificate given, {self.signed} head signatures not "
                              "checked" if self.signed else "unsigned/unchecked: the heads carry no signature, "
                              "the site had no key")


def _looks_like_entry(line: bytes) -> bool:
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    return isinstance(entry, dict) and "hash" in entry and "i" in entry


def _log_files(path: Path) -> list[tuple[int | None, Path]]:
    if path.is_dir():
        found: dict[str, list[tuple[int, Path]]] = {}
        for p in path.iterdir():
            if m := FILE_RE.match(p.name):
                found.setdefault(m["site"], []).append((int(m["n"]), p))
        if not found:
            raise AuditInputError(f"{path}: no <site>-audit-<n>.jsonl files in this directory")
        if len(found) > 1:
            raise AuditInputError(f"{path}: holds the logs of several sites ({', '.join(sorted(found))}): "
                                  "give one file, or a directory per site")
        return [(n, p) for n, p in sorted(next(iter(found.values())))]
    if not path.exists():
        raise AuditInputError(f"{path}: no such file or directory")
    m = FILE_RE.match(path.name)
    return [(int(m["n"]) if m else None, path)]


def verify(path_or_dir: Path | str, cert_pem: bytes | None = None) -> VerifyResult:
    """Check one audit file, or a directory holding one site's files; raises only `AuditInputError`."""
    path = Path(path_or_dir)
    files = _log_files(path)
    checker = _Checker(cert_pem, whole_log=path.is_dir())
    try:
        for k, (number, file) in enumerate(files):
            checker.check_file(file, number, last=k == len(files) - 1)
        checker.finish()
    except _Stop as stop:
        return VerifyResult(False, checker.count, checker.files, checker.signed, stop.index, stop.reason,
                            stop.status, stop.where)
    return VerifyResult(True, checker.count, checker.files, checker.signed, None,
                        "; ".join(checker.notes) or None)


def describe(result: VerifyResult) -> str:
    """The one line `telesurg audit verify` prints."""
    if result.ok:
        note = f" ({result.problem})" if result.problem else ""
        return f"intact: {result.entries} entries in {result.files} files, {result.signed_heads} signed heads{note}"
    at = f"entry {result.first_broken}" if result.first_broken is not None else "an entry"
    if result.status == "broken":
        return f"BROKEN at {at} ({result.where}): {result.problem}"
    return f"{result.problem} [from {at}, {result.where}]"  # a crash: say so first, not "BROKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = sub.add_parser("verify", help="check a log file or a site's log directory")
    check.add_argument("path", type=Path, metavar="FILE_OR_DIR", help="<site>-audit-<n>.jsonl, or its directory")
    check.add_argument("--cert", type=Path, help="the site's certificate; without it signatures are not checked")


def run(args: argparse.Namespace) -> int:
    try:
        cert = read_cert(args.cert) if args.cert is not None else None
        result = verify(args.path, cert)
    except (AuditInputError, IdentityError) as exc:
        print(f"telesurg audit: {exc}", file=sys.stderr)
        return 2
    print(describe(result))
    return 0 if result.ok else 1
