"""Frame sources: test pattern, looped clip, video file (PyAV), simulated stereo endoscope (real MuJoCo),
and the sim endoscope through real H.264 with frame codes checked."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

from telesurg.video import framecode
from telesurg.video.codec import EncoderConfig, VideoDecoder, VideoEncoder
from telesurg.video.frame import Frame, rgb_to_luma, rgb_to_yuv420p
from telesurg.video.pipeline import VideoReceiver, VideoSender
from telesurg.video.sources import (
    FileSource,
    FrameSource,
    LoopedClipSource,
    TestPatternSource,
    V4L2Source,
    sim_endoscope,
)


def test_test_pattern_moves_and_is_textured() -> None:
    t = [0.0]
    src = TestPatternSource(320, 180, 30, clock=lambda: t[0])
    assert isinstance(src, FrameSource)
    a = src.read()
    t[0] = 0.5
    b = src.read()
    assert (a.frame_number, b.frame_number) == (0, 1) and (a.capture_time, b.capture_time) == (0.0, 0.5)
    assert a.image.shape == (270, 320) and a.pixel_format == "yuv420p" and (a.width, a.height) == (320, 180)
    assert not np.array_equal(a.luma(), b.luma())  # it moves
    assert a.luma().std() > 15  # it has texture for the encoder to work on


def test_looped_clip_counts_on_and_copies() -> None:
    clip = LoopedClipSource.record(TestPatternSource(64, 64, 30), 3, fps=60)
    frames = [clip.read() for _ in range(7)]
    assert [f.frame_number for f in frames] == list(range(7)) and clip.nominal_fps == 60
    assert np.array_equal(frames[0].image, frames[3].image)
    frames[0].image[:] = 0  # stamping a frame must not damage the clip
    assert np.array_equal(clip.reference(3), frames[3].image) and clip.reference(0).any()
    with pytest.raises(ValueError, match="clip"):
        LoopedClipSource([])


def test_file_source_reads_a_video_file_and_loops(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        src = TestPatternSource(160, 96, 30)
        for _ in range(10):
            f = src.read()
            framecode.stamp_yuv420p(f.image, f.frame_number)
            vf = av.VideoFrame.from_ndarray(f.image, format="yuv420p")
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))
    source = FileSource(str(path))
    assert (source.width, source.height) == (160, 96) and source.nominal_fps == pytest.approx(30)
    codes = [framecode.read_luma(source.read().luma()) for _ in range(15)]
    assert codes == [*range(10), *range(5)]  # in order, then looped back to the start
    source.close()
    once = FileSource(str(path), loop=False, width=80, height=64)
    assert once.read().image.shape == (96, 80)
    for _ in range(9):
        once.read()
    with pytest.raises(EOFError):
        once.read()


def test_missing_file_and_device_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot open"):
        FileSource(str(tmp_path / "nope.mp4"))
    with pytest.raises(ValueError, match="/dev/video-telesurg-none"):
        V4L2Source("/dev/video-telesurg-none")


def test_rgb_conversions_match_libswscale() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    ours = rgb_to_yuv420p(rgb)
    ref = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
    assert np.abs(ours.astype(int) - ref.astype(int)).mean() < 2.0
    assert np.abs(rgb_to_luma(rgb).astype(int) - ref[:64].astype(int)).max() <= 2


@pytest.mark.skipif(os.environ.get("MUJOCO_GL") != "osmesa", reason="needs MUJOCO_GL=osmesa (set by the Makefile)")
def test_sim_endoscope_stereo_through_h264() -> None:
    from telesurg.robot.render import StereoRenderer
    from telesurg.robot.sim import SimDriver

    renderer = StereoRenderer(SimDriver(), width=320, height=180)
    try:
        left, right = sim_endoscope(renderer, 320, 180, fps=30)
        frames = []
        for _ in range(3):
            lf, rf = left.read(), right.read()
            assert lf.frame_number == rf.frame_number and lf.capture_time == rf.capture_time
            frames.append((lf, rf))
        assert [f.frame_number for f, _ in frames] == [0, 1, 2]
        assert not np.array_equal(frames[0][0].image, frames[0][1].image)  # two cameras, two views
        assert left.achievable_fps > 0  # the source says what rate this machine reaches
        shown: list[int] = []
        payloads: list[bytes] = []
        cfg = EncoderConfig(width=320, height=180, fps=30, bitrate_kbps=1500)
        sender = VideoSender([left, right], cfg, payloads.append)
        receiver = VideoReceiver(lambda d: shown.append(d.frame_code() or -1), lambda e: None, fps=30)
        for i in range(5):
            sender.step(i / 30)
            for p in payloads:
                receiver.receive(p, i / 30)
            payloads.clear()
        assert sorted(shown) == sorted([n for n in range(3, 8) for _ in (0, 1)])  # both eyes, codes intact
        assert receiver.metrics.report()["code_mismatches"] == 0
    finally:
        renderer.close()


def test_rgb_frames_encode_with_frame_code() -> None:
    rgb = np.full((180, 320, 3), 90, dtype=np.uint8)
    framecode.stamp_rgb(rgb, 4321)
    enc, dec = VideoEncoder(EncoderConfig(width=320, height=180, fps=30)), VideoDecoder()
    out = [dec.decode(e) for e in enc.encode(Frame(rgb, "rgb24", 0.0, 4321))]
    assert out and out[0] is not None and out[0].frame_code() == 4321
