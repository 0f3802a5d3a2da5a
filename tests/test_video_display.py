"""Display layouts (pure numpy) and the pygame window (headless, SDL_VIDEODRIVER=dummy)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from telesurg.video.display import LatestFrames, StereoDisplay, compose, overlay_lines
from telesurg.video.metrics import VideoMetrics


def _eyes() -> tuple[np.ndarray, np.ndarray]:
    left = np.zeros((90, 160, 3), dtype=np.uint8)
    right = np.zeros((90, 160, 3), dtype=np.uint8)
    left[..., 0] = 200  # left eye red-ish
    right[..., 2] = 100  # right eye blue-ish
    right[..., 1] = 50
    return left, right


def test_side_by_side_and_top_bottom_pack_each_eye_in_its_half() -> None:
    left, right = _eyes()
    sbs = compose(left, right, "side_by_side")
    assert sbs.shape == left.shape
    assert (sbs[:, :80] == left[:, :80]).all() and (sbs[:, 80:] == right[:, :80]).all()
    tb = compose(left, right, "top_bottom")
    assert tb.shape == left.shape
    assert (tb[:45] == left[:45]).all() and (tb[45:] == right[:45]).all()


def test_anaglyph_takes_red_from_left_and_cyan_from_right() -> None:
    left, right = _eyes()
    ana = compose(left, right, "anaglyph")
    assert (ana[..., 0] == 200).all() and (ana[..., 1] == 50).all() and (ana[..., 2] == 100).all()


def test_mono_and_bad_mode() -> None:
    left, right = _eyes()
    assert compose(left, None, "side_by_side") is left
    assert compose(left, right, "right") is right
    with pytest.raises(ValueError, match="display mode"):
        compose(left, right, "hologram")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="differ"):
        compose(left, right[:10], "anaglyph")


def test_window_shows_the_picture_and_an_overlay() -> None:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    left, right = _eyes()
    display = StereoDisplay(320, 180, mode="side_by_side")
    try:
        display.show(left, right)
        plain = display.pixels()
        assert plain.shape == (180, 320, 3)
        assert plain[10, 10, 0] == 200 and plain[10, 10, 2] == 0  # scaled left half
        assert plain[10, 300, 2] == 100 and plain[10, 300, 0] == 0  # scaled right half
        metrics = VideoMetrics()
        metrics.on_displayed(0, 1, 0.0, 0.008)
        lines = overlay_lines(metrics.report(), link_state="a UP 105 ms | b UP 165 ms")
        assert lines[0].startswith("link a UP") and "p50 8.0 ms" in lines[1]
        display.show(left, right, lines)
        with_text = display.pixels()
        changed = np.any(with_text != plain, axis=2)
        assert changed[90:].any() and not changed[:40].any()  # text drawn at the bottom, picture intact
        display.mode = "anaglyph"
        display.show(left, right)
        assert display.pixels()[10, 300, 0] == 200  # both eyes mixed everywhere
        assert display.poll() == [] and display.frames_shown == 3
    finally:
        display.close()


def test_latest_frames_keeps_only_the_newest_per_eye() -> None:
    class Pic:
        def __init__(self, stream: int, n: int) -> None:
            self.stream, self.frame_number = stream, n

    latest = LatestFrames()
    assert latest.take() is None
    latest.put(Pic(0, 1))
    latest.put(Pic(0, 2))  # the display did not look in between: frame 1 is skipped, not queued
    latest.put(Pic(1, 2))
    got = latest.take()
    assert got is not None and [p.frame_number for p in got] == [2, 2]
    assert latest.take() is None and latest.replaced_unseen == 1
