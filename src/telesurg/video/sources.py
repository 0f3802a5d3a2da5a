"""Frame sources behind one interface: `FrameSource.read() -> Frame`.

Sources never pace themselves: `read()` returns the next picture as fast as it can (a camera blocks
until its next frame), and the sender's driver paces capture at the configured rate. Each source
reports `nominal_fps` (what it is meant to deliver) so callers can say when the machine falls short.
Capture time comes from an injected clock (default `time.monotonic`) so tests can control it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import av
import numpy as np

from telesurg.video.frame import Frame

Clock = Callable[[], float]


@runtime_checkable
class FrameSource(Protocol):
    width: int
    height: int
    nominal_fps: float

    def read(self) -> Frame: ...
    def close(self) -> None: ...


class TestPatternSource:
    """A moving, textured synthetic scene (tissue-like low-frequency texture plus fine detail and a
    moving bright "instrument" bar) so the encoder does real work, unlike a flat or static pattern."""

    __test__ = False  # not a pytest class, despite the name

    def __init__(self, width: int = 1280, height: int = 720, fps: float = 60.0, *, seed: int = 0,
                 speed_px: int = 3, eye_offset_px: int = 0, clock: Clock = time.monotonic) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"width/height must be even for yuv420p, got {width}x{height}")
        self.width, self.height, self.nominal_fps = width, height, fps
        self._clock = clock
        self._speed = speed_px
        self._offset = eye_offset_px
        self._count = 0
        rng = np.random.default_rng(seed)
        self._texture = self._make_texture(rng, height, width * 2)

    @staticmethod
    def _make_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        """Planar yuv420p texture twice as wide as the picture; frames are moving windows into it."""
        y_idx, x_idx = np.mgrid[0:h, 0:w].astype(np.float32)
        coarse = rng.random((h // 32 + 2, w // 32 + 2)).astype(np.float32)
        smooth = np.kron(coarse, np.ones((32, 32), dtype=np.float32))[:h, :w]
        luma = 90 + 60 * smooth + 25 * np.sin(x_idx / 23.0) * np.cos(y_idx / 17.0)
        luma += rng.normal(0, 2.5, (h, w)).astype(np.float32)  # fine detail ("tissue grain")
        out = np.empty((h * 3 // 2, w), dtype=np.uint8)
        out[:h] = np.clip(luma, 16, 235)
        cu = np.full((h // 2, w // 2), 110, dtype=np.float32) + 10 * smooth[::2, ::2]
        cv = np.full((h // 2, w // 2), 165, dtype=np.float32) + 15 * smooth[1::2, 1::2]  # reddish
        quarter = (h // 2) * (w // 2)
        out[h:].reshape(-1)[:quarter] = np.clip(cu, 16, 240).reshape(-1)
        out[h:].reshape(-1)[quarter:] = np.clip(cv, 16, 240).reshape(-1)
        return out

    def read(self) -> Frame:
        h, w = self.height, self.width
        x0 = (self._count * self._speed + self._offset) % w
        x0 -= x0 % 2
        tex = self._texture
        image = np.empty((h * 3 // 2, w), dtype=np.uint8)
        image[:h] = tex[:h, x0 : x0 + w]
        tw = tex.shape[1]
        chroma = tex[h:].reshape(2, h // 2, tw // 2)[:, :, x0 // 2 : x0 // 2 + w // 2]
        image[h:].reshape(2, h // 2, w // 2)[:] = chroma
        bar = int((np.sin(self._count / 30.0) * 0.4 + 0.5) * (w - 40)) + self._offset // 4
        image[h // 3 : 2 * h // 3, max(0, bar) : max(0, bar) + 24] = 220  # moving instrument shaft
        frame = Frame(image, "yuv420p", self._clock(), self._count)
        self._count += 1
        return frame

    def close(self) -> None:
        pass


class LoopedClipSource:
    """A pre-rendered clip replayed in a loop: capture costs one memcpy, so benchmarks measure the
    pipeline, not the renderer. Frame numbers keep counting across loops."""

    def __init__(self, clip: Sequence[np.ndarray], fps: float = 60.0, pixel_format: str = "yuv420p", *,
                 clock: Clock = time.monotonic) -> None:
        if not clip:
            raise ValueError("clip: needs at least one frame")
        if pixel_format not in ("yuv420p", "rgb24"):
            raise ValueError(f"pixel_format: {pixel_format!r} must be 'yuv420p' or 'rgb24'")
        self._clip = [np.ascontiguousarray(c) for c in clip]
        self._format = pixel_format
        probe = Frame(self._clip[0], pixel_format, 0.0, 0)  # type: ignore[arg-type]
        self.width, self.height, self.nominal_fps = probe.width, probe.height, fps
        self._clock = clock
        self._count = 0

    @classmethod
    def record(cls, source: FrameSource, frames: int, **kwargs: Any) -> LoopedClipSource:
        """Render `frames` pictures from another source once, to replay them cheaply."""
        clip = [source.read() for _ in range(frames)]
        return cls([f.image for f in clip], kwargs.pop("fps", source.nominal_fps), clip[0].pixel_format,
                   **kwargs)

    def reference(self, frame_number: int) -> np.ndarray:
        """The source picture behind a frame number (before any frame code), for PSNR."""
        return self._clip[frame_number % len(self._clip)]

    def read(self) -> Frame:
        image = self._clip[self._count % len(self._clip)].copy()
        frame = Frame(image, self._format, self._clock(), self._count)  # type: ignore[arg-type]
        self._count += 1
        return frame

    def close(self) -> None:
        pass


class _PyAVSource:
    """Shared decoding for files and capture devices: any input FFmpeg can open, converted to yuv420p."""

    def __init__(self, url: str, *, input_format: str | None, options: dict[str, str], loop: bool,
                 width: int | None, height: int | None, clock: Clock) -> None:
        try:
            self._container = av.open(url, format=input_format, options=options)
        except (av.error.FFmpegError, OSError) as exc:
            raise ValueError(f"video source {url!r}: cannot open ({exc})") from exc
        if not self._container.streams.video:
            raise ValueError(f"video source {url!r}: has no video stream")
        stream = self._container.streams.video[0]
        self._url, self._loop, self._clock = url, loop, clock
        self.width = (width or stream.codec_context.width) // 2 * 2
        self.height = (height or stream.codec_context.height) // 2 * 2
        rate = stream.average_rate or stream.guessed_rate
        self.nominal_fps = float(rate) if rate else 30.0
        self._frames: Iterator[av.VideoFrame] = self._container.decode(video=0)
        self._count = 0

    def read(self) -> Frame:
        try:
            picture = next(self._frames)
        except StopIteration:
            if not self._loop:
                raise EOFError(f"video source {self._url!r}: end of stream") from None
            self._container.seek(0)
            self._frames = self._container.decode(video=0)
            picture = next(self._frames)
        image = picture.reformat(width=self.width, height=self.height, format="yuv420p").to_ndarray()
        frame = Frame(image, "yuv420p", self._clock(), self._count)
        self._count += 1
        return frame

    def close(self) -> None:
        self._container.close()


class FileSource(_PyAVSource):
    """Any video file FFmpeg can read, optionally looped and rescaled."""

    def __init__(self, path: str, *, loop: bool = True, width: int | None = None, height: int | None = None,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(path, input_format=None, options={}, loop=loop, width=width, height=height,
                         clock=clock)


class V4L2Source(_PyAVSource):
    """A V4L2 webcam or capture card (Linux), e.g. an endoscope tower's HDMI/SDI grabber."""

    def __init__(self, device: str = "/dev/video0", *, width: int = 1280, height: int = 720,
                 fps: float = 60.0, clock: Clock = time.monotonic) -> None:
        options = {"video_size": f"{width}x{height}", "framerate": f"{fps:g}"}
        super().__init__(device, input_format="v4l2", options=options, loop=False, width=width,
                         height=height, clock=clock)


class _StereoRender:
    """One render call feeds both eyes: whichever eye has already consumed the current pair renders
    the next one, so left and right always come from the same instant and share a frame number."""

    def __init__(self, renderer: Any, clock: Clock) -> None:
        self._renderer, self._clock = renderer, clock
        self._lock = threading.Lock()
        self._pair: tuple[Frame, Frame] | None = None
        self._consumed = [True, True]
        self._count = 0
        self._render_times: list[float] = []

    def take(self, eye: int) -> Frame:
        with self._lock:
            if self._pair is None or self._consumed[eye]:
                t0 = self._clock()
                left, right = self._renderer.render()
                t1 = self._clock()
                self._render_times = [*self._render_times[-59:], t1 - t0]
                # RGB as rendered: the encoder converts with libswscale on its own thread (GIL released)
                self._pair = (Frame(np.ascontiguousarray(left), "rgb24", t1, self._count),
                              Frame(np.ascontiguousarray(right), "rgb24", t1, self._count))
                self._count += 1
                self._consumed = [False, False]
            self._consumed[eye] = True
            return self._pair[eye]

    @property
    def achievable_fps(self) -> float:
        if not self._render_times:
            return 0.0
        return 1.0 / max(1e-6, float(np.median(self._render_times)))


class SimEndoscopeEye:
    """One eye of the simulated stereo endoscope (robot/render.py `StereoRenderer`)."""

    def __init__(self, shared: _StereoRender, eye: int, width: int, height: int, fps: float) -> None:
        self._shared, self._eye = shared, eye
        self.width, self.height, self.nominal_fps = width, height, fps

    @property
    def achievable_fps(self) -> float:
        """Render rate this machine actually reaches (median of recent renders); 0 before the first."""
        return self._shared.achievable_fps

    def read(self) -> Frame:
        return self._shared.take(self._eye)

    def close(self) -> None:
        close = getattr(self._shared._renderer, "close", None)
        if close is not None and self._eye == 0:
            close()


def sim_endoscope(renderer: Any, width: int, height: int, fps: float = 30.0, *,
                  clock: Clock = time.monotonic) -> tuple[SimEndoscopeEye, SimEndoscopeEye]:
    """(left, right) sources over a renderer whose `render()` returns (left, right) RGB uint8 arrays.

    MuJoCo renders on the CPU here (about 15 fps for one 1280x720 camera): render small and/or at a
    lower rate; `achievable_fps` tells the caller what it really gets.
    """
    shared = _StereoRender(renderer, clock)
    return (SimEndoscopeEye(shared, 0, width, height, fps), SimEndoscopeEye(shared, 1, width, height, fps))
