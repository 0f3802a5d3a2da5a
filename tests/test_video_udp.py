"""Stereo video over the real link driver: two LinkEndpoints (TLS 1.3, AES-GCM, two UDP paths on
127.0.0.1), a paced capture thread and a loop-driven receiver, as the apps and the bench run it.
A 300 ms blackout of the video payloads must end in a keyframe request on the reliable event channel,
a forced keyframe, and the stream resuming by itself."""

from __future__ import annotations

import asyncio
import time

from telesurg.link.events import Event, MessageClass, MessageReceived, SessionEventReceived
from telesurg.link.testing import make_pair, start_loopback_pair
from telesurg.video.codec import DecodedFrame, EncoderConfig
from telesurg.video.link_driver import LoopReceiver, ThreadedCapture
from telesurg.video.pipeline import VideoReceiver, VideoSender
from telesurg.video.sources import TestPatternSource

W, H, FPS = 320, 180, 30.0


async def _scenario() -> None:
    loop = asyncio.get_running_loop()
    client, server, _, _ = make_pair()
    capture: ThreadedCapture | None = None
    rx: LoopReceiver | None = None
    blackout = [False]
    shown: list[tuple[DecodedFrame, float]] = []

    def robot_event(event: Event) -> None:
        if isinstance(event, SessionEventReceived) and capture is not None:
            capture.sender.handle_event(event.payload, time.monotonic())

    def on_video(event: MessageReceived) -> None:
        if event.msg_class == MessageClass.VIDEO and rx is not None:
            rx.on_video(event.payload)

    console, robot = await start_loopback_pair(
        client, server, client_callbacks={"on_message": on_video, "on_event": lambda e: None},
        server_callbacks={"on_event": robot_event})

    receiver = VideoReceiver(lambda f: shown.append((f, time.monotonic())),
                             lambda e: loop.call_soon_threadsafe(console.send_event, e), fps=FPS,
                             clock=time.monotonic, decode_threads=True)
    rx = LoopReceiver(loop, receiver)
    cfg = EncoderConfig(width=W, height=H, fps=FPS, bitrate_kbps=800, gop_frames=300)
    sources = [TestPatternSource(W, H, FPS, eye_offset_px=o) for o in (0, 12)]

    def send(payload: bytes) -> None:
        if not blackout[0]:
            robot.send(MessageClass.VIDEO, payload)

    capture = ThreadedCapture(loop, lambda s, f: VideoSender(sources, cfg, s, flush_fn=f), send)
    try:
        capture.start()
        await asyncio.sleep(1.5)
        blackout[0] = True
        t_blackout = time.monotonic()
        await asyncio.sleep(0.3)
        blackout[0] = False
        t_back = time.monotonic()
        await asyncio.sleep(1.5)
    finally:
        capture.stop()
        await asyncio.sleep(0.1)
        rx.close()
        await console.close()
        await robot.close()

    report = receiver.metrics.report()
    assert report["code_mismatches"] == 0
    for stream in (0, 1):
        frames = [(f, t) for f, t in shown if f.stream == stream]
        numbers = [f.frame_number for f, _ in frames]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        before = [f for f, t in frames if t < t_blackout]
        after = [f for f, t in frames if t > t_back + 0.05]
        assert len(before) > FPS  # streaming at (close to) the frame rate before the blackout
        assert after and after[0].keyframe  # resumed on a fresh keyframe, requested over the link
        assert len(after) > 0.5 * FPS
    assert receiver.keyframe_requests_sent >= 2 and capture.sender.keyframe_requests >= 2
    assert sum(e.keyframes_forced for e in capture.sender._encoders) >= 2
    latency = [t - f.capture_time for f, t in shown]
    assert sorted(latency)[len(latency) // 2] < 0.1  # loopback: well under 100 ms even on a busy machine


def test_stereo_video_over_real_udp_link_recovers_from_blackout() -> None:
    asyncio.run(_scenario())
