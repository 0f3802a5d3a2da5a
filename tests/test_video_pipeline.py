"""End-to-end video with real H.264 (and HEVC): sender -> lossy/jittery channel -> receiver, under a
virtual clock, plus the stock ffmpeg CLI decoding what the pipeline writes.

The channel here is an in-test fake (loss, delay, jitter, outage); tests/test_video_link.py runs the
same pipeline over two real `LinkCore`s joined by `VirtualNetwork`.
"""

from __future__ import annotations

import heapq
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from telesurg.video import framecode
from telesurg.video.codec import DecodedFrame, EncodedFrame, EncoderConfig, VideoDecoder, VideoEncoder
from telesurg.video.metrics import VideoMetrics
from telesurg.video.packetizer import Packetizer
from telesurg.video.pipeline import VideoReceiver, VideoSender
from telesurg.video.reassembly import FrameReady, Reassembler
from telesurg.video.sources import LoopedClipSource, TestPatternSource

W, H, FPS = 320, 180, 30.0


class LossyChannel:
    """Fake network for unit tests: per-packet loss, delay + uniform jitter, optional outage window."""

    def __init__(self, seed: int, loss: float, delay: float, jitter: float) -> None:
        self.rng = random.Random(seed)
        self.loss, self.delay, self.jitter = loss, delay, jitter
        self.outage: tuple[float, float] | None = None
        self.late: tuple[float, float] = (0.0, 0.0)  # (probability, extra delay)
        self._heap: list[tuple[float, int, bytes]] = []
        self._seq = 0
        self.sent = self.lost = 0

    def send(self, payload: bytes, now: float) -> None:
        self.sent += 1
        if self.rng.random() < self.loss or (self.outage and self.outage[0] <= now < self.outage[1]):
            self.lost += 1
            return
        at = now + self.delay + self.rng.random() * self.jitter
        if self.rng.random() < self.late[0]:
            at += self.late[1]
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, payload))

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[bytes]:
        out = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[2])
        return out


class Harness:
    """Stereo sender and receiver joined by two fake channels (video forward, events back)."""

    def __init__(self, *, loss: float, seed: int = 1, fec: float = 0.3, delay: float = 0.05,
                 jitter: float = 0.004, codec: str = "h264", clip_frames: int = 90, **rx_kwargs: object) -> None:
        self.now = 0.0
        clock: Callable[[], float] = lambda: self.now  # noqa: E731
        cfg = EncoderConfig(codec=codec, width=W, height=H if codec == "h264" else 176, fps=FPS,
                            bitrate_kbps=1200, gop_frames=30)
        self.cfg = cfg
        self.clips = [LoopedClipSource.record(TestPatternSource(cfg.width, cfg.height, FPS, eye_offset_px=o),
                                              clip_frames, clock=clock) for o in (0, 12)]
        self.video = LossyChannel(seed, loss, delay, jitter)
        self.events = LossyChannel(seed + 1, 0.0, delay, 0.0)  # the reliable channel: delayed, not lost
        self.metrics = VideoMetrics()
        self.sender = VideoSender(self.clips, cfg, lambda p: self.video.send(p, self.now), fec_overhead=fec,
                                  metrics=self.metrics)
        self.shown: list[DecodedFrame] = []
        self.shown_at: list[float] = []
        self.receiver = VideoReceiver(self._on_frame, lambda e: self.events.send(e, self.now), codec=codec,
                                      fps=FPS, metrics=self.metrics,
                                      reference_fn=lambda s, n: self.clips[s].reference(n), psnr_every=10,
                                      **rx_kwargs)  # type: ignore[arg-type]

    def _on_frame(self, frame: DecodedFrame) -> None:
        self.shown.append(frame)
        self.shown_at.append(self.now)

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        next_capture = self.now
        while self.now < end:
            candidates = [next_capture, self.video.next_time(), self.events.next_time(),
                          self.receiver.get_timer()]
            self.now = min(c for c in candidates if c is not None)
            for payload in self.video.pop_due(self.now):
                self.receiver.receive(payload, self.now)
            for event in self.events.pop_due(self.now):
                assert self.sender.handle_event(event, self.now)
            timer = self.receiver.get_timer()
            if timer is not None and timer <= self.now:
                self.receiver.handle_timer(self.now)
            if self.now >= next_capture:
                self.sender.step(self.now)
                next_capture += 1 / FPS

    def close(self) -> None:
        self.sender.close()


def _per_stream_numbers(shown: list[DecodedFrame], stream: int) -> list[int]:
    return [f.frame_number for f in shown if f.stream == stream]


def test_stereo_round_trip_60s_with_loss_fec_recovers_and_no_lag_growth() -> None:
    h = Harness(loss=0.02, seed=7)
    h.video.late = (0.002, 0.2)  # a few fragments arrive 200 ms late: their frames must not wait
    h.run(60.0)
    h.close()
    rep = h.metrics.report()
    stats = h.receiver.reassembler.stats
    assert stats.repaired_fragments > 50  # FEC did real work
    assert stats.stale_fragments > 0  # late fragments arrived after their frame was given up or shown
    assert rep["code_mismatches"] == 0  # every decoded picture is the frame its header claims
    for stream in (0, 1):
        numbers = _per_stream_numbers(h.shown, stream)
        assert numbers == sorted(numbers) and len(numbers) == len(set(numbers))  # in order, no repeats
        assert len(numbers) > 0.9 * 60 * FPS
    # no lag growth: every picture is shown within network delay + jitter + one-frame hold + decode
    latency = np.array([t - f.capture_time for f, t in zip(h.shown, h.shown_at, strict=True)])
    assert latency.max() < 0.05 + 0.004 + 1.5 / FPS + 1e-6
    first, last = latency[: len(latency) // 6], latency[-len(latency) // 6 :]
    assert np.percentile(last, 99) <= np.percentile(first, 99) + 1e-3
    assert rep["psnr_db"] is not None and rep["psnr_db"] > 30  # type: ignore[operator]
    assert rep["frames_displayed"] + rep["frames_dropped"] >= 0.98 * rep["frames_captured"]  # type: ignore[operator]


def test_outage_triggers_keyframe_request_and_recovery() -> None:
    h = Harness(loss=0.0, seed=3, fec=0.0)
    h.video.outage = (5.0, 5.5)
    h.run(8.0)
    h.close()
    assert h.receiver.keyframe_requests_sent >= 2  # one per eye at least
    assert h.sender.keyframe_requests >= 2
    assert sum(e.keyframes_forced for e in h.sender._encoders) >= 2
    for stream in (0, 1):
        times = [t for f, t in zip(h.shown, h.shown_at, strict=True) if f.stream == stream]
        after = [t for t in times if t > 5.5]
        # the first picture after the outage comes a keyframe round trip later, then it streams again
        assert after and after[0] < 5.5 + 3 * 0.05 + 4 / FPS + 0.005
        assert len(after) > (8.0 - after[0]) * FPS - 3
        resumed = [f for f in h.shown if f.stream == stream and f.capture_time >= 5.5]
        assert resumed[0].keyframe  # nothing smeared shown: the stream restarts on a keyframe
    assert h.metrics.report()["freezes"] >= 2


def test_max_latency_drops_frames_that_arrive_too_old() -> None:
    h = Harness(loss=0.0, seed=4, delay=0.05, max_latency=0.1)
    h.run(2.0)
    shown_before = len(h.shown)
    h.video.delay = 0.3  # the path suddenly queues: every frame now arrives 300 ms old
    h.run(2.0)
    assert h.receiver.frames_too_old >= 2  # at least the first old frame of each eye, then keyframes
    latency = [t - f.capture_time for f, t in zip(h.shown, h.shown_at, strict=True)]
    assert max(latency) <= 0.1 and len(h.shown) - shown_before <= 2 * 3  # only frames already in flight
    h.video.delay = 0.05  # the queue drains: the stream must come back by itself (keyframe requests)
    h.run(1.0)
    h.close()
    assert {f.stream for f in h.shown if f.capture_time > 4.2} == {0, 1}


def test_receiver_ignores_input_after_close() -> None:
    h = Harness(loss=0.0, seed=2, decode_threads=True)
    h.run(0.5)
    h.receiver.close()  # waits for the decode workers
    shown = len(h.shown)
    assert shown > 0
    h.run(0.3)  # payloads keep arriving after shutdown: dropped quietly, nothing raised or shown
    h.close()
    assert len(h.shown) == shown


def test_hevc_round_trip_with_loss() -> None:
    h = Harness(loss=0.01, seed=5, codec="hevc", clip_frames=30)
    h.run(4.0)
    h.close()
    rep = h.metrics.report()
    assert rep["code_mismatches"] == 0 and rep["frames_displayed"] > 0.85 * 2 * 4 * FPS  # type: ignore[operator]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg CLI not installed (make system-deps)")
@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_stream_decodes_with_stock_ffmpeg(tmp_path: Path, codec: str) -> None:
    """Frames that went through packetizer -> loss of one fragment each -> FEC repair -> reassembly are
    written as an elementary stream; the stock ffmpeg decodes it cleanly, every frame, in order."""
    cfg = EncoderConfig(codec=codec, width=320, height=176, fps=30, bitrate_kbps=800, gop_frames=15)
    source = TestPatternSource(cfg.width, cfg.height, 30)
    encoder = VideoEncoder(cfg)
    packetizer = Packetizer(400, fec_overhead=0.5)
    reassembler = Reassembler(hold=1 / 30, max_wait=0.05)
    released: list[EncodedFrame] = []
    for i in range(60):
        frame = source.read()
        framecode.stamp_yuv420p(frame.image, frame.frame_number)
        for encoded in encoder.encode(frame, force_keyframe=(i == 40)):
            payloads = packetizer.packetize(encoded)
            for payload in payloads[1:]:  # the first fragment of every frame is lost
                released += [e.frame for e in reassembler.receive(payload, i / 30) if isinstance(e, FrameReady)]
    assert [f.frame_number for f in released] == list(range(60))
    assert reassembler.stats.repaired_fragments == 60
    path = tmp_path / f"stream.{codec}"
    path.write_bytes(b"".join(f.data for f in released))
    check = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and check.stderr == ""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         capture_output=True, timeout=60)
    lumas = np.frombuffer(raw.stdout, dtype=np.uint8).reshape(-1, cfg.height, cfg.width)
    assert [framecode.read_luma(y) for y in lumas] == list(range(60))  # ffmpeg sees every frame, in order
    decoder = VideoDecoder(codec)
    assert all(decoder.decode(f) is not None for f in released)


def test_stage_tracing_through_sender_and_receiver() -> None:
    """With a stage clock, a stereo sender -> receiver run reports every stage for both eyes, and the
    stages add up to the measured capture -> decoded latency."""
    metrics = VideoMetrics(stage_clock=time.monotonic)
    cfg = EncoderConfig(width=W, height=H, fps=FPS, bitrate_kbps=800, gop_frames=15)
    clips = [LoopedClipSource.record(TestPatternSource(W, H, FPS, eye_offset_px=o), 10) for o in (0, 12)]
    payloads: list[bytes] = []
    sender = VideoSender(clips, cfg, payloads.append, metrics=metrics)
    receiver = VideoReceiver(lambda d: None, lambda e: None, fps=FPS, metrics=metrics, clock=time.monotonic)
    for _ in range(20):
        sender.step(time.monotonic())
        for payload in payloads:
            receiver.receive(payload, time.monotonic())
        payloads.clear()
    sender.close()
    receiver.close()
    rep = metrics.report()
    assert rep["frames_displayed"] == 40 and rep["code_mismatches"] == 0
    for eye in rep["eyes"].values():  # type: ignore[union-attr]
        assert {"enc_start", "encoded", "packetized", "first_fragment", "complete", "dec_start",
                "decoded"} <= eye["stages_ms"].keys()
    total = sum(v["p50"] for v in rep["stages_ms"].values())  # type: ignore[union-attr]
    assert 0 < total < 10 * rep["latency_ms"]["p50"]  # type: ignore[index]
