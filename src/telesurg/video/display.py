"""Stereo display for the surgeon console: a pygame/SDL window with 3D layouts and a status overlay.

Modes: `side_by_side` and `top_bottom` (frame-packed inputs for 3D monitors and HMDs, each eye at
half resolution along the packed axis, as such displays expect), `anaglyph` (red/cyan glasses, for a
quick check without a 3D monitor), `left`/`right` (mono). Composition is plain numpy (`compose`), so
it is testable without a window; the window runs headless with SDL_VIDEODRIVER=dummy.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

DisplayMode = Literal["side_by_side", "top_bottom", "anaglyph", "left", "right"]
MODES: tuple[str, ...] = ("side_by_side", "top_bottom", "anaglyph", "left", "right")


def compose(left: np.ndarray, right: np.ndarray | None, mode: DisplayMode) -> np.ndarray:
    """One (H, W, 3) RGB picture the size of one eye, laid out for `mode` (right=None: mono)."""
    if mode not in MODES:
        raise ValueError(f"display mode {mode!r}: choose one of {', '.join(MODES)}")
    if right is None or mode == "left":
        return left
    if mode == "right":
        return right
    if left.shape != right.shape:
        raise ValueError(f"left {left.shape} and right {right.shape} eyes differ in size")
    if mode == "side_by_side":
        return np.concatenate([left[:, ::2], right[:, ::2]], axis=1)
    if mode == "top_bottom":
        return np.concatenate([left[::2], right[::2]], axis=0)
    out = right.copy()  # anaglyph: red from the left eye, green and blue from the right eye
    out[..., 0] = left[..., 0]
    return out


class StereoDisplay:
    """A pygame window showing the composed picture and a few lines of link/latency status."""

    def __init__(self, width: int, height: int, mode: DisplayMode = "side_by_side",
                 title: str = "telesurg endoscope") -> None:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import pygame  # imported here: only the console needs SDL

        if mode not in MODES:
            raise ValueError(f"display mode {mode!r}: choose one of {', '.join(MODES)}")
        self._pg = pygame
        pygame.display.init()
        pygame.font.init()
        self.mode: DisplayMode = mode
        self.size = (width, height)
        self.screen = pygame.display.set_mode(self.size)
        pygame.display.set_caption(title)
        self._font = pygame.font.Font(None, max(16, height // 30))
        self.frames_shown = 0
        self.closed = False
        self.tools_shown = True  # the predictive overlay of the tools ('o' toggles; the caller draws it)

    def show(self, left: np.ndarray, right: np.ndarray | None = None, overlay: Sequence[str] = ()) -> None:
        """Compose, scale to the window, draw the overlay and flip. Returns at once (no vsync wait)."""
        pg = self._pg
        picture = compose(left, right, self.mode)
        surface = pg.surfarray.make_surface(np.ascontiguousarray(picture.swapaxes(0, 1)))
        if surface.get_size() != self.size:
            surface = pg.transform.scale(surface, self.size)
        self.screen.blit(surface, (0, 0))
        y = 4
        for line in overlay:
            text = self._font.render(line, True, (255, 255, 0), (0, 0, 0))
            self.screen.blit(text, (6, self.size[1] - text.get_height() - 4 - y))
            y += text.get_height() + 2
        pg.display.flip()
        self.frames_shown += 1

    def poll(self) -> list[str]:
        """Handle window events; returns key names pressed ('m' cycles the mode, 'o' toggles the tool
        overlay, window close -> 'quit')."""
        pg = self._pg
        keys = []
        for event in pg.event.get():
            if event.type == pg.QUIT:
                self.closed = True
                keys.append("quit")
            elif event.type == pg.KEYDOWN:
                name = pg.key.name(event.key)
                keys.append(name)
                if name == "m":
                    self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)]  # type: ignore[assignment]
                elif name == "o":
                    self.tools_shown = not self.tools_shown
        return keys

    def pixels(self) -> np.ndarray:
        """What the window shows now, (H, W, 3) RGB: for tests and screenshots."""
        return self._pg.surfarray.array3d(self.screen).swapaxes(0, 1).copy()

    def close(self) -> None:
        self._pg.display.quit()
        self.closed = True


class LatestFrames:
    """Hand-over from the receiver (any thread) to the display loop: only the newest picture per eye is
    kept, so a slow display drops frames instead of queueing them (no lag builds up on screen)."""

    def __init__(self, eyes: int = 2) -> None:
        self._lock = threading.Lock()
        self._latest: list[Any] = [None] * eyes  # DecodedFrame per eye
        self._fresh = False
        self.replaced_unseen = 0

    def put(self, frame: Any) -> None:
        """`VideoReceiver`'s on_frame callback."""
        with self._lock:
            if self._fresh and self._latest[frame.stream] is not None:
                self.replaced_unseen += 1
            self._latest[frame.stream] = frame
            self._fresh = True

    def take(self) -> list[Any] | None:
        """The newest frame per eye (None for an eye not seen yet) if anything changed since last call."""
        with self._lock:
            if not self._fresh:
                return None
            self._fresh = False
            return list(self._latest)


def overlay_lines(report: dict[str, object], link_state: str = "") -> list[str]:
    """Short status lines from a `VideoMetrics.report()` (and the link's state summary, if any)."""
    lat = report.get("latency_ms") or {}
    p50 = lat.get("p50") if isinstance(lat, dict) else None
    p99 = lat.get("p99") if isinstance(lat, dict) else None
    lines = []
    if link_state:
        lines.append(f"link {link_state}")
    lines.append("video capture->decode "
                 + (f"p50 {p50:.1f} ms  p99 {p99:.1f} ms" if p50 is not None and p99 is not None else "--"))
    lines.append(f"shown {report.get('frames_displayed', 0)}  dropped {report.get('frames_dropped', 0)}  "
                 f"freezes {report.get('freezes', 0)}  {float(report.get('bitrate_mbps', 0.0)):.1f} Mbit/s")  # type: ignore[arg-type]
    return lines
