"""Stereo H.264 over two real LinkCores (TLS 1.3 handshake, AES-GCM datagrams, two paths) joined by
`VirtualNetwork` under a virtual clock, with loss on both paths: FEC repairs, late frames dropped,
keyframe requests ride the reliable event channel, and there is no lag growth over 60 s."""

from __future__ import annotations

import numpy as np

from telesurg.link.core import LinkCore
from telesurg.link.events import MessageClass, MessageReceived, SessionEventReceived
from telesurg.link.testing import make_pair
from telesurg.netem.profiles import Profile, parse_profile
from telesurg.netem.virtual import VirtualNetwork
from telesurg.video.codec import DecodedFrame, EncoderConfig
from telesurg.video.metrics import VideoMetrics
from telesurg.video.pipeline import VideoReceiver, VideoSender
from telesurg.video.sources import LoopedClipSource, TestPatternSource

W, H, FPS = 320, 180, 30.0
DELAY_A, DELAY_B = 0.0525, 0.0825  # shanghai-casablanca one-way delays
# Both paths lossy (every fragment travels on both; one copy is enough): independent 8 % + bursts.
PROFILE = parse_profile({"name": "lossy-video", "path": [
    {"name": "a", "both": {"delay_ms": DELAY_A * 1e3, "jitter_ms": 0.5, "loss": 0.08}},
    {"name": "b", "both": {"delay_ms": DELAY_B * 1e3, "jitter_ms": 3.0, "loss": 0.05,
                           "ge_p": 0.01, "ge_r": 0.3, "ge_loss_bad": 0.8}},
]})


class ConsoleSide:
    """The console endpoint: LinkCore + VideoReceiver, with the receiver's timers merged in."""

    def __init__(self, core: LinkCore) -> None:
        self.core = core
        self.now = 0.0
        self.shown: list[tuple[DecodedFrame, float]] = []
        self.metrics = VideoMetrics()
        self.receiver = VideoReceiver(lambda f: self.shown.append((f, self.now)),
                                      lambda e: self.core.send_event(e, self.now), fps=FPS, metrics=self.metrics)

    def datagrams_to_send(self, now: float) -> list[tuple[str, bytes]]:
        return self.core.datagrams_to_send(now)

    def receive_datagram(self, data: bytes, path: str, now: float) -> None:
        self.now = now
        self.core.receive_datagram(data, path, now)
        self._drain(now)

    def get_timer(self) -> float | None:
        timers = [t for t in (self.core.get_timer(), self.receiver.get_timer()) if t is not None]
        return min(timers, default=None)

    def handle_timer(self, now: float) -> None:
        self.now = now
        if (t := self.core.get_timer()) is not None and t <= now:
            self.core.handle_timer(now)
        if (t := self.receiver.get_timer()) is not None and t <= now:
            self.receiver.handle_timer(now)
        self._drain(now)

    def _drain(self, now: float) -> None:
        while (event := self.core.next_event()) is not None:
            if isinstance(event, MessageReceived) and event.msg_class == MessageClass.VIDEO:
                self.receiver.receive(event.payload, now)


class RobotSide:
    """The robot endpoint: LinkCore; keyframe requests from the event channel go to the sender."""

    def __init__(self, core: LinkCore) -> None:
        self.core = core
        self.sender: VideoSender | None = None
        self.events_handled = 0

    def datagrams_to_send(self, now: float) -> list[tuple[str, bytes]]:
        return self.core.datagrams_to_send(now)

    def receive_datagram(self, data: bytes, path: str, now: float) -> None:
        self.core.receive_datagram(data, path, now)
        self._drain(now)

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self._drain(now)

    def _drain(self, now: float) -> None:
        while (event := self.core.next_event()) is not None:
            if isinstance(event, SessionEventReceived) and self.sender is not None:
                self.events_handled += self.sender.handle_event(event.payload, now)


def stream_stereo(profile: Profile, *, link_seed: int, net_seed: int,
                  fec_overhead: float) -> tuple[VirtualNetwork, ConsoleSide, RobotSide, VideoSender]:
    """Connect a link pair over `profile` (virtual clock), then stream a stereo test pattern at FPS."""
    client, server, _, _ = make_pair(("a", "b"), seed=link_seed)
    console, robot = ConsoleSide(client), RobotSide(server)
    net = VirtualNetwork(console, robot, profile, seed=net_seed)
    client.connect(0.0)
    net.run_for(2.0)
    assert client.established and server.established

    clock = lambda: net.now  # noqa: E731
    cfg = EncoderConfig(width=W, height=H, fps=FPS, bitrate_kbps=1000, gop_frames=30)
    clips = [LoopedClipSource.record(TestPatternSource(W, H, FPS, eye_offset_px=o), 60, clock=clock)
             for o in (0, 12)]
    sender = VideoSender(clips, cfg, lambda p: server.send(MessageClass.VIDEO, p, net.now),
                         fec_overhead=fec_overhead)
    robot.sender = sender
    net.add_ticker(1 / FPS, sender.step)
    return net, console, robot, sender


def test_stereo_h264_over_two_lossy_paths_for_60s() -> None:
    net, console, robot, sender = stream_stereo(PROFILE, link_seed=3, net_seed=11, fec_overhead=0.3)
    start = net.now
    net.run_for(60.0)
    sender.close()

    stats = console.receiver.reassembler.stats
    report = console.metrics.report()
    assert stats.repaired_fragments > 20, stats  # FEC repaired fragments lost on both paths
    assert stats.frames_dropped >= 1 and console.receiver.keyframe_requests_sent >= 1
    assert robot.events_handled >= 1 and sum(e.keyframes_forced for e in sender._encoders) >= 1
    assert report["code_mismatches"] == 0  # each picture is the frame its header says
    for stream in (0, 1):
        numbers = [f.frame_number for f, _ in console.shown if f.stream == stream]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        assert len(numbers) > 0.9 * 60 * FPS
    latency = np.array([t - f.capture_time for f, t in console.shown])
    # first copy (path a) + jitter + at most one frame of hold: no buffer builds up, ever
    assert latency.max() < DELAY_A + 0.01 + 1.5 / FPS
    sixth = len(latency) // 6
    assert np.percentile(latency[-sixth:], 99) <= np.percentile(latency[:sixth], 99) + 0.002
    assert report["bitrate_mbps"] < 2 * 1.0 * 1.3 * 1.2  # 2 eyes x 1 Mbit/s x FEC x headers/VBV slack
    assert net.now - start >= 60.0
