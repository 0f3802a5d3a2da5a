"""Low-latency H.264/HEVC encode and decode with PyAV (libx264 / libx265 in the wheel).

Settings and why:
- `tune=zerolatency`: no lookahead, no frame threading, one packet out per frame in.
- no B-frames: they would hold a frame back for reordering.
- VBV buffer of about one frame (`vbv-bufsize = bitrate / fps`): every frame, keyframes included, fits in
  one frame interval at the link rate, so no keyframe burst stalls the link behind it.
- periodic intra refresh by default (a moving column of intra blocks instead of big I-frames): recovery
  from loss without bursts; a keyframe can still be forced on request (`KeyframeRequest`).
- decoder runs single-threaded or slice-threaded: frame threading would add a frame of delay per thread.
- `psy=0` (x264): psychovisual tuning costs ultrafast encode time and PSNR for no gain at these rates.
- optional capped CRF (`crf`): constant quality under the same VBV cap, so easy scenes cost fewer bits
  (and less encode, packet and decode work) while hard ones are bounded exactly as with CBR.
- input pixels are handed to libavcodec without a copy (see `VideoEncoder._to_video_frame`).

Measured on the 2-vCPU dev VM (bench/video_pipeline.py, 720p60 stereo, 10 s runs): settings tried and
not kept are listed with their figures in the bench's docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av
import numpy as np
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from telesurg.video import framecode
from telesurg.video.frame import Frame

Codec = Literal["h264", "hevc"]
_ENCODERS = {"h264": "libx264", "hevc": "libx265"}
_DECODERS = {"h264": "h264", "hevc": "hevc"}


class EncoderConfig(BaseModel):
    """Encoder settings for one eye's stream. Defaults: 1280x720 at 60 fps, 5 Mbit/s per eye."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    codec: Codec = "h264"
    width: int = Field(1280, ge=64, le=7680, multiple_of=2)
    height: int = Field(720, ge=64, le=4320, multiple_of=2)
    fps: float = Field(60.0, gt=0, le=240)
    bitrate_kbps: int = Field(5000, ge=50, le=200_000, description="rate (CBR), or the cap when `crf` is set")
    crf: float | None = Field(None, ge=0, le=51, description="constant quality under the bitrate_kbps VBV cap; "
                              "None: constant bitrate")
    preset: Literal["ultrafast", "superfast", "veryfast"] = "ultrafast"
    threads: int = Field(1, ge=1, le=16, description="encoder threads; 1 measured best for stereo on 2 cores")
    intra_refresh: bool = True
    gop_frames: int = Field(60, ge=1, le=1000, description="intra-refresh period, or keyframe interval")
    vbv_frames: float = Field(1.0, gt=0, le=30, description="VBV buffer size in frame intervals")
    extra_params: str = Field("", description="more x264/x265 params, 'key=value:key=value' (tuning only)")

    @model_validator(mode="after")
    def _check_hevc(self) -> EncoderConfig:
        if self.codec == "hevc" and (self.width % 8 or self.height % 8):
            raise ValueError("width/height: HEVC needs multiples of 8; use e.g. 1280x720 or 1920x1080")
        return self

    @property
    def vbv_bufsize_kbit(self) -> int:
        return max(1, round(self.bitrate_kbps * self.vbv_frames / self.fps))


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One access unit (Annex B bytes) of one stream, with the metadata the packetizer carries."""

    stream: int
    frame_number: int
    capture_time: float
    keyframe: bool
    data: bytes


def _codec_options(cfg: EncoderConfig) -> dict[str, str]:
    params = [
        "bframes=0",
        f"keyint={cfg.gop_frames}",
        f"vbv-maxrate={cfg.bitrate_kbps}",
        f"vbv-bufsize={cfg.vbv_bufsize_kbit}",
    ]
    if cfg.intra_refresh:
        params.append("intra-refresh=1")
    if cfg.crf is not None:  # capped CRF: the same 1-frame VBV bounds every frame, easy scenes cost fewer bits
        params.append(f"crf={cfg.crf:g}")
    extra = [p for p in cfg.extra_params.split(":") if p]
    if cfg.codec == "h264":
        # psy=0, measured at 720p60 stereo (bench/video_pipeline.py, 3 interleaved runs each): encode
        # p50 6.4-6.8 -> 5.6-5.7 ms, capture->decoded p50 10.2-11.0 -> 9.4-9.7 ms, p99 20-27 -> 16-19 ms,
        # PSNR 40.5 -> 41.3 dB at the same bitrate (single-eye encode CPU time 5.5 -> 4.6-4.8 ms).
        params += ["psy=0", "scenecut=0", "repeat-headers=1", "annexb=1", *extra]
        return {"preset": cfg.preset, "tune": "zerolatency", "x264-params": ":".join(params)}
    params += ["scenecut=0", "repeat-headers=1", "annexb=1", "log-level=error", "rc-lookahead=0", *extra]
    return {"preset": cfg.preset, "tune": "zerolatency", "x265-params": ":".join(params)}


class VideoEncoder:
    """Encode `Frame`s of one stream into `EncodedFrame`s, one per input frame, no reordering."""

    def __init__(self, config: EncoderConfig, stream: int = 0) -> None:
        self.config = config
        self.stream = stream
        ctx = av.CodecContext.create(_ENCODERS[config.codec], "w")
        ctx.width, ctx.height = config.width, config.height
        ctx.pix_fmt = "yuv420p"
        rate = Fraction(config.fps).limit_denominator(1001)
        ctx.time_base = 1 / rate
        ctx.framerate = rate
        ctx.bit_rate = config.bitrate_kbps * 1000
        ctx.thread_count = config.threads
        ctx.options = _codec_options(config)
        ctx.open()
        self._ctx = ctx
        self._reformatter = VideoReformatter()
        self._pending: dict[int, Frame] = {}
        self._pts = 0
        self.keyframes_forced = 0

    def encode(self, frame: Frame, force_keyframe: bool = False) -> list[EncodedFrame]:
        if (frame.width, frame.height) != (self.config.width, self.config.height):
            raise ValueError(f"frame is {frame.width}x{frame.height}, encoder expects "
                             f"{self.config.width}x{self.config.height}")
        vf = self._to_video_frame(frame)
        vf.pts = self._pts
        if force_keyframe:
            vf.pict_type = PictureType.I
            self.keyframes_forced += 1
        self._pending[self._pts] = frame
        self._pts += 1
        return self._collect(self._ctx.encode(vf))

    def _to_video_frame(self, frame: Frame) -> av.VideoFrame:
        """Wrap the frame's pixels for libavcodec without copying them (the encoder copies the picture into
        its own buffers inside `encode`, so the array is never read afterwards). `from_ndarray` copies
        row by row with the GIL held: measured 0.36 ms per 720p yuv420p frame against 0.005 ms, and for
        RGB 5.5 ms before the colour conversion even starts.
        RGB goes through one libswscale context kept for the stream (a fresh one per frame costs ~1 ms
        to set up; 720p RGB -> yuv420p measured 8.4 ms before, 2.7 ms now) on as many threads as the
        encoder: with both eyes converting at once, 1 or 2 sws threads both measured 2.8-2.9 ms per eye."""
        image = frame.image if frame.image.flags.c_contiguous else np.ascontiguousarray(frame.image)
        if frame.pixel_format == "yuv420p":
            return av.VideoFrame.from_numpy_buffer(image, format="yuv420p")
        return self._reformatter.reformat(av.VideoFrame.from_numpy_buffer(image, format="rgb24"),
                                          format="yuv420p", threads=self.config.threads)

    def flush(self) -> list[EncodedFrame]:
        return self._collect(self._ctx.encode(None))

    def _collect(self, packets: list[av.Packet]) -> list[EncodedFrame]:
        out = []
        for packet in packets:
            source = self._pending.pop(int(packet.pts), None)
            if source is None:
                continue
            data = bytes(packet)
            out.append(EncodedFrame(self.stream, source.frame_number, source.capture_time,
                                    is_idr(data, self.config.codec), data))
        return out


def _nal_types(data: bytes, codec: Codec) -> list[int]:
    types = []
    pos = data.find(b"\x00\x00\x01")
    while pos != -1 and pos + 3 < len(data):
        header = data[pos + 3]
        types.append(header & 0x1F if codec == "h264" else (header >> 1) & 0x3F)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return types


def is_idr(data: bytes, codec: Codec) -> bool:
    """True if this access unit is an instantaneous decoder refresh (decodable with no history).

    Not `packet.is_keyframe`: with intra refresh x264 also flags the start of each refresh wave
    (a recovery point, still predicted from earlier frames), which is no place to restart after loss.
    """
    idr = {5} if codec == "h264" else {19, 20}  # H.264 IDR slice; HEVC IDR_W_RADL, IDR_N_LP
    return any(t in idr for t in _nal_types(data, codec))


@dataclass(slots=True)
class DecodedFrame:
    """A decoded picture with the sender's metadata; pixels stay in the PyAV frame until asked for."""

    stream: int
    frame_number: int
    capture_time: float
    keyframe: bool
    picture: av.VideoFrame

    def luma(self) -> np.ndarray:
        """The Y plane as an (H, W) uint8 array (copied out of the decoder's padded buffer)."""
        plane = self.picture.planes[0]
        h, w = self.picture.height, self.picture.width
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)
        return rows[:h, :w].copy()

    def frame_code(self) -> int | None:
        """The frame number drawn in the picture (see framecode.py), read from the top rows only."""
        plane = self.picture.planes[0]
        h, w = self.picture.height, self.picture.width
        try:
            rows_needed = framecode.strip_height(w, h)
        except ValueError:
            return None
        rows = np.frombuffer(plane, dtype=np.uint8, count=rows_needed * plane.line_size)
        return framecode.read_strip(rows.reshape(rows_needed, plane.line_size), w, h)

    def rgb(self, reformatter: VideoReformatter | None = None) -> np.ndarray:
        """The picture as an (H, W, 3) RGB array. Give the stream's own `VideoReformatter` (used by one
        thread at a time) when converting every frame: without one, PyAV sets up a fresh libswscale
        context for each frame (see `VideoEncoder._to_video_frame` for what that costs)."""
        if reformatter is None:
            return self.picture.to_ndarray(format="rgb24")
        return reformatter.reformat(self.picture, format="rgb24").to_ndarray()


class VideoDecoder:
    """Decode one stream's access units; corrupt input is counted and yields nothing, never raises."""

    def __init__(self, codec: Codec = "h264", threads: int = 1) -> None:
        ctx = av.CodecContext.create(_DECODERS[codec], "r")
        ctx.thread_count = threads
        ctx.thread_type = "SLICE"
        ctx.flags |= av.codec.context.Flags.low_delay
        ctx.open()
        self._ctx = ctx
        self.errors = 0

    def decode(self, encoded: EncodedFrame) -> DecodedFrame | None:
        try:
            pictures = self._ctx.decode(av.Packet(encoded.data))
        except (av.error.FFmpegError, ValueError):
            self.errors += 1
            return None
        if not pictures:
            return None
        return DecodedFrame(encoded.stream, encoded.frame_number, encoded.capture_time, encoded.keyframe,
                            pictures[-1])
