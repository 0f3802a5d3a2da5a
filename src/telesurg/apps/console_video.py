"""The console site's endoscope view: VIDEO payloads from the link → reassembly/FEC/decode → window.

Decoding runs on per-eye worker threads (libavcodec releases the GIL); the newest picture per eye goes
to a display thread that shows it in an SDL window (side-by-side, top-bottom or anaglyph; 'm' cycles)
with a link/latency overlay. With no display (SDL_VIDEODRIVER=dummy) the same path runs headless, so
the report's frame counts and latencies are the ones a surgeon would see.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from telesurg.link.driver import LinkEndpoint
from telesurg.site_config import VideoConfig
from telesurg.video.display import LatestFrames, StereoDisplay, overlay_lines
from telesurg.video.link_driver import LoopReceiver
from telesurg.video.pipeline import VideoReceiver

log = logging.getLogger(__name__)
DISPLAY_HZ = 30.0


class ConsoleVideo:
    def __init__(self, config: VideoConfig, endpoint: LinkEndpoint, *, display: bool = True) -> None:
        self._endpoint = endpoint
        self._latest = LatestFrames(eyes=2)
        loop = asyncio.get_running_loop()
        offset = endpoint.core.clock_offset()  # robot clock - console clock
        self.receiver = VideoReceiver(self._latest.put, self._send_event, fps=config.fps, decode_threads=True,
                                      clock_offset=-(offset or 0.0))
        self._loop_receiver = LoopReceiver(loop, self.receiver)
        self._loop = loop
        self._config = config
        self._stop = threading.Event()
        self._display_thread = threading.Thread(target=self._display, name="video-display", daemon=True) \
            if display else None
        self.frames_shown = 0
        if self._display_thread is not None:
            self._display_thread.start()

    def _send_event(self, payload: bytes) -> None:
        # called from decode workers: hand the keyframe request to the link's loop
        self._loop.call_soon_threadsafe(self._endpoint.send_event, payload)

    def on_datagram(self, payload: bytes) -> None:
        """A VIDEO message from the link (asyncio thread)."""
        offset = self._endpoint.core.clock_offset()
        if offset is not None:
            self.receiver.metrics.clock_offset = -offset
        self._loop_receiver.on_video(payload)

    def _display(self) -> None:
        try:
            window = StereoDisplay(2 * self._config.width, self._config.height)
        except Exception as exc:  # noqa: BLE001 - no display is not a reason to stop the operation view
            log.warning("no video window (%s); decoding continues headless", exc)
            return
        try:
            while not self._stop.wait(1.0 / DISPLAY_HZ):
                frames = self._latest.take()
                window.poll()
                if frames is None or frames[0] is None:
                    continue
                left = frames[0].picture.to_ndarray(format="rgb24")
                right = frames[1].picture.to_ndarray(format="rgb24") if frames[1] is not None else None
                window.show(left, right, overlay_lines(self.receiver.metrics.report()))
                self.frames_shown += 1
        finally:
            window.close()

    def report(self) -> dict[str, Any]:
        report = dict(self.receiver.metrics.report())
        report["frames_on_screen"] = self.frames_shown
        report["keyframe_requests_sent"] = self.receiver.keyframe_requests_sent
        return report

    def close(self) -> None:
        self._stop.set()
        if self._display_thread is not None:
            self._display_thread.join(2.0)
        self._loop_receiver.close()
