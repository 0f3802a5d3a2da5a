"""Black-box MCAP recording of one site: a tap subscriber whose writing happens in its own process.

Why a subscriber: the servo loop and the link publish each record once into the site's tap and never
wait (telesurg/tap.py). The recorder's thread drains its bounded queue every `poll_s` (10 ms). If the
disk stalls the queue fills and further records are dropped and counted by the tap, never waited
for; the counts are themselves written (`/<site>/recorder/dropped`).

Why a process: turning ~4,000 records a second into JSON and MCAP chunks costs ~10 us each, and on
the robot that work held the GIL the servo thread needs. Measured with bench/recording.py (demo,
1 ring, video, 2 runs each, medians, 2026-12-05, 2-vCPU VM), writing on a thread of the robot
process raised the servo loop's p99 lateness from 0.24 to 1.16 ms and the command path's p99
overhead from 0.59 to 2.45 ms, with holds. So by default (`process=True`) the thread only pickles
(~2 us a record, 8 records per GIL hold, handing the GIL over in between: a C call keeps it to its
end, and a waiting servo thread would otherwise wait for the 0.2 ms switch interval) and writes
one batch per poll into a pipe; a niced child process (`record/writer.py`) converts and writes.
Then: command path p99 overhead 1.15x, robot kernel->applied p99 1.18x, servo lateness p99 0.96x
of recording off. The child survives its site: if the site is killed, it reads the pipe to its end
and closes the file cleanly; if both are killed, at most the last 50 ms of chunks (+ one poll) are
lost. `process=False` writes on the thread (tests, tools).
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from telesurg.child_process import join_or_kill
from telesurg.realtime import GIL_SHARER_PRIORITY, request_realtime, unpin
from telesurg.record.portable import pickled_in_slices, unpickled_slices
from telesurg.record.writer import FLUSH_INTERVAL_S, RecordWriter
from telesurg.tap import Tap

log = logging.getLogger(__name__)

RECORD_QUEUE = 200_000  # ~40 s of a robot site's records (1 kHz commands, decisions and servo ticks)
POLL_S = 0.01
WRITER_NICENESS = 10  # below the sites' own threads: the recording gives way first
_CLOSE = b"close"


def _writer_process(conn: Any, kwargs: dict[str, Any], poll_s: float) -> None:
    """Child process: records from the pipe into a `RecordWriter` until "close" or the pipe's end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the site; it closes us
    with contextlib.suppress(OSError):
        os.nice(WRITER_NICENESS)
    unpin()  # like the video processes: any CPU the sites leave, not only the pinned site's own
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {kwargs['site']} recorder %(levelname)s "
                                                      "%(message)s")
    writer = RecordWriter(**kwargs)
    writer.open_first()
    closing = False
    while not closing:
        try:
            if conn.poll(poll_s):
                data = conn.recv_bytes()
                if data == _CLOSE:
                    closing = True
                else:
                    for records, drops in unpickled_slices(io.BytesIO(data)):
                        writer.write(records, drops)
        except (EOFError, OSError):  # the site is gone: keep what it sent, close the file cleanly
            break
        writer.tick()
    stats = writer.finish()
    if closing:
        with contextlib.suppress(OSError, ValueError):
            conn.send_bytes(pickle.dumps(stats))


class Recorder:
    """Records every record of `tap` into MCAP files under `directory`; `start()`, then `close()`.
    Writer options (rotation, flush interval, `opener`...) go to `RecordWriter`."""

    def __init__(self, tap: Tap, directory: Path, *, role: str, capacity: int = RECORD_QUEUE,
                 poll_s: float = POLL_S, process: bool = True, **writer_options: Any) -> None:
        if not tap.site or "/" in tap.site:
            raise ValueError(f"site name {tap.site!r}: expected a plain name such as 'robot'")
        self.tap, self.site, self.role, self.poll_s, self.process = tap, tap.site, role, poll_s, process
        self.subscription = tap.subscribe("recorder", capacity)
        self._writer_kwargs = {"site": tap.site, "role": role, "directory": Path(directory),
                               "wall_offset": tap.wall_offset, "peer_offsets": dict(tap.peer_offsets),
                               "clock_shift": tap.clock() - time.monotonic(), **writer_options}
        self.writer: RecordWriter | None = None  # in-process only
        self._child: Any = None
        self._conn: Any = None
        self.sent = self.unpicklable = 0
        self._final_stats: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"recorder-{self.site}", daemon=True)

    @property
    def flush_interval_s(self) -> float:
        return float(self._writer_kwargs.get("flush_interval_s", FLUSH_INTERVAL_S))

    # -- control (any thread) ----------------------------------------------------------------------
    def start(self) -> None:
        if self.process:
            context = mp.get_context("spawn")  # a clean interpreter: no inherited threads
            self._conn, child_end = context.Pipe()
            self._child = context.Process(target=_writer_process, name=f"telesurg-recorder-{self.site}",
                                          args=(child_end, self._writer_kwargs, self.poll_s), daemon=False)
            self._child.start()
            child_end.close()
        else:
            self.writer = RecordWriter(**self._writer_kwargs)
            self.writer.open_first()
        self._thread.start()

    def pause(self) -> None:
        """Stop draining, as a stalled disk would (benchmarks and tests): the queue fills, then drops."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def close(self, timeout: float = 15.0) -> dict[str, Any]:
        """Write what is queued, the drop counts and the files' summaries; returns `stats()`."""
        self._paused.clear()
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.tap.unsubscribe(self.subscription)
        return self.stats()

    def stats(self) -> dict[str, Any]:
        """The writer's figures (files, records, bytes, drops by topic, disk errors, alarm); while a child
        process writes, only what this side knows until `close()`."""
        if self._final_stats is not None:
            return self._final_stats
        if self.writer is not None:
            return self.writer.stats()
        drops = self._queue_drops()
        return {"files": [], "records": None, "dropped": dict(drops), "dropped_total": sum(drops.values()),
                "alarm": None, "running": self._child is not None and self._child.is_alive()}

    # -- the drain thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        request_realtime(GIL_SHARER_PRIORITY)  # it shares the GIL with the servo loop: see realtime.py
        while not self._stop.wait(self.poll_s):
            if not self._paused.is_set():
                self._forward(self.subscription.drain())
        self._forward(self.subscription.drain())
        self._final_stats = self._finish()

    def _queue_drops(self) -> Counter[str]:
        """A copy of the tap's drop counts (publishers add keys while we read: copy under their lock)."""
        with self.subscription._drop_lock:
            return Counter({str(k): v for k, v in self.subscription.dropped.items()})

    def _forward(self, records: list[tuple[str, float, Any]]) -> None:
        drops = dict(self._queue_drops())
        if self.writer is not None:
            self.writer.write(records, drops)
            self.writer.tick()
            return
        if not records and not drops:
            return
        data, lost = pickled_in_slices(records, drops)  # see portable.py: the GIL is handed over between slices
        self.unpicklable += lost
        try:
            self._conn.send_bytes(data)  # blocks only if the writer is far behind: the tap queue absorbs it
            self.sent += len(records)
        except (OSError, ValueError):
            if self._child is not None and not self._child.is_alive():
                self._child_died()

    def _child_died(self) -> None:
        if self._final_stats is None:
            log.error("ALARM recorder %s: the writer process stopped (exit code %s); records are no longer "
                      "recorded", self.site, self._child.exitcode)
            self._final_stats = {"files": [], "records": None, "dropped": {}, "dropped_total": None,
                                 "alarm": f"writer process exited ({self._child.exitcode})"}

    def _finish(self) -> dict[str, Any]:
        if self.writer is not None:
            return self.writer.finish()
        stats: dict[str, Any] | None = None
        with contextlib.suppress(OSError, ValueError, EOFError):
            self._conn.send_bytes(_CLOSE)
            if self._conn.poll(30.0):
                stats = pickle.loads(self._conn.recv_bytes())
        join_or_kill(self._child, 10.0)
        with contextlib.suppress(OSError):
            self._conn.close()
        if stats is None:
            self._child_died()
            return self._final_stats or {}
        stats["unpicklable"] = self.unpicklable
        return stats
