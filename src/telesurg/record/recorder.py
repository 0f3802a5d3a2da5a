"""Black-box MCAP recording of one site: a tap subscriber with its own writer thread (issue #12).

Why a subscriber: the servo loop and the link publish each record once into the site's tap and never
wait (telesurg/tap.py); this thread drains the recorder's bounded queue every `poll_s`, turns the
records into MCAP messages (record/convert.py, schemas in record/schemas.py) and writes them. If
the disk stalls the queue fills and further records are dropped and counted by the tap, never
waited for; the counts are themselves written (`/<site>/recorder/dropped`) as soon as the file
takes writes again.

Crash survival: the file is chunked (zstd) and every `flush_interval_s` (50 ms) the open chunk is
closed and handed to the kernel, so a `kill -9` loses at most what the last 50 ms + one poll
brought (the files are readable as they are with a streaming reader: `telesurg record info` says
where one was cut off). The file is fsynced every `fsync_interval_s` (power loss bound). A clean
close writes MCAP's summary and index, so seeking readers (Foxglove) open it quickly.

Disk errors (ENOSPC, EIO, a vanished directory) never raise: the recorder logs one clear error per
outage, counts the records it could not keep, abandons the damaged file (readable up to the error)
and retries in a new file every `retry_s`. Files rotate at `rotate_bytes` or `rotate_s`:
`<site>-<n>.mcap`, n counting on from the files already in the directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from mcap.writer import CompressionType, Writer

import telesurg
from telesurg.record.convert import LOG_ERROR, LOG_WARNING, McapMessage, RecordConverter
from telesurg.record.schemas import PROFILE, SCHEMA_VERSION, schema_bytes
from telesurg.tap import Tap

log = logging.getLogger(__name__)

RECORD_QUEUE = 200_000  # ~40 s of a robot site's records (1 kHz commands, decisions and servo ticks)
FLUSH_INTERVAL_S = 0.05
POLL_S = 0.01
CHUNK_BYTES = 4 << 20  # a chunk closes at this size or at each flush, whichever comes first
_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode  # json.dumps(**kw) builds one per call


def _open_exclusive(path: Path) -> IO[bytes]:
    return open(path, "xb")  # noqa: SIM115 - the recorder owns and closes it


class Recorder:
    """Records every record of `tap` into MCAP files under `directory`; `start()`, then `close()`."""

    def __init__(self, tap: Tap, directory: Path, *, role: str, capacity: int = RECORD_QUEUE,
                 flush_interval_s: float = FLUSH_INTERVAL_S, poll_s: float = POLL_S,
                 rotate_bytes: int = 1 << 30, rotate_s: float = 3600.0, fsync_interval_s: float = 1.0,
                 retry_s: float = 1.0, opener: Callable[[Path], IO[bytes]] = _open_exclusive,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not tap.site or "/" in tap.site:
            raise ValueError(f"site name {tap.site!r}: expected a plain name such as 'robot'")
        self.tap, self.site, self.role = tap, tap.site, role
        self.directory = Path(directory)
        self.flush_interval_s, self.poll_s = flush_interval_s, poll_s
        self.rotate_bytes, self.rotate_s = rotate_bytes, rotate_s
        self.fsync_interval_s, self.retry_s = fsync_interval_s, retry_s
        self._opener, self._clock = opener, clock
        self.subscription = tap.subscribe("recorder", capacity)
        self.converter = RecordConverter(tap.site, tap.wall_offset, tap.peer_offsets, role)
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
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"recorder-{self.site}", daemon=True)

    # -- control (any thread) ----------------------------------------------------------------------
    def start(self) -> None:
        """Open the first file and start the writer thread; a disk error here is an alarm, not a crash."""
        now = self._clock()
        try:
            self._open(now)
        except OSError as exc:
            self._disk_failed(exc, now)
        self._thread.start()

    def pause(self) -> None:
        """Stop draining, as a stalled disk would (benchmarks and tests): the queue fills, then drops."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def close(self, timeout: float = 10.0) -> dict[str, Any]:
        """Write what is queued, the drop counts and the file's summary; returns `stats()`."""
        self._paused.clear()
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        elif self._writer is not None or self.subscription:  # never started: write on this thread
            self._final()
        self.tap.unsubscribe(self.subscription)
        return self.stats()

    def stats(self) -> dict[str, Any]:
        dropped = self._queue_drops() + self.dropped_disk
        size = self._bytes_closed + (self._tell() or 0)
        return {"files": [str(p) for p in self.files], "records": self.records, "messages": self.messages,
                "bytes": size, "dropped": dict(dropped), "dropped_total": sum(dropped.values()),
                "write_errors": self.write_errors, "convert_errors": self.convert_errors, "alarm": self.alarm,
                "video_frames": self.converter.video_frames}

    # -- the writer thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            if self._paused.is_set():
                continue
            self._write_records(self.subscription.drain())
            now = self._clock()
            if now - self._last_flush >= self.flush_interval_s:
                self._flush(now)
        self._final()

    def _final(self) -> None:
        self._write_records(self.subscription.drain())
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
        """A copy of the tap's drop counts (publishers add keys while we read: copy under their lock)."""
        with self.subscription._drop_lock:
            return Counter({str(k): v for k, v in self.subscription.dropped.items()})

    def _mono_now(self) -> float:
        return self.tap.clock()

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
                                             "wall_offset": repr(self.tap.wall_offset), "file_index": str(n),
                                             "software": f"telesurg {telesurg.__version__}",
                                             "opened_unix": repr(self.tap.wall_time(self.tap.clock()))})
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
