"""The predictive overlay in the console's endoscope window: the tool-position message, the drawing the
display process does with it, the `o` toggle, and a real display child fed real H.264 and markers."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

from telesurg.apps.console_video import ConsoleVideo, with_tools
from telesurg.console.overlay import COMMANDED_RGB, MEASURED_RGB, endoscope_home_pose, stereo_cameras
from telesurg.console.overlay_feed import ToolMarkers, ToolOverlayPainter
from telesurg.messages import ArmId, ArmTelemetry, ServoCommand, Telemetry
from telesurg.robot.scene import default_board
from telesurg.site_config import VideoConfig
from telesurg.video.codec import EncoderConfig
from telesurg.video.display import StereoDisplay
from telesurg.video.pipeline import VideoSender
from telesurg.video.sources import TestPatternSource

WIDTH, HEIGHT = 640, 360
PEG = default_board().peg_top(2)  # mid-picture in both eyes at the endoscope's home pose


def test_markers_round_trip_with_and_without_the_endoscope_pose():
    markers = ToolMarkers({0: (0.01, -0.02, 0.03), 1: (-0.04, 0.005, 0.021)}, {0: (0.011, -0.019, 0.029)})
    assert ToolMarkers.decode(markers.encode()) == markers
    posed = ToolMarkers({1: (0.0, 0.0, 0.05)}, {}, ((0.0, -0.1, 0.2), (0.5, 0.5, -0.5, 0.5)))
    assert ToolMarkers.decode(posed.encode()) == posed
    assert ToolMarkers.decode(ToolMarkers().encode()) == ToolMarkers()


def test_malformed_markers_raise_a_clear_error_and_the_painter_counts_them():
    data = ToolMarkers({0: (0.01, 0.02, 0.03)}, {0: (0.0, 0.0, 0.0)}).encode()
    with pytest.raises(ValueError, match="expected 53 for 1 commanded"):
        ToolMarkers.decode(data[:-1])
    with pytest.raises(ValueError, match="header"):
        ToolMarkers.decode(b"\x01")
    with pytest.raises(ValueError, match="byte 2"):
        ToolMarkers.decode(b"\x00\x00\x07")
    painter = ToolOverlayPainter(WIDTH, HEIGHT)
    painter.receive(data[:-3])
    assert painter.malformed == 1 and painter.markers is None
    painter.receive(data)
    assert painter.markers == ToolMarkers.decode(data)


def test_markers_from_the_console_messages_take_the_endoscope_from_telemetry():
    commands = [ServoCommand(ArmId.PSM1, 7, 1.0, (0.01, 0.02, 0.03), (1.0, 0.0, 0.0, 0.0), 0.0),
                ServoCommand(ArmId.PSM2, 7, 1.0, (-0.01, 0.0, 0.04), (1.0, 0.0, 0.0, 0.0), 0.0)]
    telemetry = Telemetry(2.0, 0, (ArmTelemetry(ArmId.PSM1, 0, 0, 5, (0.0, 0.02, 0.03), (1.0, 0, 0, 0), 0.0),
                                   ArmTelemetry(ArmId.ECM, 0, 0, 0, (0.0, -0.1, 0.2), (0.0, 1.0, 0, 0), 0.0)))
    markers = ToolMarkers.from_messages(commands, telemetry)
    assert markers.commanded == {ArmId.PSM1: (0.01, 0.02, 0.03), ArmId.PSM2: (-0.01, 0.0, 0.04)}
    assert markers.measured == {ArmId.PSM1: (0.0, 0.02, 0.03)}
    assert markers.endoscope == ((0.0, -0.1, 0.2), (0.0, 1.0, 0, 0))
    assert ToolMarkers.from_messages([], None) == ToolMarkers()


def test_painter_draws_commanded_cross_and_measured_ring_where_the_tools_project():
    painter = ToolOverlayPainter(WIDTH, HEIGHT)
    left = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
    right = left.copy()
    assert painter.paint(left, right) == (left, right)  # nothing received yet: the frames themselves
    commanded = PEG + np.array([0.008, 0.0, 0.0])  # 8 mm ahead of where the robot last was
    painter.receive(ToolMarkers({ArmId.PSM1: tuple(commanded)}, {ArmId.PSM1: tuple(PEG)}).encode())
    out_left, out_right = painter.paint(left, right)
    assert (left == 40).all() and (right == 40).all()  # drawn on copies
    for image, camera in zip((out_left, out_right), stereo_cameras(*endoscope_home_pose(), WIDTH, HEIGHT),
                             strict=True):
        u, v = camera.project(commanded)[0]
        assert tuple(image[int(v), int(u)]) == COMMANDED_RGB  # the cross's centre
        cyan = np.argwhere(np.all(image == COMMANDED_RGB, axis=2))
        assert np.abs(cyan.mean(axis=0) + 0.5 - (v, u)).max() < 1.0
        ring_u, ring_v = camera.project(PEG)[0]
        amber = np.argwhere(np.all(image == MEASURED_RGB, axis=2))
        assert amber.size and np.abs(amber.mean(axis=0) + 0.5 - (ring_v, ring_u)).max() < 1.5
        assert ring_u < u - 5  # +x in the base frame is to the right in the picture: the cross leads
        changed = np.any(image != 40, axis=2)
        assert changed.sum() == len(cyan) + len(amber)  # nothing else touched
    assert painter.frames_drawn == 1
    mono_left, mono_right = painter.paint(left, None)
    assert mono_right is None and np.any(mono_left != left)


def test_toggled_off_the_frames_and_status_lines_pass_untouched():
    painter = ToolOverlayPainter(WIDTH, HEIGHT)
    painter.receive(ToolMarkers({ArmId.PSM1: tuple(PEG)}, {ArmId.PSM1: tuple(PEG)}).encode())
    left = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    right = left.copy()
    off = with_tools(painter, False, left, right, ["status"])
    assert off[0] is left and off[1] is right and off[2] == ["status"] and painter.frames_drawn == 0
    on = with_tools(painter, True, left, right, ["status"])
    assert np.any(on[0] != 0) and np.any(on[1] != 0) and len(on[2]) == 2 and "o" in on[2][1]


def test_the_o_key_toggles_the_tool_overlay_in_the_window():
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    display = StereoDisplay(320, 180)
    try:
        pg = display._pg
        assert display.tools_shown
        pg.event.post(pg.event.Event(pg.KEYDOWN, key=pg.K_o, mod=0, unicode="o", scancode=0))
        assert display.poll() == ["o"] and not display.tools_shown
        pg.event.post(pg.event.Event(pg.KEYDOWN, key=pg.K_o, mod=0, unicode="o", scancode=0))
        display.poll()
        assert display.tools_shown and display.mode == "side_by_side"
    finally:
        display.close()


class _Core:
    def clock_offset(self) -> float:
        return 0.0


class _Endpoint:
    """Unit-test stand-in for the link: the display child needs only a clock offset and an event sink."""

    core = _Core()
    established = True

    def send_event(self, payload: bytes) -> None:
        pass


def test_display_child_draws_the_markers_it_is_sent(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # inherited by the spawned child
    config = VideoConfig(width=320, height=180, fps=15.0)
    markers = ToolMarkers({ArmId.PSM1: tuple(PEG + 0.005)}, {ArmId.PSM1: tuple(PEG)})
    asked: list[float] = []

    def source() -> ToolMarkers:
        asked.append(time.monotonic())
        return markers

    async def run() -> dict:
        video = ConsoleVideo(config, _Endpoint(), display=True, tool_markers=source)  # type: ignore[arg-type]
        eyes = [TestPatternSource(config.width, config.height, config.fps, seed=0),
                TestPatternSource(config.width, config.height, config.fps, seed=0, eye_offset_px=4)]
        sender = VideoSender(eyes, EncoderConfig(width=config.width, height=config.height, fps=config.fps),
                             video.on_datagram)
        try:
            assert await video.wait_ready(30.0), "display child did not start"
            video._sock.send(b"T\x01")  # malformed: counted and dropped by the child
            for _ in range(30):  # 2 s of 15 fps stereo
                sender.step(time.monotonic())
                await asyncio.sleep(1 / config.fps)
        finally:
            sender.close()
            video.close()
        return video.report()

    report = asyncio.run(run())
    assert report["frames_on_screen"] > 5
    assert report["overlay"]["malformed"] == 1
    assert report["overlay"]["frames_drawn"] >= report["frames_on_screen"] - 1  # every frame once markers came
    assert len(asked) > 20  # the markers were sampled at the display rate (30 Hz) on the loop


def test_headless_display_child_is_never_asked_for_markers(monkeypatch: pytest.MonkeyPatch):
    async def run() -> None:
        video = ConsoleVideo(VideoConfig(width=160, height=96), _Endpoint(), display=False,  # type: ignore[arg-type]
                             tool_markers=lambda: pytest.fail("headless must not sample the markers"))
        try:
            await asyncio.sleep(0.2)
        finally:
            video.close()
        assert video.report()["overlay"]["frames_drawn"] == 0

    asyncio.run(run())
