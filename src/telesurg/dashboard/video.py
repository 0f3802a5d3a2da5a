"""The endoscope picture for the dashboard: left eye rebuilt from the tap's VIDEO payloads, decoded,
and re-encoded as JPEG at a few frames per second, on a thread of the dashboard's process (see
VideoPreview and dashboard/process.py).

Why not in the servo or link threads: H.264 frames depend on each other,
so every access unit of the shown eye must be decoded even when the page shows one in four; that is
CPU work the control threads must never do or wait for. Reassembly and decoding run only while a
page is open (`want`); frame counts and freezes per eye (read from the 26-byte fragment headers, no
reassembly) run always, for /metrics. After a page opens, the picture appears at the stream's next
intra refresh (the decoder cannot start mid-wave); the site never sends a keyframe for a viewer.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any

import av
from av.video.reformatter import VideoReformatter

from telesurg.tap import TapRecord
from telesurg.video.codec import DecodedFrame, VideoDecoder
from telesurg.video.metrics import FREEZE_S
from telesurg.video.packetizer import HEADER
from telesurg.video.reassembly import FrameDropped, FrameReady, Reassembler

log = logging.getLogger("telesurg.dashboard")
SHOWN_STREAM = 0  # the left eye
MAX_WIDTH = 640  # the preview is for recognising the scene, not for surgery
JPEG_QSCALE = 5  # MJPEG quantiser (2 best .. 31 worst): ~25 KB for a 640x360 endoscope picture
HOLD_S, MAX_WAIT_S = 0.07, 0.25


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


class VideoPreview:
    """Driver of `PreviewCore` on a thread of the dashboard's process (dashboard/process.py): the
    pipe's reader `offer`s the VIDEO records, and every `poll_s` this thread feeds them to the core
    and passes each new JPEG and the counts to `deliver(jpeg_or_None, stats)` (the server hops to its
    loop). PyAV holds the GIL while it decodes: here that delays only the dashboard's own loop, never
    the site's threads, which run in another process."""

    def __init__(self, deliver: Callable[[bytes | None, dict[str, Any]], None], clock: Callable[[], float],
                 *, preview_fps: float = 4.0, poll_s: float = 0.05, capacity: int = 2048) -> None:
        self.core = PreviewCore(preview_fps)
        self._deliver = deliver
        self._clock = clock
        self._poll_s = poll_s
        self._pending: collections.deque[TapRecord] = collections.deque(maxlen=capacity)
        self.lost = 0  # records that waited too long (the decoder far behind): counted, never waited for
        self._wanted_until = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-video", daemon=True)
        self.cpu_s = 0.0

    def start(self) -> None:
        self._thread.start()

    def offer(self, records: Iterable[TapRecord]) -> None:
        for record in records:
            if len(self._pending) == self._pending.maxlen:
                self.lost += 1
            self._pending.append(record)

    def want(self, seconds: float) -> None:
        """Someone looks at the picture: keep decoding for at least `seconds` more."""
        self._wanted_until = max(self._wanted_until, time.monotonic() + seconds)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def _run(self) -> None:
        core, sent = self.core, {"frames": collections.Counter(), "freezes": collections.Counter(), "bytes": 0}
        cpu0 = time.thread_time()
        while not self._stop.wait(self._poll_s):
            records = [self._pending.popleft() for _ in range(len(self._pending))]
            wanted = time.monotonic() < self._wanted_until
            if wanted != core.wanted:
                core.set_wanted(wanted)
            now = self._clock()
            try:
                jpeg = core.feed(records, now)
            except Exception:  # a codec surprise loses the picture, never the dashboard
                log.exception("dashboard video preview failed; restarting its decoder")
                core.set_wanted(False)
                jpeg = None
            self.cpu_s = time.thread_time() - cpu0
            stats = {"frames": dict(core.frames - sent["frames"]), "freezes": dict(core.freezes - sent["freezes"]),
                     "bytes": core.bytes - sent["bytes"], "fps": core.fps(now), "decoding": core.wanted,
                     "decoded": core.decoded, "dropped": core.dropped + self.lost, "jpegs": core.jpegs,
                     "jpeg_ms": round(sorted(core.jpeg_ms)[len(core.jpeg_ms) // 2], 2) if core.jpeg_ms else None,
                     "cpu_s": round(self.cpu_s, 3)}
            sent = {"frames": collections.Counter(core.frames), "freezes": collections.Counter(core.freezes),
                    "bytes": core.bytes}
            self._deliver(jpeg, stats)
