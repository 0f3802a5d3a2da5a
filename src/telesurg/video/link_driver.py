"""Thin asyncio glue between the video pipeline and a `telesurg.link.driver.LinkEndpoint`.

- `ThreadedCapture` runs capture + encode on its own thread at the configured rate (libx264 releases
  the GIL, the event loop keeps serving the link) and hands each eye's payloads to the loop in one
  `call_soon_threadsafe` batch.
- `LoopReceiver` feeds VIDEO messages to a `VideoReceiver` inside the loop and keeps one loop timer
  armed for its deadlines (jitter-buffer hold, keyframe retries).
Keyframe requests: pass robot-side `SessionEventReceived` payloads to `VideoSender.handle_event`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from telesurg.video.pipeline import VideoReceiver, VideoSender


class ThreadedCapture:
    """Paced capture thread for a `VideoSender` whose payloads go out through `send(payload)` on `loop`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, make_sender: Callable[..., VideoSender],
                 send: Callable[[bytes], Any], clock: Callable[[], float] = time.monotonic) -> None:
        self._loop, self._send, self._clock = loop, send, clock
        self._outbox: list[bytes] = []
        self.sender = make_sender(self._outbox.append, self._hand_over)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="video-capture", daemon=True)
        self.step_seconds: list[float] = []
        self.ticks_skipped = 0

    def _hand_over(self) -> None:
        batch, self._outbox[:] = self._outbox[:], []
        self._loop.call_soon_threadsafe(self._send_all, batch)

    def _send_all(self, batch: list[bytes]) -> None:
        metrics = self.sender.metrics
        if metrics is None or not metrics.tracing or not batch:
            for payload in batch:
                self._send(payload)
            return
        stream, frame_number = batch[0][1], int.from_bytes(batch[0][4:8], "big")  # packetizer header
        metrics.mark(stream, frame_number, "send_start")
        for payload in batch:
            self._send(payload)
        metrics.mark(stream, frame_number, "sent")

    def _run(self) -> None:
        period = 1.0 / self.sender.config.fps
        due = self._clock()
        while not self._stop.is_set():
            t0 = self._clock()
            self.sender.step(t0)
            self.step_seconds.append(self._clock() - t0)
            due += period
            now = self._clock()
            if now > due + period:  # fell behind: skip ticks, never burst to catch up
                self.ticks_skipped += int((now - due) / period)
                due = now
            elif due > now:
                self._stop.wait(due - now)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sender.close()


class LoopReceiver:
    """Drive a `VideoReceiver` from the event loop: call `on_video(payload)` for each VIDEO message."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receiver: VideoReceiver,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._loop, self.receiver, self._clock = loop, receiver, clock
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def on_video(self, payload: bytes) -> None:
        self.receiver.receive(payload, self._clock())
        self._rearm()

    def _rearm(self) -> None:
        when = self.receiver.get_timer()
        if when == self._at:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._at = when
        if when is not None:
            delay = max(0.0, when - self._clock())
            self._handle = self._loop.call_at(self._loop.time() + delay, self._fire)
        else:
            self._handle = None

    def _fire(self) -> None:
        self._handle, self._at = None, None
        self.receiver.handle_timer(self._clock())
        self._rearm()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self.receiver.close()
