"""The console site's endoscope view, in a process of its own at a lower CPU priority.

Reassembly, FEC repair, H.264 decoding and composing pictures cost far more CPU than the 1 kHz
command path, and in the console process they competed with it for the GIL and the cores: the
ticker skipped periods and the robot held on silence. So, as on the robot side (robot_video.py),
the picture work runs in a spawned child at a lower priority: when the machine is short of cycles
the picture rate drops, never the command rate (video gives way first, DESIGN.md section 2).

The link stays in the parent (one authenticated session); each decrypted VIDEO payload crosses to
the child over a SOCK_SEQPACKET socket pair (message boundaries kept, non-blocking: if the child
falls behind the payload is dropped and counted, exactly as a congested link would drop video).
Messages are tagged: parent→child `V`ideo payload, clock `O`ffset, `T`ool positions for the predictive
overlay (console/overlay_feed.py; 30 Hz, only when there is a window to draw on), `S`top; child→parent
`K`eyframe request (forwarded on the reliable event channel) and the final `R`eport (JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing as mp
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from telesurg.child_process import join_or_kill
from telesurg.console.overlay_feed import ToolMarkers, ToolOverlayPainter
from telesurg.link.driver import LinkEndpoint
from telesurg.realtime import unpin
from telesurg.site_config import VideoConfig

log = logging.getLogger(__name__)
DISPLAY_HZ = 30.0
VIDEO_NICENESS = 10  # below the command path (0), above nothing else we run
SOCKET_BUFFER = 4 << 20
_OFFSET = struct.Struct("!d")
_MAX_MESSAGE = 1 << 16


TOOLS_LEGEND = "overlay (o): cyan + commanded now, amber o last measured"


def with_tools(tools: ToolOverlayPainter, shown: bool, left: np.ndarray, right: np.ndarray | None,
               lines: list[str]) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """The eyes and status lines to show: with the predictive overlay and its legend while `shown`."""
    if not shown:
        return left, right, lines
    left, right = tools.paint(left, right)
    return left, right, [*lines, TOOLS_LEGEND]


def _child(sock: socket.socket, config: dict[str, Any], display: bool, offset: float) -> None:
    """Child process: payloads in, pictures on screen, keyframe requests and the report out."""
    os.nice(VIDEO_NICENESS)
    unpin()  # any CPU's spare cycles, even when the console site is pinned (the demo's CPU split)
    from av.video.reformatter import VideoReformatter

    from telesurg.video.display import LatestFrames, StereoDisplay, overlay_lines
    from telesurg.video.pipeline import VideoReceiver

    video = VideoConfig(**config)
    latest = LatestFrames(eyes=2)
    send_lock = threading.Lock()

    def send_event(payload: bytes) -> None:  # decode workers: keyframe requests back to the link
        with send_lock, contextlib.suppress(OSError):
            sock.send(b"K" + payload)

    # clock: frames are stamped when decoded, so the reported latency includes decoding
    receiver = VideoReceiver(latest.put, send_event, fps=video.fps, decode_threads=True, clock_offset=-offset,
                             clock=time.monotonic)
    stop = threading.Event()
    shown = [0]
    tools = ToolOverlayPainter(video.width, video.height)

    def show() -> None:
        try:
            window = StereoDisplay(2 * video.width, video.height)
        except Exception as exc:  # noqa: BLE001 - no window is not a reason to stop decoding
            log.warning("no video window (%s); decoding continues headless", exc)
            return
        to_rgb = (VideoReformatter(), VideoReformatter())  # one colour-conversion context per eye
        try:
            while not stop.wait(1.0 / DISPLAY_HZ):
                frames = latest.take()
                window.poll()
                if frames is None or frames[0] is None:
                    continue
                left = frames[0].rgb(to_rgb[0])
                right = frames[1].rgb(to_rgb[1]) if frames[1] is not None else None
                window.show(*with_tools(tools, window.tools_shown, left, right,
                                        overlay_lines(receiver.metrics.report())))
                shown[0] += 1
        finally:
            window.close()

    shower = threading.Thread(target=show, name="video-display", daemon=True) if display else None
    if shower is not None:
        shower.start()
    sock.send(b"H")  # imports done, decoder ready: what arrives from now on is decoded
    try:
        while True:
            due = receiver.get_timer()
            sock.settimeout(None if due is None else max(0.0, due - time.monotonic()))
            try:
                message = sock.recv(_MAX_MESSAGE)
            except TimeoutError:
                message = None
            if message is not None:
                if not message or message[:1] == b"S":
                    break
                if message[:1] == b"V":
                    receiver.receive(message[1:], time.monotonic())
                elif message[:1] == b"O":
                    receiver.metrics.clock_offset = -_OFFSET.unpack_from(message, 1)[0]
                elif message[:1] == b"T":
                    tools.receive(message[1:])
            due = receiver.get_timer()
            if due is not None and due <= time.monotonic():
                receiver.handle_timer(time.monotonic())
    finally:
        stop.set()
        if shower is not None:
            shower.join(2.0)
        receiver.close()
        report = dict(receiver.metrics.report())
        report["frames_on_screen"] = shown[0]
        report["keyframe_requests_sent"] = receiver.keyframe_requests_sent
        report["overlay"] = {"frames_drawn": tools.frames_drawn, "malformed": tools.malformed}
        sock.settimeout(5.0)
        with contextlib.suppress(OSError):
            sock.send(b"R" + json.dumps(report).encode())
        sock.close()


class ConsoleVideo:
    """Parent-side handle: VIDEO payloads to the child, keyframe requests back to the robot."""

    def __init__(self, config: VideoConfig, endpoint: LinkEndpoint, *, display: bool = True,
                 tool_markers: Callable[[], ToolMarkers | None] | None = None) -> None:
        """`tool_markers`: called at the display rate on the asyncio loop for the overlay's latest tool
        positions (None: nothing yet); not called without a display (headless pays nothing for it)."""
        self._endpoint = endpoint
        self._loop = asyncio.get_running_loop()
        self._sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for sock in (self._sock, child):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        self._sock.setblocking(False)
        offset = endpoint.core.clock_offset()  # robot clock - console clock
        self._sent_offset = offset
        context = mp.get_context("spawn")  # a clean interpreter: no inherited threads or SDL state
        self._process = context.Process(target=_child, name="telesurg-console-video", daemon=True,
                                        args=(child, config.model_dump(), display, offset or 0.0))
        self._process.start()
        child.close()
        self._loop.add_reader(self._sock.fileno(), self._read)
        self._report: dict[str, Any] | None = None
        self._ready = asyncio.Event()
        self.payloads_dropped = 0
        self.keyframe_requests_forwarded = 0
        self._tool_markers = tool_markers if display else None
        self._tools_timer: asyncio.TimerHandle | None = None
        if self._tool_markers is not None:
            self._tools_timer = self._loop.call_later(1.0 / DISPLAY_HZ, self._send_tools)

    async def wait_ready(self, timeout: float) -> bool:
        """Until the child has started and can decode (a spawned interpreter takes ~1 s, more when busy)."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def on_datagram(self, payload: bytes) -> None:
        """A VIDEO message from the link (asyncio thread): hand it over, or drop it if the child lags."""
        offset = self._endpoint.core.clock_offset()
        if offset is not None and offset != self._sent_offset:
            self._sent_offset = offset
            self._send(b"O" + _OFFSET.pack(offset))
        self._send(b"V" + payload)

    def _send_tools(self) -> None:
        """Every display period: the newest tool positions to the child (dropped, not queued, if it lags)."""
        self._tools_timer = self._loop.call_later(1.0 / DISPLAY_HZ, self._send_tools)
        markers = self._tool_markers() if self._tool_markers is not None else None
        if markers is not None:
            with contextlib.suppress(BlockingIOError, OSError):
                self._sock.send(b"T" + markers.encode())

    def _send(self, message: bytes) -> None:
        try:
            self._sock.send(message)
        except (BlockingIOError, OSError):
            self.payloads_dropped += 1

    def _read(self) -> None:
        while True:
            try:
                message = self._sock.recv(_MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message = b""
            if not message:  # the child closed its end (or died)
                self._loop.remove_reader(self._sock.fileno())
                return
            if message[:1] == b"H":
                self._ready.set()
            elif message[:1] == b"K" and self._endpoint.established:
                self.keyframe_requests_forwarded += 1
                self._endpoint.send_event(message[1:])
            elif message[:1] == b"R":
                self._report = json.loads(message[1:])

    def report(self) -> dict[str, Any]:
        report = dict(self._report) if self._report is not None else {"error": "the video process gave no report"}
        report["payloads_dropped_at_handover"] = self.payloads_dropped
        return report

    def close(self) -> None:
        if self._tools_timer is not None:
            self._tools_timer.cancel()
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.setblocking(True)
        self._sock.settimeout(5.0)
        with contextlib.suppress(OSError):
            self._sock.send(b"S")
        deadline = time.monotonic() + 5.0
        with contextlib.suppress(OSError):
            while self._report is None and time.monotonic() < deadline:
                message = self._sock.recv(_MAX_MESSAGE)
                if not message:
                    break
                if message[:1] == b"R":
                    self._report = json.loads(message[1:])
        join_or_kill(self._process, 5.0)
        self._sock.close()
        if self._report is None:
            log.error("console video process gave no report (exit code %s)", self._process.exitcode)
