"""The `Frame` value that every source returns and every later stage passes along."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

PixelFormat = Literal["rgb24", "yuv420p"]


@dataclass(slots=True)
class Frame:
    """One captured picture of one eye.

    `image` is either an (H, W, 3) uint8 RGB array or a planar yuv420p array of shape (H * 3 // 2, W)
    (the layout PyAV's `VideoFrame.from_ndarray(..., format="yuv420p")` takes). Sources that can produce
    YUV directly do so: it skips a colour conversion on the latency path.
    """

    image: np.ndarray
    pixel_format: PixelFormat
    capture_time: float  # sender clock, seconds
    frame_number: int

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0] if self.pixel_format == "rgb24" else self.image.shape[0] * 2 // 3)

    def luma(self) -> np.ndarray:
        """The Y plane (a view for yuv420p, computed BT.601 for RGB): used for PSNR and frame codes."""
        if self.pixel_format == "yuv420p":
            return self.image[: self.height]
        return rgb_to_luma(self.image)


def rgb_to_luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range luma, the same one libswscale produces for yuv420p by default."""
    f = rgb.astype(np.float32)
    y = 16.0 + (65.481 * f[..., 0] + 128.553 * f[..., 1] + 24.966 * f[..., 2]) / 255.0
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """Convert RGB to planar yuv420p (BT.601 limited range) with numpy; even width and height required."""
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"yuv420p needs even dimensions, got {w}x{h}")
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0
    u = u.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    v = v.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    out = np.empty((h * 3 // 2, w), dtype=np.uint8)
    out[:h] = np.clip(np.rint(y), 0, 255)
    out[h:].reshape(-1)[: u.size] = np.clip(np.rint(u), 0, 255).reshape(-1)
    out[h:].reshape(-1)[u.size :] = np.clip(np.rint(v), 0, 255).reshape(-1)
    return out
