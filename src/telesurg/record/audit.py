"""A site's tamper-evident, append-only audit log: the black box of issue #12.

After an incident an investigator asks what the site decided and when: every supervisor transition,
hold, local override, handover and refused peer, and the configuration and software version it ran.
`AuditLog` writes those events as JSON lines into `<site>-audit-<n>.jsonl`; `verify` (here too, defined
in `telesurg.record.audit_cli`; the command `telesurg audit verify`) names the first broken entry.

What the log proves. Each entry carries `prev`, the SHA-256 of the previous entry's line, and `hash`,
the SHA-256 of its own canonical JSON without `hash`, so an edited, removed, inserted or reordered
entry breaks the chain at that point. At every rotation and at `close()` a `head` entry signs the
chain so far with the site's Ed25519 key: the signature binds every earlier entry to that site.
What it does not prove. Anyone can recompute a hash chain: without the certificate check only
accidents and clumsy edits are caught. Anyone holding the site key can rewrite everything and re-sign.
Entries after the last head (a crash, a kill) are not covered by a signature until a later run's
head covers them, and cutting off the tail of a log looks exactly like a crash. So keep copies of
closed files off the site, as soon as they rotate.

The format is described in `telesurg.record`.

Durability bound. `append` writes its line to the kernel at once (one `os.write`, no user-space
buffer), so a crash of the process loses nothing already appended. A background thread fsyncs at most
once per `sync_interval_s` (default 0.1 s) and only when something was written, and heads are fsynced
when written: a power loss or kernel crash loses at most the entries of the last 100 ms (plus one
fsync's duration). `append` itself never waits on the disk except at a rotation. A disk error never
raises into the caller: the entry is counted as lost, one error line is logged per outage, and the
first append that succeeds afterwards first writes a `lost` entry with the count and kinds.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from telesurg.link.keys import Identity
from telesurg.record import FORMAT, ZERO_HASH, canonical, file_name, head_message, line_hash

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 0.1  # the fsync bound: at most this much of the newest entries can be lost on power loss


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class AuditLog:
    """Append-only, hash-chained, head-signed event log of one site; thread-safe. See the module doc."""

    def __init__(self, directory: Path, site: str, identity: Identity | None, *,
                 rotate_bytes: int = 16 << 20, rotate_s: float = 600.0,
                 sync_interval_s: float = SYNC_INTERVAL_S, clock: Callable[[], float] = time.time) -> None:
        if not site or "/" in site or site.startswith("."):
            raise ValueError(f"site {site!r}: expected a plain site name such as 'robot'")
        self.directory, self.site = Path(directory), site
        self._rotate_bytes, self._rotate_s, self._sync_interval, self._clock = (
            rotate_bytes, rotate_s, sync_interval_s, clock)
        self._key: ed25519.Ed25519PrivateKey | None = None
        self._fingerprint: str | None = None
        if identity is not None:
            key = serialization.load_pem_private_key(identity.key_pem, password=None)
            if not isinstance(key, ed25519.Ed25519PrivateKey):
                raise ValueError(f"identity {identity.name!r}: audit heads are signed with an Ed25519 key")
            self._key, self._fingerprint = key, identity.fingerprint
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._fd: int | None = None
        self._path: Path | None = None
        self._size, self._opened_at, self._needs_truncate = 0, 0.0, False
        self._i, self._prev, self._n = 0, ZERO_HASH, 0
        self._prev_file: str | None = None
        self._resumed: dict[str, Any] | None = None
        self._reuse = False  # the newest file was created but never got its header: overwrite it
        self._dirty, self._last_sync, self._closed, self._failing = False, 0.0, False, False
        self._flusher: threading.Thread | None = None
        self._pending: Counter[str] = Counter()  # kinds of the entries lost since the last `lost` entry
        self._pending_t: list[float] = []
        self._last_error = ""
        self.appended = self.lost = self.write_errors = self.sync_errors = self.dropped_after_close = 0
        try:
            self._resume()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("audit log %s: cannot continue the chain of the earlier files (%s); file %d starts a "
                      "fresh chain, which verify will report as a break", self.directory, exc, self._n)
            self._i, self._prev, self._resumed = 0, ZERO_HASH, {"error": str(exc)}

    def append(self, kind: str, data: dict[str, Any], t_local: float | None = None) -> None:
        """Record one event; never raises for a disk error (see `stats`)."""
        with self._lock:
            if self._closed:
                self.dropped_after_close += 1
                if self.dropped_after_close == 1:
                    log.warning("audit log %s: append(%r) after close() is dropped", self.site, kind)
                return
            try:
                self._prepare()
                self._write(kind, data, t_local)
                self.appended += 1
            except OSError as exc:
                self._disk_error(exc, kind)
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, name=f"audit-sync-{self.site}",
                                                 daemon=True)
                self._flusher.start()

    def close(self) -> None:
        """Sign the chain in a final head, fsync and close. Idempotent; never raises for a disk error."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._fd is not None or self._pending:
                    self._prepare()
                    self._write_head("close")
                    self._close_file()
            except OSError as exc:
                self._disk_error(exc, None)
            finally:
                if self._fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(self._fd)
                    self._fd = None
            self._cond.notify_all()
            flusher = self._flusher
        if flusher is not None:
            flusher.join(timeout=2.0)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"appended": self.appended, "lost": self.lost, "write_errors": self.write_errors,
                    "sync_errors": self.sync_errors, "next_index": self._i,
                    "dropped_after_close": self.dropped_after_close}

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals, all called with the lock held ------------------------------------------------

    def _resume(self) -> None:
        pattern = re.compile(rf"^{re.escape(self.site)}-audit-(\d+)\.jsonl$")
        if not self.directory.is_dir():
            return
        files = sorted((int(m[1]), p) for p in self.directory.iterdir() if (m := pattern.match(p.name)))
        if not files:
            return
        raw = files[-1][1].read_bytes()
        self._n = files[-1][0] + 1
        if b"\n" not in raw:  # created, header never completed: it holds no event, reuse its number
            self._n, self._reuse = files[-1][0], True
            files.pop()
            if not files:
                return
            raw = files[-1][1].read_bytes()
        end = raw.rfind(b"\n")
        if end < 0:
            raise ValueError(f"{files[-1][1].name} holds no complete entry")
        last = raw[:end].rsplit(b"\n", 1)[-1]
        entry = json.loads(last)
        self._i, self._prev, self._prev_file = int(entry["i"]) + 1, line_hash(last), files[-1][1].name
        self._resumed = {"previous_closed": entry["kind"] == "head", "partial_bytes": len(raw) - end - 1}

    def _prepare(self) -> None:
        """Repair after a failed write, rotate when due, open a file when none is; then owe the `lost`."""
        if self._fd is not None and self._needs_truncate:
            os.ftruncate(self._fd, self._size)  # drop a partly written line; O_APPEND writes after it
            self._needs_truncate = False
        if self._fd is not None and (self._size >= self._rotate_bytes
                                     or self._clock() - self._opened_at >= self._rotate_s):
            self._write_head("rotate")
            self._close_file()
        if self._fd is None:
            self._open_file()
        if self._pending:
            lost = sum(self._pending.values())
            self._write("lost", {"entries": lost, "kinds": dict(self._pending), "first_t": self._pending_t[0],
                                 "last_t": self._pending_t[-1], "error": self._last_error})
            log.warning("audit log %s: writing again; %d entries lost meanwhile are recorded as a 'lost' "
                        "entry", self._path, lost)
            self._pending.clear()
            self._pending_t.clear()
            self._failing = False

    def _open_file(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / file_name(self.site, self._n)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if self._reuse else os.O_EXCL)
        fd = os.open(path, flags, 0o640)
        saved = self._i, self._prev
        self._fd, self._path, self._size, self._opened_at = fd, path, 0, self._clock()
        data: dict[str, Any] = {"format": FORMAT, "file": self._n, "previous_file": self._prev_file,
                                "cert_fingerprint": self._fingerprint}
        if self._resumed is not None:
            data["resumed"] = self._resumed
        try:
            self._write("header", data)
            os.fsync(fd)
        except OSError:  # leave no half-made file behind: the next attempt starts this number afresh
            os.close(fd)
            self._fd, self._needs_truncate, (self._i, self._prev) = None, False, saved
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        with contextlib.suppress(OSError):  # make the new name itself durable
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._resumed, self._reuse, self._prev_file, self._n = None, False, path.name, self._n + 1

    def _write(self, kind: str, data: dict[str, Any], t_local: float | None = None) -> None:
        assert self._fd is not None
        entry = {"i": self._i, "t": self._clock(), "t_local": t_local, "site": self.site, "kind": str(kind),
                 "data": data if isinstance(data, dict) else {"value": data}, "prev": self._prev}
        try:
            body = canonical(entry)
        except (TypeError, ValueError) as exc:  # mixed key types, a cycle: keep what can be kept
            entry["data"] = {"unserializable": repr(data)[:2000], "error": str(exc)}
            body = canonical(entry)
        entry["hash"] = hashlib.sha256(body.encode()).hexdigest()
        line = canonical(entry).encode()
        try:
            _write_all(self._fd, line + b"\n")
        except OSError:
            self._needs_truncate = True
            raise
        self._size += len(line) + 1
        self._i, self._prev = self._i + 1, line_hash(line)
        if not self._dirty:
            self._dirty = True
            self._cond.notify_all()

    def _write_head(self, reason: str) -> None:
        sig = None if self._key is None else base64.b64encode(self._key.sign(head_message(self._prev))).decode()
        self._write("head", {"last_hash": self._prev, "entries": self._i, "signature": sig,
                             "cert_fingerprint": self._fingerprint, "reason": reason})

    def _close_file(self) -> None:
        fd, self._fd, self._dirty = self._fd, None, False
        assert fd is not None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _disk_error(self, exc: OSError, kind: str | None) -> None:
        self.write_errors += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        if kind is not None:
            self.lost += 1
            self._pending[kind] += 1
            t = self._clock()
            self._pending_t[:] = [self._pending_t[0] if self._pending_t else t, t]
        if not self._failing:
            self._failing = True
            log.error("audit log %s: cannot write (%s); entries are counted as lost and every append retries",
                      self._path or self.directory, self._last_error)

    def _flush_loop(self) -> None:
        """fsync what was written, at most once per interval, never when nothing was written."""
        while True:
            with self._lock:
                while not self._closed:
                    if not self._dirty:
                        self._cond.wait()
                        continue
                    delay = self._last_sync + self._sync_interval - time.monotonic()
                    if delay <= 0:
                        break
                    self._cond.wait(delay)
                if self._closed:
                    return  # close() fsyncs itself
                self._dirty, self._last_sync = False, time.monotonic()
                if self._fd is None:
                    continue
                try:
                    fd = os.dup(self._fd)  # a rotation may close the original while we sync
                except OSError as exc:
                    self._sync_failed(exc)
                    continue
            try:
                os.fsync(fd)
            except OSError as exc:
                with self._lock:
                    self._sync_failed(exc)
            finally:
                os.close(fd)

    def _sync_failed(self, exc: OSError) -> None:
        self.sync_errors += 1
        if self.sync_errors == 1 or self.sync_errors % 1000 == 0:
            log.error("audit log %s: fsync failed (%s, %d so far): recent entries may not be on disk",
                      self._path, exc, self.sync_errors)


def __getattr__(name: str) -> Any:
    """`verify` and its result live with the command that runs them; importable from here as well."""
    if name in ("verify", "VerifyResult", "AuditInputError"):
        from telesurg.record import audit_cli

        return getattr(audit_cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
