"""Encoder input handling and rate control: what the caller can rely on, whatever the tuning."""

from __future__ import annotations

import numpy as np

from telesurg.video import framecode
from telesurg.video.codec import EncoderConfig, VideoDecoder, VideoEncoder
from telesurg.video.frame import Frame
from telesurg.video.sources import TestPatternSource

W, H = 320, 176


def _decode_codes(encoder: VideoEncoder, frames: list[Frame]) -> list[int | None]:
    decoder = VideoDecoder()
    codes = []
    for frame in frames:
        for encoded in encoder.encode(frame):
            decoded = decoder.decode(encoded)
            codes.append(None if decoded is None else decoded.frame_code())
    return codes


def test_encoder_is_done_with_the_callers_pixels_when_encode_returns() -> None:
    """The encoder reads the caller's array without copying it first; overwriting the array right after
    `encode` (as a capture ring buffer would) must not change what was encoded."""
    src = TestPatternSource(W, H, 30)
    shared = src.read().image
    encoder = VideoEncoder(EncoderConfig(width=W, height=H, fps=30, bitrate_kbps=1500))
    decoder = VideoDecoder()
    for number in range(10):
        shared[:] = src.read().image
        framecode.stamp_yuv420p(shared, number)
        encoded = encoder.encode(Frame(shared, "yuv420p", 0.0, number))
        shared[:] = 0  # the "camera" reuses its buffer at once
        decoded = [decoder.decode(e) for e in encoded]
        assert decoded and decoded[0] is not None and decoded[0].frame_code() == number


def test_non_contiguous_pictures_encode_like_their_copies() -> None:
    src = TestPatternSource(W, H, 30)
    frames, copies = [], []
    for number in range(5):
        image = src.read().image
        framecode.stamp_yuv420p(image, number)
        wide = np.zeros((H * 3 // 2, W + 64), dtype=np.uint8)  # e.g. a capture buffer with row padding
        wide[:, :W] = image
        frames.append(Frame(wide[:, :W], "yuv420p", 0.0, number))
        copies.append(Frame(image, "yuv420p", 0.0, number))
    assert not frames[0].image.flags.c_contiguous
    cfg = EncoderConfig(width=W, height=H, fps=30, bitrate_kbps=1500)
    a, b = VideoEncoder(cfg), VideoEncoder(cfg)
    assert [e.data for f in frames for e in a.encode(f)] == [e.data for f in copies for e in b.encode(f)]

    rgb = np.full((H, W + 32, 3), 90, dtype=np.uint8)
    framecode.stamp_rgb(rgb[:, :W], 77)
    view = rgb[:, :W]  # a renderer's padded buffer
    assert not view.flags.c_contiguous
    codes = _decode_codes(VideoEncoder(cfg), [Frame(view, "rgb24", 0.0, 77)])
    assert codes == [77]


def test_capped_crf_spends_less_on_easy_scenes_and_keeps_the_cap_on_hard_ones() -> None:
    """`crf` gives constant quality: a slow scene costs a fraction of the CBR rate, while noise (which
    would take any number of bits) stays within the same one-frame VBV as CBR."""
    sizes = {}
    for crf in (None, 28.0):
        src = TestPatternSource(W, H, 30)
        enc = VideoEncoder(EncoderConfig(width=W, height=H, fps=30, bitrate_kbps=3000, crf=crf))
        sizes[crf] = sum(len(e.data) for _ in range(40) for e in enc.encode(src.read()))
    assert sizes[28.0] < sizes[None] / 3

    rng = np.random.default_rng(1)
    cfg = EncoderConfig(width=W, height=H, fps=30, bitrate_kbps=800, crf=5)
    enc = VideoEncoder(cfg)
    noise = [len(e.data) for i in range(30)
             for e in enc.encode(Frame(rng.integers(0, 256, (H * 3 // 2, W), dtype=np.uint8), "yuv420p", 0.0, i))]
    assert max(noise[1:]) <= cfg.vbv_bufsize_kbit * 125 * 1.1  # bytes; the first (IDR) may start the buffer


def test_rgb_through_a_kept_reformatter_matches_a_fresh_conversion_frame_after_frame() -> None:
    """The display converts every frame through one colour-conversion context per eye; each picture must
    come out as a fresh per-frame conversion gives it, moving content and frame codes included."""
    from av.video.reformatter import VideoReformatter

    src = TestPatternSource(W, H, 30)
    encoder = VideoEncoder(EncoderConfig(width=W, height=H, fps=30, bitrate_kbps=1500))
    decoder = VideoDecoder()
    kept = VideoReformatter()
    compared = 0
    for number in range(8):
        image = src.read().image
        framecode.stamp_yuv420p(image, number)
        for encoded in encoder.encode(Frame(image, "yuv420p", 0.0, number)):
            decoded = decoder.decode(encoded)
            assert decoded is not None
            through_kept = decoded.rgb(kept)
            assert through_kept.shape == (H, W, 3) and through_kept.dtype == np.uint8
            np.testing.assert_array_equal(through_kept, decoded.rgb())
            compared += 1
    assert compared == 8
