"""The robot site's stereo endoscope stream, rendered and encoded in a process of its own.

MuJoCo's CPU renderer (osmesa) takes tens of milliseconds per picture and holds the GIL while it
works; in the servo process that would stall the 1 kHz loop past its 50 ms watchdog. So a child
process keeps its own copy of the scene, receives the cart's joint positions through shared memory
(written by the servo thread with the telemetry, 100 Hz), renders both eyes, stamps, encodes and
packetizes them (video/), and hands finished payloads back through a pipe. The parent only forwards
payloads to the link's VIDEO class and keyframe requests to the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import struct
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from telesurg.child_process import join_or_kill
from telesurg.interop.shared_picture import SharedPicture
from telesurg.link.driver import LinkEndpoint
from telesurg.link.events import MessageClass
from telesurg.realtime import GIL_SHARER_PRIORITY, request_realtime, unpin
from telesurg.site_config import VideoConfig
from telesurg.tap import Tap, Topic
from telesurg.video.control import is_video_control  # light (no codec): imported here, not on the hot path

log = logging.getLogger("telesurg.robot.video")
_LEN = struct.Struct("!I")
_STOP = b"stop"
VIDEO_NICENESS = 19  # the lowest share: pictures slow down before commands do


def _pack(payloads: list[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(p)) + p for p in payloads)


def _unpack(blob: bytes) -> list[bytes]:
    out, offset = [], 0
    while offset < len(blob):
        (n,) = _LEN.unpack_from(blob, offset)
        offset += _LEN.size
        out.append(blob[offset:offset + n])
        offset += n
    return out


def _worker(conn: Connection, shm_name: str, nq: int, config: dict[str, Any], seed: int,
            picture_name: str | None = None) -> None:
    """Child process: render the endoscope at the configured rate from the parent's joint positions.

    It runs at a lower CPU priority: when the machine is short of cycles the picture rate drops,
    never the servo loop or the link (video is the first thing to give way, DESIGN.md section 2)."""
    import os

    # one rasteriser thread: on a busy 2-core machine llvmpipe's worker threads wait on each other
    # (a picture is as late as its most-delayed thread); single-threaded it is as fast here and steadier
    os.environ.setdefault("LP_NUM_THREADS", "1")
    import mujoco

    os.nice(VIDEO_NICENESS)
    unpin()  # any CPU's spare cycles, even when the robot site is pinned (the demo's CPU split)

    from telesurg.robot.render import StereoRenderer
    from telesurg.robot.sim import SimDriver
    from telesurg.video.codec import EncoderConfig
    from telesurg.video.pipeline import VideoSender
    from telesurg.video.sources import TestPatternSource, sim_endoscope

    video = VideoConfig(**config)
    shm = SharedMemory(name=shm_name)
    qpos = np.ndarray((nq,), dtype=np.float64, buffer=shm.buf)
    driver = SimDriver(seed=seed)
    renderer = None
    if video.source == "test-pattern":  # the transport and codec path without the renderer's CPU cost
        eyes: Any = [TestPatternSource(video.width, video.height, video.fps, seed=seed, eye_offset_px=offset)
                     for offset in (0, 6)]
    else:
        renderer = StereoRenderer(driver, video.width, video.height)
        eyes = sim_endoscope(renderer, video.width, video.height, video.fps)
    outbox: list[bytes] = []
    picture = SharedPicture.attach(picture_name) if picture_name else None  # OpenIGTLink thumbnail

    def flush() -> None:
        conn.send_bytes(_pack(outbox))
        outbox.clear()

    encoder = EncoderConfig(width=video.width, height=video.height, fps=video.fps, bitrate_kbps=video.bitrate_kbps)
    sender = VideoSender(list(eyes), encoder, outbox.append, flush_fn=flush)
    period = 1.0 / video.fps
    due = time.monotonic()
    try:
        while True:
            while conn.poll():
                message = conn.recv_bytes()
                if message == _STOP:
                    return
                sender.handle_event(message, time.monotonic())
            if renderer is not None:
                driver.data.qpos[:] = qpos  # a torn read only misplaces a picture, never a motion
                mujoco.mj_forward(driver.model, driver.data)
            frames = sender.capture()
            if picture is not None:  # the left eye, decimated, for the OpenIGTLink server (interop/igtl.py)
                picture.write(frames[0].image[: frames[0].height], frames[0].capture_time)
            sender.process(frames, time.monotonic())
            due += period
            wait = due - time.monotonic()
            if wait > 0:
                conn.poll(wait)
            else:
                due = time.monotonic()  # behind: render at whatever rate the machine allows
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return
    finally:
        sender.close()
        if renderer is not None:
            renderer.close()
        shm.close()
        if picture is not None:
            picture.close()


class RobotVideo:
    """Parent-side handle: shared joint positions out, encoded payloads in, keyframe requests through."""

    def __init__(self, sim: Any, config: VideoConfig, endpoint: LinkEndpoint, loop: asyncio.AbstractEventLoop,
                 *, seed: int = 0, tap: Tap | None = None, picture: SharedPicture | None = None) -> None:
        self._sim = sim
        self._tap = tap  # the encoded payloads are published there (recording, broadcast), off the link thread
        self._endpoint = endpoint
        self._loop = loop
        nq = int(sim.model.nq)
        self._shm = SharedMemory(create=True, size=8 * nq)
        self._qpos = np.ndarray((nq,), dtype=np.float64, buffer=self._shm.buf)
        self._qpos[:] = sim.data.qpos
        context = mp.get_context("spawn")  # a clean interpreter: no inherited threads or GL state
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_worker, name="telesurg-video",
                                        args=(child, self._shm.name, nq, config.model_dump(), seed,
                                              picture.name if picture is not None else None), daemon=True)
        self._reader = threading.Thread(target=self._read, name="video-pipe", daemon=True)
        self.payloads = 0
        self.bytes = 0
        self.keyframe_requests = 0
        self._closing = False

    def start(self) -> None:
        self._process.start()
        self._reader.start()

    def publish_state(self) -> None:
        """Called on the servo thread (with telemetry): copy the cart's joint positions for the renderer."""
        self._qpos[:] = self._sim.data.qpos

    def handle_event(self, payload: bytes) -> bool:
        """Forward a keyframe request (video control payload) to the encoder process."""
        if not is_video_control(payload):
            return False
        self.keyframe_requests += 1
        with contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send_bytes(payload)
        return True

    def _read(self) -> None:
        request_realtime(GIL_SHARER_PRIORITY)  # it shares the GIL with the servo loop: see realtime.py
        try:
            while True:
                batch = _unpack(self._conn.recv_bytes())
                if self._tap is not None and self._tap.active:
                    self._tap.publish(Topic.VIDEO, time.monotonic(), tuple(batch))
                if not self._loop.is_closed():
                    self._loop.call_soon_threadsafe(self._send, batch)
        except (EOFError, OSError):
            if not self._closing:  # the operation goes on without a picture, but nobody may miss it
                self._process.join(1.0)
                log.error("endoscope video process stopped (exit code %s): no more video is sent; "
                          "its traceback is above", self._process.exitcode)

    def _send(self, batch: list[bytes]) -> None:
        if not self._endpoint.established:
            return
        for payload in batch:
            self._endpoint.send(MessageClass.VIDEO, payload)
            self.payloads += 1
            self.bytes += len(payload)

    def report(self) -> dict[str, Any]:
        return {"payloads": self.payloads, "bytes": self.bytes, "keyframe_requests": self.keyframe_requests,
                "process_alive": self._process.is_alive()}

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send_bytes(_STOP)
        join_or_kill(self._process, 5.0)
        self._conn.close()
        self._shm.close()
        self._shm.unlink()
