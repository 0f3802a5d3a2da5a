"""Sans-I/O analysis of a qualification session: timestamped samples in, figures out.

The driver feeds per-path probe outcomes (the link's probes are sent and answered on one path each,
so they give per-path figures; messages only show the path whose copy arrived first), echo requests
and replies per stream (one stream per phase), path state changes and the clock offset. Times are the
console's clock; `peer_time` is the robot's. One-way delays use the link's NTP-style clock offset
(peer − local), so forward = peer_time − sent − offset and reverse = answered − peer_time + offset.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def distribution(values: Sequence[float], digits: int = 3) -> dict[str, float | int]:
    """p50 / p99 / p99.9 / max / mean of a sample (zeros and n=0 for none, so fields keep their types)."""
    if len(values) == 0:
        return {"n": 0, "p50": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0, "mean": 0.0}
    arr = np.asarray(values, dtype=float)
    p50, p99, p999 = np.percentile(arr, [50, 99, 99.9])
    return {"n": int(arr.size), "p50": round(float(p50), digits), "p99": round(float(p99), digits),
            "p999": round(float(p999), digits), "max": round(float(arr.max()), digits),
            "mean": round(float(arr.mean()), digits)}


def loss_bursts(outcomes: Iterable[bool]) -> list[int]:
    """Lengths of the runs of consecutive losses (False) in a delivery sequence, in order."""
    bursts, run = [], 0
    for delivered in outcomes:
        if delivered:
            if run:
                bursts.append(run)
            run = 0
        else:
            run += 1
    if run:
        bursts.append(run)
    return bursts


def rfc3550_jitter(transit: Sequence[float]) -> float:
    """RFC 3550 §A.8 interarrival jitter of a transit-time series (same unit); constant offsets cancel."""
    jitter = 0.0
    for prev, cur in zip(transit, transit[1:], strict=False):
        jitter += (abs(cur - prev) - jitter) / 16.0
    return jitter


def trend(times: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of values over times (unit per second); 0 for fewer than 3 samples."""
    if len(times) < 3 or max(times) - min(times) <= 0:
        return 0.0
    slope = np.polyfit(np.asarray(times, float), np.asarray(values, float), 1)[0]
    return float(slope)


@dataclass(slots=True)
class ProbeSample:
    path: str
    probe_id: int
    sent: float
    answered: float | None
    peer_time: float | None


@dataclass(slots=True)
class EchoStream:
    """Echo requests of one phase: what was sent, what the robot got, what came back (and on which path)."""

    name: str
    sent: dict[int, float] = field(default_factory=dict)
    replies: dict[int, tuple[float, float, str]] = field(default_factory=dict)  # seq -> (t_robot, at, path)
    robot_received: int = 0
    reply_bytes: int = 0


@dataclass(frozen=True, slots=True)
class PathChange:
    path: str
    new: str
    at: float


class Session:
    """Everything measured in one qualification session; `figures_*` methods turn it into numbers."""

    def __init__(self) -> None:
        self.probes: list[ProbeSample] = []
        self.streams: dict[int, EchoStream] = {}
        self.path_changes: list[PathChange] = []
        self.clock_offset: float = 0.0  # peer − local, seconds
        self.marks: list[tuple[str, float]] = []  # (label, time): phase starts, cuts, restores

    # -- inputs ------------------------------------------------------------------------------------
    def add_probe(self, path: str, probe_id: int, sent: float, answered: float | None,
                  peer_time: float | None) -> None:
        self.probes.append(ProbeSample(path, probe_id, sent, answered, peer_time))

    def open_stream(self, stream: int, name: str) -> None:
        self.streams[stream] = EchoStream(name)

    def echo_sent(self, stream: int, seq: int, t_sent: float) -> None:
        self.streams[stream].sent[seq] = t_sent

    def echo_reply(self, stream: int, seq: int, t_robot: float, robot_received: int, path: str, at: float,
                   size: int = 0) -> bool:
        """Record a reply; False (ignored) for an unknown stream or sequence number."""
        s = self.streams.get(stream)
        if s is None or seq not in s.sent:
            return False
        s.replies.setdefault(seq, (t_robot, at, path))
        s.robot_received = max(s.robot_received, robot_received)
        s.reply_bytes += size
        return True

    def path_changed(self, path: str, new: str, at: float) -> None:
        self.path_changes.append(PathChange(path, new, at))

    def mark(self, label: str, at: float) -> None:
        self.marks.append((label, at))

    # -- figures -----------------------------------------------------------------------------------
    def path_names(self) -> list[str]:
        return sorted({p.path for p in self.probes})

    def probes_in(self, path: str, start: float, end: float) -> list[ProbeSample]:
        out = [p for p in self.probes if p.path == path and start <= p.sent < end]
        out.sort(key=lambda p: p.sent)
        return out

    def path_figures(self, path: str, start: float, end: float) -> dict[str, Any]:
        """RTT, one-way delays both ways, jitter, loss and loss bursts of one path over [start, end)."""
        samples = self.probes_in(path, start, end)
        answered = [p for p in samples if p.answered is not None]
        rtt = [1000.0 * (p.answered - p.sent) for p in answered if p.answered is not None]
        timed = [p for p in answered if p.peer_time is not None]
        off = self.clock_offset
        fwd = [1000.0 * (p.peer_time - p.sent - off) for p in timed if p.peer_time is not None]
        rev = [1000.0 * (p.answered - p.peer_time + off) for p in timed
               if p.answered is not None and p.peer_time is not None]
        bursts = loss_bursts(p.answered is not None for p in samples)
        interval_ms = 1000.0 * (samples[-1].sent - samples[0].sent) / (len(samples) - 1) if len(samples) > 1 else 0.0
        lost = len(samples) - len(answered)
        return {
            "probes": len(samples),
            "lost": lost,
            "loss_pct": round(100.0 * lost / len(samples), 3) if samples else 0.0,
            "rtt_ms": distribution(rtt),
            "one_way_ms": {"forward": distribution(fwd), "reverse": distribution(rev)},
            "jitter_ms": {"rtt": round(rfc3550_jitter(rtt), 3), "forward": round(rfc3550_jitter(fwd), 3),
                          "reverse": round(rfc3550_jitter(rev), 3)},
            "loss_bursts": {"count": len(bursts), "max": max(bursts, default=0),
                            "mean": round(float(np.mean(bursts)), 2) if bursts else 0.0,
                            "max_ms": round(max(bursts, default=0) * interval_ms, 1)},
            "probe_interval_ms": round(interval_ms, 3),
        }

    def network_figures(self, start: float, end: float) -> dict[str, Any]:
        paths = {name: self.path_figures(name, start, end) for name in self.path_names()}
        differential: dict[str, float] = {}
        if len(paths) >= 2:
            for direction in ("forward", "reverse"):
                p50s = [f["one_way_ms"][direction]["p50"] for f in paths.values() if f["one_way_ms"][direction]["n"]]
                if len(p50s) >= 2:
                    differential[direction] = round(max(p50s) - min(p50s), 3)
            rtts = [f["rtt_ms"]["p50"] for f in paths.values() if f["rtt_ms"]["n"]]
            if len(rtts) >= 2:
                differential["rtt"] = round(max(rtts) - min(rtts), 3)
        return {"duration_s": round(end - start, 3), "clock_offset_ms": round(1000.0 * self.clock_offset, 3),
                "paths": paths, "differential_ms": differential}

    def owd_trend(self, path: str, start: float, end: float) -> dict[str, float]:
        """Slope (ms/s) and growth over the window (ms) of each direction's one-way delay on a path."""
        timed = [p for p in self.probes_in(path, start, end) if p.answered is not None and p.peer_time is not None]
        out: dict[str, float] = {}
        span = end - start
        for direction in ("forward", "reverse"):
            times = [p.sent - start for p in timed]
            if direction == "forward":
                values = [1000.0 * (p.peer_time - p.sent) for p in timed if p.peer_time is not None]
            else:
                values = [1000.0 * (p.answered - p.peer_time) for p in timed
                          if p.answered is not None and p.peer_time is not None]
            slope = trend(times, values)
            out[f"{direction}_ms_per_s"] = round(slope, 3)
            out[f"{direction}_growth_ms"] = round(slope * span, 3)
        return out

    def stream_figures(self, stream: int) -> dict[str, Any]:
        """Sent / received by the robot / echoed back, command-direction loss, RTT and first-copy paths."""
        s = self.streams[stream]
        sent = len(s.sent)
        replies = len(s.replies)
        rtt = [1000.0 * (at - s.sent[seq]) for seq, (_, at, _) in s.replies.items()]
        fwd = [1000.0 * (t_robot - s.sent[seq] - self.clock_offset) for seq, (t_robot, _, _) in s.replies.items()]
        first_paths: dict[str, int] = {}
        for _, _, path in s.replies.values():
            first_paths[path] = first_paths.get(path, 0) + 1
        robot_received = max(s.robot_received, replies)  # a reply proves its request arrived
        span = (max(s.sent.values()) - min(s.sent.values())) if sent > 1 else 0.0
        return {
            "sent": sent, "robot_received": robot_received, "replies": replies,
            "lost_forward": max(0, sent - robot_received), "lost_reply": max(0, robot_received - replies),
            "rate_hz": round((sent - 1) / span, 1) if span > 0 else 0.0,
            "rtt_ms": distribution(rtt), "forward_ms": distribution(fwd), "first_copy_paths": first_paths,
            "reply_mbps": round(8.0 * s.reply_bytes / span / 1e6, 3) if span > 0 else 0.0,
        }

    def stream_forward_trend(self, stream: int) -> dict[str, float]:
        s = self.streams[stream]
        items = sorted((s.sent[seq], t_robot) for seq, (t_robot, _, _) in s.replies.items())
        if not items:
            return {"ms_per_s": 0.0, "growth_ms": 0.0}
        t0 = items[0][0]
        slope = trend([t - t0 for t, _ in items], [1000.0 * (r - t) for t, r in items])
        span = items[-1][0] - t0
        return {"ms_per_s": round(slope, 3), "growth_ms": round(slope * span, 3)}

    def state_changes(self, path: str, after: float, new: str) -> float | None:
        """Time of the first change of `path` to state `new` at or after `after` (None if none)."""
        times = [c.at for c in self.path_changes if c.path == path and c.new == new and c.at >= after]
        return min(times) if times else None

    def rtt_series(self, path: str) -> tuple[list[float], list[float]]:
        """(send time, RTT ms) of every answered probe on a path, for plots."""
        pts = [(p.sent, 1000.0 * (p.answered - p.sent)) for p in self.probes_in(path, -math.inf, math.inf)
               if p.answered is not None]
        return [t for t, _ in pts], [r for _, r in pts]

    def loss_times(self, path: str) -> list[float]:
        return [p.sent for p in self.probes_in(path, -math.inf, math.inf) if p.answered is None]
