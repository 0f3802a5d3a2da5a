"""The dashboard runs in a process of its own; the site keeps one thread that feeds it its tap records.

Why a process: everything the page needs (applying ~2,000 records a second to the model and the
Prometheus figures, building views, JSON, aiohttp, decoding H.264 for the picture) is Python work
that holds the GIL, and in the site's process the servo loop or the console's ticker waits for
every microsecond of it. Measured with bench/dashboard_cost.py (2-vCPU VM, 6 December 2026), with
only the picture's decoding in a child process, an open page still raised a 1 kHz loop's p99
lateness 1.5-2.1x; PyAV decoding on a thread alone took it from 77 to 1,069 us. So the site's side
is only `DashboardFeed`'s thread (SCHED_FIFO 1, like every tap consumer: see realtime.py): every
`drain_s` it drains the dashboard's two tap subscriptions (figures, video), makes the records
portable and pickles them 8 at a time, handing the GIL over in between (record/portable.py, as the
recorder does), and writes one message into a pipe. The child (`_dashboard_main`, niced, on any
CPU) rebuilds the records and serves the page (dashboard/server.py).

If the child falls behind, the pipe fills, the feed thread waits on it with the GIL released, and
the tap's bounded queues drop and count (shown on the page and in /metrics); the site never waits.
If the child dies, the feed logs it once and stops; the site runs on. If the site dies, the child
reads the pipe's end and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import multiprocessing as mp
import os
import pickle
import select
import signal
import threading
import time
from typing import Any

from telesurg.child_process import join_or_kill
from telesurg.dashboard.access import Bind, parse_bind
from telesurg.dashboard.model import TOPICS
from telesurg.realtime import GIL_SHARER_PRIORITY, request_realtime, unpin
from telesurg.record.portable import pickled_in_slices, unpickled_slices
from telesurg.tap import Tap, Topic

log = logging.getLogger("telesurg.dashboard")
RECORDS_QUEUE = 16_384  # ~7 s of a robot's records at 2.2 k/s: a stalled dashboard loses figures, never blocks
# ~2 s of 15 fps stereo at 2.5 Mbit/s, ~2 MB at most: the robot publishes one batch per eye and frame,
# the console one record per payload as they arrive
VIDEO_QUEUE = {"robot": 64, "console": 2048}
DASHBOARD_NICENESS = 10  # the page for the room gives way to the sites' own work
STATS_EVERY_S = 0.5  # the tap's subscriber figures (for the page and /metrics)
START_TIMEOUT_S = 20.0
_CLOSE = b"close"


def _dashboard_main(conn: Any, options: dict[str, Any]) -> None:
    """Child process: serve the page until the site says close or the pipe ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the site; it closes us
    with contextlib.suppress(OSError):
        os.nice(DASHBOARD_NICENESS)
    unpin()  # any CPU the sites leave, not only a pinned site's own
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {options['site']} dashboard %(levelname)s "
                                                      "%(message)s")
    from telesurg.dashboard.server import DashboardServer, SiteView

    site = SiteView(options.pop("site"), options.pop("wall_offset"), options.pop("clock_now"))
    server = DashboardServer(site, **options)
    asyncio.run(_serve(conn, server, site))


async def _serve(conn: Any, server: Any, site: Any) -> None:
    loop, stop = asyncio.get_running_loop(), asyncio.Event()

    def ready(port: int | None, error: str | None) -> None:
        conn.send_bytes(pickle.dumps(("ready", port, error)))
        if port is not None:
            loop.add_reader(conn.fileno(), on_message)

    def on_message() -> None:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):  # the site is gone
            data = _CLOSE
        if data == _CLOSE:
            loop.remove_reader(conn.fileno())
            stop.set()
            return
        stream = io.BytesIO(data)
        clock_now, stats, server.feed_cpu_s, server.feed_unpicklable = pickle.load(stream)
        site.update(clock_now, stats)
        for records, _ in unpickled_slices(stream):
            server.feed(records)
        with contextlib.suppress(OSError, ValueError):
            conn.send_bytes(pickle.dumps(("status", server.cpu_s(), server.records)))

    await server.serve(ready, stop)


class DashboardFeed:
    """The site's handle on its dashboard process: `start()` (raises OSError if the port cannot be
    served), `url`, `port`, `close()`; `cpu_s` and `records` for benchmarks."""

    def __init__(self, tap: Tap, bind: Bind | str, *, site_name: str | None = None, role: str | None = None,
                 video: bool = True, allow: list[str] | None = None, hosts: tuple[str, ...] = (),
                 push_hz: float = 4.0, drain_hz: float = 10.0, preview_fps: float = 4.0) -> None:
        self.tap = tap
        self.bind = parse_bind(bind) if isinstance(bind, str) else bind
        self.port = self.bind.port
        self.drain_s = 1.0 / drain_hz
        self._options = {"site": tap.site, "wall_offset": tap.wall_offset, "bind": self.bind,
                         "site_name": site_name, "role": role, "video": video, "allow": allow, "hosts": hosts,
                         "push_hz": push_hz, "preview_fps": preview_fps}
        self.subscription = tap.subscribe("dashboard", RECORDS_QUEUE, [t for t in TOPICS if t != Topic.VIDEO])
        self.video_subscription = tap.subscribe("dashboard-video", VIDEO_QUEUE.get(role or "", max(VIDEO_QUEUE.values())),
                                                [Topic.VIDEO]) if video else None
        self.cpu_s = 0.0  # the child's process time and the feed thread's
        self.feed_cpu_s = 0.0  # the feed thread's alone: what the dashboard costs the site's process
        self.records = 0  # records the child has applied
        self.unpicklable = 0  # records pickle refused: left out, counted (shown on the page)
        self._conn: Any = None
        self._child: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.bind.url_host}:{self.port}/"

    def start(self) -> DashboardFeed:
        context = mp.get_context("spawn")  # a clean interpreter: no inherited threads or codec state
        self._conn, child_end = context.Pipe()
        options = {**self._options, "clock_now": self.tap.clock()}
        self._child = context.Process(target=_dashboard_main, args=(child_end, options),
                                      name=f"telesurg-dashboard-{self.tap.site}", daemon=True)
        self._child.start()
        child_end.close()
        error = "its process did not start"
        if self._conn.poll(START_TIMEOUT_S):
            with contextlib.suppress(EOFError, OSError):
                _, port, error = pickle.loads(self._conn.recv_bytes())
                if error is None:
                    self.port = port
                    self._thread.start()
                    return self
        self.close()
        raise OSError(error)

    def close(self) -> None:
        """Ask the process to end (its pages see the socket close); kill it if it does not within 5 s.
        Never waits longer, even on a stopped process with a full pipe."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(2.0)
        if self._child is not None:
            with contextlib.suppress(OSError, ValueError):
                if not self._thread.is_alive() and select.select([], [self._conn], [], 1.0)[1]:
                    self._conn.send_bytes(_CLOSE)  # else the feed is stuck on a full pipe: no polite way
            join_or_kill(self._child, 5.0, kill_wait=1.0)
            with contextlib.suppress(OSError):
                self._conn.close()
            self._child = None
        for subscription in (self.subscription, self.video_subscription):
            if subscription is not None:
                self.tap.unsubscribe(subscription)

    def _run(self) -> None:
        request_realtime(GIL_SHARER_PRIORITY)  # it shares the GIL with the servo loop: see realtime.py
        cpu0, stats_due, child_cpu = time.thread_time(), 0.0, 0.0
        while not self._stop.wait(self.drain_s):
            records = self.subscription.drain_handing_over()
            if self.video_subscription is not None:
                records += self.video_subscription.drain_handing_over()
            now = time.monotonic()
            stats = None
            if now >= stats_due:
                stats_due, stats = now + STATS_EVERY_S, self.tap.stats()
            data, lost = pickled_in_slices(records)
            self.unpicklable += lost
            self.feed_cpu_s = time.thread_time() - cpu0
            header = pickle.dumps((self.tap.clock(), stats, self.feed_cpu_s, self.unpicklable))
            try:
                self._conn.send_bytes(header + data)  # waits, GIL released, only if the child is far behind
                while self._conn.poll():
                    _, child_cpu, self.records = pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError, ValueError):
                log.error("dashboard process stopped (exit code %s); the page is gone, the site runs on",
                          self._child.exitcode if self._child is not None else None)
                return
            self.cpu_s = child_cpu  # the child adds the feed thread's own (sent in the header)
