"""Video quality-of-service figures per eye, and the `report()` dict the demo and benches publish.

Freeze = more than 100 ms between two displayed frames of one eye (what the surgeon perceives as a
stall). Latency = receiver time at decode minus sender capture time, corrected by the estimated clock
offset between sites (0 when both ends share a clock, as in tests and benches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

FREEZE_S = 0.100
EYE_NAMES = ("left", "right")


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 pictures of the same shape (inf if equal)."""
    if reference.shape != decoded.shape:
        raise ValueError(f"psnr: shapes differ {reference.shape} vs {decoded.shape}")
    mse = float(np.mean((reference.astype(np.float32) - decoded.astype(np.float32)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


@dataclass(slots=True)
class _Eye:
    captured: int = 0
    displayed: int = 0
    dropped: int = 0
    freezes: int = 0
    code_mismatches: int = 0
    first_frame: int | None = None
    last_frame: int | None = None
    last_display: float | None = None
    latencies: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)


class VideoMetrics:
    """Plain counters fed by the sender and receiver (sans-I/O: callers pass `now`)."""

    def __init__(self, clock_offset: float = 0.0) -> None:
        self.clock_offset = clock_offset  # receiver clock minus sender clock, seconds
        self._eyes: dict[int, _Eye] = {}
        self._bytes = 0
        self._first_byte: float | None = None
        self._last_byte: float | None = None

    def _eye(self, stream: int) -> _Eye:
        return self._eyes.setdefault(stream, _Eye())

    def on_captured(self, stream: int) -> None:
        self._eye(stream).captured += 1

    def on_bytes(self, count: int, now: float) -> None:
        """Video bytes on the wire (payloads incl. FEC), for the bitrate figure."""
        self._bytes += count
        self._first_byte = now if self._first_byte is None else self._first_byte
        self._last_byte = now

    def on_dropped(self, stream: int, count: int = 1) -> None:
        self._eye(stream).dropped += count

    def on_displayed(self, stream: int, frame_number: int, capture_time: float, now: float,
                     code_ok: bool = True) -> None:
        eye = self._eye(stream)
        eye.displayed += 1
        eye.code_mismatches += 0 if code_ok else 1
        eye.first_frame = frame_number if eye.first_frame is None else eye.first_frame
        eye.last_frame = frame_number
        if eye.last_display is not None and now - eye.last_display > FREEZE_S:
            eye.freezes += 1
        eye.last_display = now
        eye.latencies.append(now - self.clock_offset - capture_time)

    def on_psnr(self, stream: int, value_db: float) -> None:
        self._eye(stream).psnr.append(value_db)

    @staticmethod
    def _eye_report(eye: _Eye) -> dict[str, object]:
        captured = eye.captured
        if captured == 0 and eye.first_frame is not None and eye.last_frame is not None:
            captured = eye.last_frame - eye.first_frame + 1  # receiver-only: infer from frame numbers
        lat = np.asarray(eye.latencies) * 1e3
        finite_psnr = [p for p in eye.psnr if math.isfinite(p)]
        return {
            "frames_captured": int(captured),
            "frames_displayed": int(eye.displayed),
            "frames_dropped": int(eye.dropped),
            "freezes": int(eye.freezes),
            "code_mismatches": int(eye.code_mismatches),
            "latency_ms": {
                "p50": float(np.percentile(lat, 50)) if lat.size else None,
                "p99": float(np.percentile(lat, 99)) if lat.size else None,
            },
            "psnr_db": float(np.mean(finite_psnr)) if finite_psnr else None,
        }

    def report(self) -> dict[str, object]:
        eyes = {EYE_NAMES[s] if s < len(EYE_NAMES) else f"stream{s}": self._eye_report(e)
                for s, e in sorted(self._eyes.items())}
        all_lat = np.concatenate([np.asarray(e.latencies) for e in self._eyes.values()] or [np.zeros(0)]) * 1e3
        all_psnr = [p for e in self._eyes.values() for p in e.psnr if math.isfinite(p)]
        span = (self._last_byte or 0.0) - (self._first_byte or 0.0)
        return {
            "frames_captured": sum(int(e["frames_captured"]) for e in eyes.values()),  # type: ignore[call-overload]
            "frames_displayed": sum(e.displayed for e in self._eyes.values()),
            "frames_dropped": sum(e.dropped for e in self._eyes.values()),
            "freezes": sum(e.freezes for e in self._eyes.values()),
            "code_mismatches": sum(e.code_mismatches for e in self._eyes.values()),
            "latency_ms": {
                "p50": float(np.percentile(all_lat, 50)) if all_lat.size else None,
                "p99": float(np.percentile(all_lat, 99)) if all_lat.size else None,
            },
            "bitrate_mbps": self._bytes * 8 / span / 1e6 if span > 0 else 0.0,
            "psnr_db": float(np.mean(all_psnr)) if all_psnr else None,
            "eyes": eyes,
        }
