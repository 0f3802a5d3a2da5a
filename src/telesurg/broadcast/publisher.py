"""A site's live broadcast: tap subscriber thread in the site, Zenoh publishing in its own process.

Why two halves: the site's servo loop and link must never wait for the broadcast. Inside the site
there is only one small thread: it drains a bounded tap subscription (telesurg/tap.py) every few ms,
turns records into compact JSON (schema.RecordEncoder; video fragments are passed as they are) and
writes them to a non-blocking SOCK_SEQPACKET socket. If the publisher process, Zenoh, the router or
an observer stalls, that socket fills and the write fails at once: the record is dropped and
counted (`stats()["dropped_handover"]`), exactly as the tap drops for a full subscription. The
spawned child (publisher_process.py, lower CPU priority) rebuilds video frames from the link's
fragments (the same H.264 access units, no re-encode) and publishes everything into Zenoh with
congestion control DROP, so a slow observer costs the router's queue, never the site.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from telesurg.broadcast import handover
from telesurg.broadcast.schema import BROADCAST_TOPICS, RecordEncoder, check_site_name
from telesurg.broadcast.zconfig import check_endpoint
from telesurg.child_process import join_or_kill
from telesurg.realtime import GIL_SHARER_PRIORITY, request_realtime
from telesurg.tap import Tap, Topic, handing_over

log = logging.getLogger("telesurg.broadcast")
SOCKET_BUFFER = 2 << 20  # ~3 s of 720p stereo; older video is dropped as stale anyway
POLL_S = 0.005
STATS_PERIOD_S = 1.0
SUBSCRIPTION_CAPACITY = 4096


class BroadcastPublisher:
    """Site-side handle: `start()`, `stats()`, `close()`. See the module docstring."""

    def __init__(self, tap: Tap, site_name: str, connect: list[str], *, zenoh_config: Path | None = None,
                 anonymous: bool = False, telemetry_hz: float = 20.0, video_from_peer: bool = False,
                 poll_s: float = POLL_S) -> None:
        self.site = check_site_name(site_name)
        self.connect = [check_endpoint(e, "--broadcast") for e in connect]
        self._tap = tap
        self._encoder = RecordEncoder(site_name, tap.wall_offset, telemetry_hz=telemetry_hz, anonymous=anonymous)
        self._video_from_peer = video_from_peer  # console: capture times are the robot's clock
        self._poll_s = poll_s
        self._subscription = tap.subscribe("broadcast", SUBSCRIPTION_CAPACITY, BROADCAST_TOPICS)
        self._sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for sock in (self._sock, child):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        self._sock.setblocking(False)
        from telesurg.broadcast.publisher_process import run_child

        context = mp.get_context("spawn")  # a clean interpreter: no inherited threads, locks or GL state
        self.process = context.Process(
            target=run_child, name="telesurg-broadcast", daemon=True,
            args=(child, self.site, self.connect, None if zenoh_config is None else str(zenoh_config),
                  tap.wall_offset))
        self._child = child
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="broadcast-pump", daemon=True)
        self.sent = Counter[str]()
        self.dropped_handover = Counter[str]()
        self.send_s_max = 0.0  # the longest single hand-over write (it must stay tiny, even when stalled)
        self.observers = 0  # as the publisher process last counted them

    def start(self) -> BroadcastPublisher:
        self.process.start()
        self._child.close()
        self._thread.start()
        return self

    # -- pump thread (in the site process) --------------------------------------------------------
    def _pump(self) -> None:
        request_realtime(GIL_SHARER_PRIORITY)  # it shares the GIL with the servo loop: see realtime.py
        next_stats = time.monotonic() + STATS_PERIOD_S
        while not self._stop.wait(self._poll_s):
            for topic, t, payload in handing_over(self._subscription.drain(1024)):
                try:
                    self._forward(topic, t, payload)
                except Exception:  # noqa: BLE001 - a record we cannot encode must not end the broadcast
                    self.dropped_handover[f"encode:{topic}"] += 1
            if time.monotonic() >= next_stats:
                next_stats += STATS_PERIOD_S
                self._send("stats", b"S" + json.dumps(self.stats()).encode())
                self._read_observers()

    def _read_observers(self) -> None:
        """The publisher process's observer counts (non-blocking); the newest goes into the tap."""
        count = None
        while True:
            try:
                message = self._sock.recv(64)
            except (BlockingIOError, OSError):
                break
            if not message:
                break
            got = handover.unpack_observers(message)
            count = count if got is None else got
        if count is not None and count != self.observers:
            self.observers = count
            self._tap.publish(Topic.BROADCAST, self._tap.clock(), {"observers": count})

    def _forward(self, topic: str, t: float, payload: Any) -> None:
        if topic == Topic.VIDEO:
            shift = 0.0
            if self._video_from_peer:
                offsets = [o for o in self._tap.peer_offsets.values() if o is not None]
                shift = -offsets[0] if offsets else 0.0  # peer clock -> ours
            for message in handover.pack_video(shift, payload):
                self._send(topic, message)
            return
        for key, body in self._encoder.encode(topic, t, payload):
            self._send(topic, handover.pack_record(key, body))

    def _send(self, what: str, message: bytes) -> None:
        started = time.perf_counter()
        try:
            self._sock.send(message)
            self.sent[what] += 1
        except (BlockingIOError, OSError):  # the publisher process lags, stalls or died: drop, count
            self.dropped_handover[what] += 1
        self.send_s_max = max(self.send_s_max, time.perf_counter() - started)

    # -- control ---------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {"site": self.site, "connect": self.connect, "observers": self.observers, "sent": dict(self.sent),
                "dropped_handover": dict(self.dropped_handover),
                "dropped_tap": dict(self._subscription.dropped), "offered": self._subscription.offered,
                "send_ms_max": round(1000.0 * self.send_s_max, 3), "process_alive": self.process.is_alive()}

    def close(self, timeout: float = 5.0) -> dict[str, Any]:
        """Stop the pump and the publisher process; returns the final counters."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._tap.unsubscribe(self._subscription)
        with contextlib.suppress(OSError):
            self._sock.send(b"Q")
        join_or_kill(self.process, timeout)
        self._sock.close()
        return self.stats()


def attach_broadcast(tap: Tap, site_name: str, connect: str | list[str], *, zenoh_config: Path | None = None,
                     anonymous: bool = False, video_from_peer: bool = False) -> BroadcastPublisher:
    """Start broadcasting this site's tap to a Zenoh router (`--broadcast tcp/HOST:7447`).

    Call once the tap exists (before `site.run`); call `.close()` after the site stopped.
    `video_from_peer=True` on the console (its video capture times are in the robot's clock)."""
    endpoints = [connect] if isinstance(connect, str) else list(connect)
    return BroadcastPublisher(tap, site_name, endpoints, zenoh_config=zenoh_config, anonymous=anonymous,
                              video_from_peer=video_from_peer).start()
