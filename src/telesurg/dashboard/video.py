"""The endoscope picture for the dashboard: left eye rebuilt from the tap's VIDEO payloads, decoded,
and re-encoded as JPEG at a few frames per second, in a process of its own (see VideoPreview).

Why not in the servo or link threads: H.264 frames depend on each other,
so every access unit of the shown eye must be decoded even when the page shows one in four; that is
CPU work the control threads must never do or wait for. Reassembly and decoding run only while a
page is open (`want`); frame counts and freezes per eye (read from the 26-byte fragment headers, no
reassembly) run always, for /metrics. After a page opens, the picture appears at the stream's next
intra refresh (the decoder cannot start mid-wave); the site never sends a keyframe for a viewer.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any

import av
from av.video.reformatter import VideoReformatter

from telesurg.child_process import join_or_kill
from telesurg.realtime import GIL_SHARER_PRIORITY, request_realtime, unpin
from telesurg.tap import Subscription, TapRecord
from telesurg.video.codec import DecodedFrame, VideoDecoder
from telesurg.video.metrics import FREEZE_S
from telesurg.video.packetizer import HEADER
from telesurg.video.reassembly import FrameDropped, FrameReady, Reassembler

log = logging.getLogger("telesurg.dashboard")
SHOWN_STREAM = 0  # the left eye
MAX_WIDTH = 640  # the preview is for recognising the scene, not for surgery
JPEG_QSCALE = 5  # MJPEG quantiser (2 best .. 31 worst): ~25 KB for a 640x360 endoscope picture
HOLD_S, MAX_WAIT_S = 0.07, 0.25
PREVIEW_NICENESS = 10  # the picture for the room gives way to the sites' own work


class PreviewCore:
    """Sans-I/O: VIDEO tap records in, (JPEG or None, counts) out. `now` is the caller's clock."""

    def __init__(self, preview_fps: float = 4.0) -> None:
        self.period = 1.0 / preview_fps
        self.wanted = False
        self._reassembler: Reassembler | None = None
        self._decoder: VideoDecoder | None = None
        self._latest: DecodedFrame | None = None
        self._latest_fresh = False
        self._next_jpeg = 0.0
        self._jpeg_ctx: Any = None
        self._reformatter = VideoReformatter()
        self._last_frame: dict[int, int] = {}
        self._last_seen: dict[int, float] = {}
        self._recent: dict[int, collections.deque[float]] = collections.defaultdict(collections.deque)
        self.frames: collections.Counter[int] = collections.Counter()
        self.freezes: collections.Counter[int] = collections.Counter()
        self.bytes = 0
        self.decoded = 0
        self.dropped = 0
        self.jpegs = 0
        self.jpeg_ms: collections.deque[float] = collections.deque(maxlen=100)

    def set_wanted(self, wanted: bool) -> None:
        if wanted and not self.wanted:  # start clean: a decoder resumed after a gap only shows garbage
            self._reassembler = Reassembler(HOLD_S, MAX_WAIT_S)
            self._decoder = VideoDecoder("h264")
        elif not wanted:
            self._reassembler = self._decoder = self._latest = None
        self.wanted = wanted

    def feed(self, records: Iterable[TapRecord], now: float) -> bytes | None:
        for _, t, batch in records:
            for payload in batch:
                self._count(payload, t)
                if self._reassembler is not None and len(payload) > 1 and payload[1] == SHOWN_STREAM:
                    self._handle(self._reassembler.receive(payload, t))
        if self._reassembler is not None:
            self._handle(self._reassembler.handle_timer(now))
        return self._jpeg_if_due(now)

    def fps(self, now: float) -> dict[int, float]:
        out = {}
        for stream, times in self._recent.items():
            while times and times[0] < now - 1.0:
                times.popleft()
            out[stream] = float(len(times))
        return out

    def _count(self, payload: bytes, t: float) -> None:
        self.bytes += len(payload)
        if len(payload) < HEADER.size:
            return
        stream, frame = payload[1], int.from_bytes(payload[4:8], "big")
        last = self._last_frame.get(stream)
        if last is not None and frame <= last:
            return
        self._last_frame[stream] = frame
        self.frames[stream] += 1
        self._recent[stream].append(t)
        seen = self._last_seen.get(stream)
        if seen is not None and t - seen > FREEZE_S:
            self.freezes[stream] += 1
        self._last_seen[stream] = t

    def _handle(self, events: list[FrameReady | FrameDropped]) -> None:
        for event in events:
            if isinstance(event, FrameDropped):
                self.dropped += event.count
                continue
            assert self._decoder is not None
            picture = self._decoder.decode(event.frame)
            if picture is not None:
                self.decoded += 1
                self._latest, self._latest_fresh = picture, True

    def _jpeg_if_due(self, now: float) -> bytes | None:
        if self._latest is None or not self._latest_fresh or now < self._next_jpeg:
            return None
        self._next_jpeg = max(now, self._next_jpeg + self.period)
        self._latest_fresh = False
        started = time.perf_counter()
        data = self.jpeg(self._latest.picture)
        self.jpeg_ms.append(1000.0 * (time.perf_counter() - started))
        self.jpegs += 1
        return data

    def jpeg(self, picture: av.VideoFrame) -> bytes:
        width = min(MAX_WIDTH, picture.width) // 2 * 2
        height = round(picture.height * width / picture.width) // 2 * 2
        ctx = self._jpeg_ctx
        if ctx is None or (ctx.width, ctx.height) != (width, height):
            ctx = av.CodecContext.create("mjpeg", "w")
            ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuvj420p"
            ctx.time_base = Fraction(1, 25)
            ctx.qscale = True  # constant quality, not a bitrate target that drifts with the scene
            ctx.global_quality = JPEG_QSCALE * 118  # FF_QP2LAMBDA
            ctx.open()
            self._jpeg_ctx = ctx
        frame = self._reformatter.reformat(picture, width=width, height=height, format="yuvj420p")
        return b"".join(bytes(p) for p in ctx.encode(frame))


def _preview_process(conn: Any, preview_fps: float) -> None:
    """Child process: (now, wanted, records) in, (jpeg or None, counts) out, until None or the pipe's end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the site; it closes us
    with contextlib.suppress(OSError):
        os.nice(PREVIEW_NICENESS)
    unpin()  # any CPU the sites leave, not only a pinned site's own
    core = PreviewCore(preview_fps)
    sent: dict[str, Any] = {"frames": collections.Counter(), "freezes": collections.Counter(), "bytes": 0}
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        now, wanted, records = request
        if wanted != core.wanted:
            core.set_wanted(wanted)
        try:
            jpeg = core.feed(records, now)
        except Exception:  # a codec surprise loses the picture, never the dashboard
            log.exception("dashboard video preview failed; restarting its decoder")
            core.set_wanted(False)
            jpeg = None
        stats = {"frames": dict(core.frames - sent["frames"]), "freezes": dict(core.freezes - sent["freezes"]),
                 "bytes": core.bytes - sent["bytes"], "fps": core.fps(now), "decoding": core.wanted,
                 "decoded": core.decoded, "dropped": core.dropped, "jpegs": core.jpegs,
                 "jpeg_ms": round(sorted(core.jpeg_ms)[len(core.jpeg_ms) // 2], 2) if core.jpeg_ms else None,
                 "cpu_s": round(time.process_time(), 3)}
        sent = {"frames": collections.Counter(core.frames), "freezes": collections.Counter(core.freezes),
                "bytes": core.bytes}
        try:
            conn.send((jpeg, stats))
        except (BrokenPipeError, OSError):
            return


class VideoPreview:
    """Driver of `PreviewCore`, which runs in a child process: a thread of the site drains its own
    bounded tap subscription every `poll_s`, hands the payloads over a pipe, and passes each new JPEG
    and the counts to `deliver(jpeg_or_None, stats)` (called on this thread: the server hops to its loop).

    Why a process: PyAV holds the GIL while it decodes. Measured on the 2-vCPU VM (6 December), a
    thread decoding 720p H.264 beside a 1 kHz loop raised the loop's p99 lateness from 77 to 1,069 µs;
    the same decoding in another process left it at 74 µs. The site's thread only moves bytes."""

    def __init__(self, subscription: Subscription, deliver: Callable[[bytes | None, dict[str, Any]], None],
                 *, preview_fps: float = 4.0, poll_s: float = 0.05) -> None:
        self.subscription = subscription
        self._preview_fps = preview_fps
        self._deliver = deliver
        self._poll_s = poll_s
        self._wanted_until = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-video", daemon=True)
        self._conn: Any = None
        self._child: Any = None
        self.cpu_s = 0.0  # this thread's and the child's

    def start(self) -> None:
        context = mp.get_context("spawn")  # a clean interpreter: no inherited threads or codec state
        self._conn, child_end = context.Pipe()
        self._child = context.Process(target=_preview_process, args=(child_end, self._preview_fps),
                                      name="telesurg-dashboard-video", daemon=True)
        self._child.start()
        child_end.close()
        self._thread.start()

    def want(self, seconds: float) -> None:
        """Someone looks at the picture: keep decoding for at least `seconds` more."""
        self._wanted_until = max(self._wanted_until, time.monotonic() + seconds)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        if self._child is not None:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(None)
            join_or_kill(self._child, 2.0, kill_wait=1.0)
            with contextlib.suppress(OSError):
                self._conn.close()

    def _run(self) -> None:
        request_realtime(GIL_SHARER_PRIORITY)  # see realtime.py
        cpu0 = time.thread_time()
        while not self._stop.wait(self._poll_s):
            now = time.monotonic()
            records = [("", t, batch) for _, t, batch in self.subscription.drain()]  # builtins: pickled in C
            try:
                self._conn.send((now, now < self._wanted_until, records))
                jpeg, stats = self._conn.recv()  # waits with the GIL released: the child decodes
            except (EOFError, OSError, ValueError):
                log.error("dashboard video preview process stopped (exit code %s); no picture from now on",
                          self._child.exitcode if self._child is not None else None)
                return
            self.cpu_s = time.thread_time() - cpu0 + float(stats.get("cpu_s") or 0.0)
            stats["cpu_s"] = round(self.cpu_s, 3)
            self._deliver(jpeg, stats)
