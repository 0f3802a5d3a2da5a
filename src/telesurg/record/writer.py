"""A site's MCAP files: tap records in, chunked MCAP out, disk errors survived (record/recorder.py
drives it, by default in a process of its own).

Crash survival: the file is chunked (zstd) and every `flush_interval_s` (50 ms) the open chunk is
closed and handed to the kernel, so a `kill -9` of the writer loses at most the last 50 ms (the
files are readable as they are with a streaming reader: `telesurg record info` says where one was
cut off). The file is fsynced every `fsync_interval_s` (the power-loss bound). A clean finish writes
MCAP's summary and index, so seeking readers (Foxglove) open it quickly.

Disk errors (ENOSPC, EIO, a vanished directory) never raise: the writer logs one clear error per
outage, counts the records it could not keep, abandons the damaged file (readable up to the error)
and retries in a new file every `retry_s`. The records lost (in the tap's full queue or to the
disk) are written as `/<site>/recorder/dropped` as soon as a file takes writes again. Files rotate
at `rotate_bytes` or `rotate_s`: `<site>-<n>.mcap`, n counting on from the files already there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from mcap.writer import CompressionType, Writer

import telesurg
from telesurg.record.convert import LOG_ERROR, LOG_WARNING, McapMessage, RecordConverter
from telesurg.record.schemas import PROFILE, SCHEMA_VERSION, schema_bytes

log = logging.getLogger("telesurg.record.recorder")

FLUSH_INTERVAL_S = 0.05
CHUNK_BYTES = 4 << 20  # a chunk closes at this size or at each flush, whichever comes first
_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode  # json.dumps(**kw) builds one per call


def _open_exclusive(path: Path) -> IO[bytes]:
    return open(path, "xb")  # noqa: SIM115 - the writer owns and closes it


class RecordWriter:
    """Tap records -> MCAP files of one site (see the module docstring); `open_first()`, `write()`
    and `tick()` repeatedly, then `finish()`. Not thread-safe: one thread or process drives it."""

    def __init__(self, site: str, role: str, directory: Path, wall_offset: float,
                 peer_offsets: dict[str, float | None] | None = None, *, clock_shift: float = 0.0,
                 flush_interval_s: float = FLUSH_INTERVAL_S, rotate_bytes: int = 1 << 30, rotate_s: float = 3600.0,
                 fsync_interval_s: float = 1.0, retry_s: float = 1.0,
                 opener: Callable[[Path], IO[bytes]] = _open_exclusive) -> None:
        if not site or "/" in site:
            raise ValueError(f"site name {site!r}: expected a plain name such as 'robot'")
        self.site, self.role, self.wall_offset = site, role, wall_offset
        self.directory = Path(directory)
        self.flush_interval_s = flush_interval_s
        self.rotate_bytes, self.rotate_s = rotate_bytes, rotate_s
        self.fsync_interval_s, self.retry_s = fsync_interval_s, retry_s
        self._opener = opener
        self._clock_shift = clock_shift  # the site's clock = time.monotonic() + shift (tests shift it)
        self.converter = RecordConverter(site, wall_offset, peer_offsets, role)
        self.queue_drops: Counter[str] = Counter()  # records the tap dropped before they reached us
        self.files: list[Path] = []
        self.records = self.messages = self.write_errors = self.convert_errors = 0
        self.dropped_disk: Counter[str] = Counter()
        self.alarm: str | None = None  # the disk error going on now, if any
        self.last_error: str | None = None
        self._pending: Counter[str] = Counter()  # records in the open chunk (lost with it on a disk error)
        self._stream: IO[bytes] | None = None
        self._writer: Writer | None = None
        self._channels: dict[str, int] = {}
        self._schemas: dict[str, int] = {}
        self._bytes_closed = 0
        self._seq = 0
        self._opened_at = self._last_flush = self._last_fsync = 0.0
        self._retry_at = 0.0
        self._drops_written: dict[str, int] = {}

    def _clock(self) -> float:
        return time.monotonic()

    def _mono_now(self) -> float:
        return time.monotonic() + self._clock_shift

    # -- driving ---------------------------------------------------------------------------------------
    def open_first(self) -> None:
        """Open the first file; a disk error here is an alarm, not a crash."""
        now = self._clock()
        try:
            self._open(now)
        except OSError as exc:
            self._disk_failed(exc, now)

    def write(self, records: list[tuple[str, float, Any]], queue_drops: dict[str, int] | None = None) -> None:
        """Convert and write `records`; `queue_drops`: the tap's drop counts so far, per topic."""
        if queue_drops is not None:
            self.queue_drops = Counter(queue_drops)
        self._write_records(records)

    def tick(self) -> None:
        """Close the open chunk if the flush interval has passed (call it every poll)."""
        now = self._clock()
        if now - self._last_flush >= self.flush_interval_s:
            self._flush(now)

    def finish(self) -> dict[str, Any]:
        """Write the pending receipts, the drop counts and the file's summary; returns `stats()`."""
        self._final()
        return self.stats()

    def stats(self) -> dict[str, Any]:
        dropped = self._queue_drops() + self.dropped_disk
        size = self._bytes_closed + (self._tell() or 0)
        return {"files": [str(p) for p in self.files], "records": self.records, "messages": self.messages,
                "bytes": size, "dropped": dict(dropped), "dropped_total": sum(dropped.values()),
                "write_errors": self.write_errors, "convert_errors": self.convert_errors, "alarm": self.alarm,
                "last_error": self.last_error, "video_frames": self.converter.video_frames}

    # -- writing ---------------------------------------------------------------------------------------
    def _final(self) -> None:
        if self._writer is not None:  # commands received and never judged (the site stopped first)
            with contextlib.suppress(OSError):
                for message in self.converter.expire_receipts():
                    self._add(message)
        now = self._clock()
        self._flush(now, rotate=False)
        if self._writer is not None:
            try:
                self._writer.finish()
                self._close_stream(fsync=True)
            except OSError as exc:
                self._disk_failed(exc, now)

    def _write_records(self, records: list[tuple[str, float, Any]]) -> None:
        convert = self.converter.convert
        for topic, t, payload in records:
            try:
                messages = convert(topic, t, payload)
            except Exception as exc:  # noqa: BLE001 - one odd payload must not stop the recording
                self.convert_errors += 1
                if self.convert_errors == 1:
                    log.error("recorder %s: cannot convert a %s record (%s: %s); such records are skipped "
                              "and counted", self.site, topic, type(exc).__name__, exc)
                continue
            if self._writer is None and not self._reopen(t):
                self.dropped_disk[str(topic)] += 1
                continue
            try:
                for message in messages:
                    self._add(message)
                self._pending[str(topic)] += 1
            except OSError as exc:
                self._pending[str(topic)] += 1
                self._disk_failed(exc, self._clock())

    def _add(self, m: McapMessage) -> None:
        assert self._writer is not None
        channel = self._channels.get(m.channel)
        if channel is None:
            schema = self._schemas.get(m.schema)
            if schema is None:
                schema = self._schemas[m.schema] = self._writer.register_schema(m.schema, "jsonschema",
                                                                                 schema_bytes(m.schema))
            channel = self._channels[m.channel] = self._writer.register_channel(m.channel, "json", schema)
        try:
            data = _ENCODE(m.body).encode()
        except ValueError:  # a NaN from a malformed command: JSON has none, keep it as null
            from telesurg.record.convert import jsonable

            data = json.dumps(jsonable(m.body), separators=(",", ":")).encode()
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        self._writer.add_message(channel, m.log_time_ns, data, m.log_time_ns, self._seq)
        self.messages += 1

    def _flush(self, now: float, rotate: bool = True) -> None:
        self._last_flush = now
        if self._writer is None:
            return
        try:
            self._write_drops(now)
            self._writer.flush()
            self.records += sum(self._pending.values())
            self._pending.clear()
            if now - self._last_fsync >= self.fsync_interval_s:
                self._last_fsync = now
                self._fsync()
            if rotate and ((self._tell() or 0) >= self.rotate_bytes or now - self._opened_at >= self.rotate_s):
                self._writer.finish()
                self._close_stream(fsync=True)
                self._open(now)
        except OSError as exc:
            self._disk_failed(exc, now)

    def _write_drops(self, now: float) -> None:
        dropped = {str(k): v for k, v in (self._queue_drops() + self.dropped_disk).items()}
        if dropped == self._drops_written:
            return
        total = sum(dropped.values())
        new = total - sum(self._drops_written.values())
        queue, disk = sum(self._queue_drops().values()), sum(self.dropped_disk.values())
        reason = "; ".join(([f"{queue} in a full queue (writer behind)"] if queue else [])
                           + ([f"{disk} by a disk error ({self.last_error})"] if disk else []))
        t = self._mono_now()
        self._add(self.converter._msg("recorder/dropped", "telesurg.RecorderDrops", t,
                                      {"dropped": dropped, "total": total, "reason": reason}))
        self._add(self.converter._log(t, LOG_WARNING, f"recorder: {new} records lost ({reason}); {total} in all"))
        self._drops_written = dropped

    def _queue_drops(self) -> Counter[str]:
        return Counter(self.queue_drops)


    # -- files ------------------------------------------------------------------------------------------
    def _next_index(self) -> int:
        pattern = re.compile(rf"^{re.escape(self.site)}-(\d+)\.mcap$")
        taken = [int(m[1]) for p in self.directory.iterdir() if (m := pattern.match(p.name))] \
            if self.directory.is_dir() else []
        return max(taken, default=-1) + 1

    def _open(self, now: float) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        n = self._next_index()
        path = self.directory / f"{self.site}-{n}.mcap"
        stream = self._opener(path)
        writer = Writer(stream, chunk_size=CHUNK_BYTES, compression=CompressionType.ZSTD)
        try:
            writer.start(profile=PROFILE, library=f"telesurg {telesurg.__version__}")
            writer.add_metadata("telesurg", {"schema_version": SCHEMA_VERSION, "site": self.site, "role": self.role,
                                             "wall_offset": repr(self.wall_offset), "file_index": str(n),
                                             "software": f"telesurg {telesurg.__version__}",
                                             "opened_unix": repr(self._mono_now() + self.wall_offset)})
            writer.flush()
        except OSError:  # still no room: leave no header-less file behind (the next try reuses its number)
            with contextlib.suppress(OSError, ValueError):
                stream.close()
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self._stream, self._writer, self._channels, self._schemas = stream, writer, {}, {}
        self.files.append(path)
        self._opened_at = self._last_flush = self._last_fsync = now

    def _reopen(self, t: float) -> bool:
        now = self._clock()
        if now < self._retry_at:
            return False
        try:
            self._open(now)
        except OSError as exc:
            self._retry_at = now + self.retry_s
            self._writer = None
            self._close_stream(fsync=False)
            self.write_errors += 1
            log.debug("recorder %s: still cannot write (%s)", self.site, exc)
            return False
        lost = sum(self.dropped_disk.values())
        log.warning("recorder %s: recording again into %s; %d records were lost meanwhile (counted in the file)",
                    self.site, self.files[-1], lost)
        self._add(self.converter._log(self._mono_now(), LOG_ERROR,
                                      f"recorder: disk error ({self.alarm}); {lost} records lost, recording resumed"))
        self.alarm = None
        return True

    def _disk_failed(self, exc: OSError, now: float) -> None:
        self.write_errors += 1
        for topic, n in self._pending.items():
            self.dropped_disk[topic] += n
        self._pending.clear()
        path = self.files[-1] if self.files else self.directory
        if self.alarm is None:
            log.error("ALARM recorder %s: cannot write %s (%s: %s); records are dropped and counted, the file is "
                      "kept as written so far, and a new file is tried every %.3g s", self.site, path,
                      type(exc).__name__, exc, self.retry_s)
        self.alarm = self.last_error = f"{type(exc).__name__}: {exc}"
        self._writer = None
        self._close_stream(fsync=False)
        self._retry_at = now + self.retry_s

    def _tell(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            return self._stream.tell() if self._stream is not None else None
        return None

    def _fsync(self) -> None:
        if self._stream is not None and hasattr(self._stream, "fileno"):
            with contextlib.suppress(OSError, ValueError, AttributeError):  # not a real file (tests)
                os.fsync(self._stream.fileno())

    def _close_stream(self, fsync: bool) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        self._bytes_closed += self._tell_of(stream)
        if fsync:
            try:
                stream.flush()
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    os.fsync(stream.fileno())
            finally:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
        else:
            with contextlib.suppress(OSError, ValueError):
                stream.close()

    @staticmethod
    def _tell_of(stream: IO[bytes]) -> int:
        with contextlib.suppress(OSError, ValueError):
            return stream.tell()
        return 0
