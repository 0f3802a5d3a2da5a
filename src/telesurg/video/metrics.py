"""Video quality-of-service figures per eye, and the `report()` dict the demo and benches publish.

Freeze = more than 100 ms between two displayed frames of one eye (what the surgeon perceives as a
stall). Latency = receiver time at decode minus sender capture time, corrected by the estimated clock
offset between sites (0 when both ends share a clock, as in tests and benches).

Stage tracing (optional, `stage_clock` set): sender and receiver mark when each frame of each eye
passes a stage; the deltas between consecutive marks say where the capture->decoded time goes.
In one process (the bench) both ends share one `VideoMetrics` and one clock, so the breakdown spans
the link too; with separate objects each side reports only its own stages.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

FREEZE_S = 0.100
EYE_NAMES = ("left", "right")
# Stage marks in pipeline order; the delta ending at each mark is reported under its label.
STAGES = ("capture", "enc_start", "encoded", "packetized", "send_start", "sent", "first_fragment",
          "complete", "dec_start", "decoded")
STAGE_LABELS = {
    "enc_start": "capture+stamp -> encoder start",
    "encoded": "encode",
    "packetized": "packetize + FEC",
    "send_start": "hand-over to link loop",
    "sent": "link send (AEAD, 2 paths)",
    "first_fragment": "link transit (1st fragment)",
    "complete": "rest of fragments + reassembly",
    "dec_start": "decode queue",
    "decoded": "decode",
}
_MAX_TRACED = 512  # frames in flight whose marks are kept; older ones (dropped frames) are forgotten


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 pictures of the same shape (inf if equal)."""
    if reference.shape != decoded.shape:
        raise ValueError(f"psnr: shapes differ {reference.shape} vs {decoded.shape}")
    diff = np.subtract(reference, decoded, dtype=np.float32).ravel()
    mse = float(np.dot(diff, diff)) / max(1, diff.size)  # BLAS dot: half the CPU of mean(square)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


@dataclass(slots=True)
class _Eye:
    captured: int = 0
    displayed: int = 0
    dropped: int = 0
    freezes: list[tuple[float, float]] = field(default_factory=list)  # (last picture, next picture)
    code_mismatches: int = 0
    first_frame: int | None = None
    last_frame: int | None = None
    last_display: float | None = None
    latencies: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)


def _pcts(values: list[float]) -> dict[str, float | None]:
    arr = np.asarray(values) * 1e3
    return {"p50": float(np.percentile(arr, 50)) if arr.size else None,
            "p99": float(np.percentile(arr, 99)) if arr.size else None}


class VideoMetrics:
    """Plain counters fed by the sender and receiver (sans-I/O: callers pass `now`)."""

    def __init__(self, clock_offset: float = 0.0, stage_clock: Callable[[], float] | None = None) -> None:
        self.clock_offset = clock_offset  # receiver clock minus sender clock, seconds
        self.stage_clock = stage_clock  # None: stage tracing off (marks cost nothing)
        self._marks: dict[tuple[int, int], dict[str, float]] = {}
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
            eye.freezes.append((eye.last_display, now))
        eye.last_display = now
        eye.latencies.append(now - self.clock_offset - capture_time)

    def on_psnr(self, stream: int, value_db: float) -> None:
        self._eye(stream).psnr.append(value_db)

    @property
    def tracing(self) -> bool:
        return self.stage_clock is not None

    def mark(self, stream: int, frame_number: int, stage: str, at: float | None = None) -> None:
        """Record that a frame of `stream` reached `stage` (at `at`, else now); "decoded" closes it."""
        if self.stage_clock is None:
            return
        t = self.stage_clock() if at is None else at
        key = (stream, frame_number)
        marks = self._marks.get(key)
        if marks is None:
            if len(self._marks) >= _MAX_TRACED:
                del self._marks[next(iter(self._marks))]
            marks = self._marks[key] = {}
        marks.setdefault(stage, t)
        if stage == "decoded":
            del self._marks[key]
            stages = self._eye(stream).stages
            previous = None
            for name in STAGES:
                if name in marks:
                    if previous is not None:
                        stages.setdefault(name, []).append(marks[name] - marks[previous])
                    previous = name

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
            "freezes": len(eye.freezes),
            "code_mismatches": int(eye.code_mismatches),
            "latency_ms": {
                "p50": float(np.percentile(lat, 50)) if lat.size else None,
                "p99": float(np.percentile(lat, 99)) if lat.size else None,
            },
            "psnr_db": float(np.mean(finite_psnr)) if finite_psnr else None,
            "stages_ms": {name: _pcts(eye.stages[name]) for name in STAGES if name in eye.stages},
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
            "freezes": sum(len(e.freezes) for e in self._eyes.values()),
            # when each freeze happened, on the receiver's clock (a report can line them up with events)
            "freeze_intervals": sorted(({"eye": s, "from": a, "to": b} for s, e in self._eyes.items()
                                        for a, b in e.freezes), key=lambda f: f["from"]),
            "code_mismatches": sum(e.code_mismatches for e in self._eyes.values()),
            "latency_ms": {
                "p50": float(np.percentile(all_lat, 50)) if all_lat.size else None,
                "p99": float(np.percentile(all_lat, 99)) if all_lat.size else None,
            },
            "bitrate_mbps": self._bytes * 8 / span / 1e6 if span > 0 else 0.0,
            "psnr_db": float(np.mean(all_psnr)) if all_psnr else None,
            "psnr_db_min": float(np.min(all_psnr)) if all_psnr else None,
            "stages_ms": {name: _pcts([v for e in self._eyes.values() for v in e.stages.get(name, [])])
                          for name in STAGES if any(name in e.stages for e in self._eyes.values())},
            "eyes": eyes,
        }
