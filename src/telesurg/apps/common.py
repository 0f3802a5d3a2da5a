"""Pieces both site processes share: stopping on signals, path figures for reports, JSON reports."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from telesurg.idle_poll import KeepCpusAwake

# Link counters that are housekeeping, not refused traffic (the rest go under security.rejected).
NOT_SECURITY = frozenset({"duplicates", "rekeys", "video_dropped", "not_established", "no_address", "after_close",
                          "control_redundant_copies", "peer_silent", "reconnects", "clock_steps"})


def percentiles(values: list[float], digits: int = 3) -> dict[str, float]:
    """p50/p99/max of a sample (zeros for an empty one, so report fields keep their types)."""
    if not values:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    arr = np.asarray(values, dtype=float)
    return {"p50": round(float(np.percentile(arr, 50)), digits), "p99": round(float(np.percentile(arr, 99)), digits),
            "max": round(float(arr.max()), digits)}


class DelayHistogram:
    """p50/p99/max of a per-command delay (ms) over a whole session in fixed memory.

    Why: the sites record one delay per command, 1000 a second per arm; kept in lists, an operation
    of a few hours grew by hundreds of MB. Bins: 10 µs from -100 ms to 1 s (a clock-offset error can
    make a delay slightly negative), then 1 ms to 60 s; beyond, the end bins. Percentiles are read
    at a bin's upper edge (at most 10 µs high below 1 s); the max is exact."""

    FINE_LOW_MS, FINE_HIGH_MS, FINE_STEP_MS = -100.0, 1000.0, 0.01
    COARSE_HIGH_MS, COARSE_STEP_MS = 60_000.0, 1.0

    def __init__(self) -> None:
        self._fine = round((self.FINE_HIGH_MS - self.FINE_LOW_MS) / self.FINE_STEP_MS)
        coarse = round((self.COARSE_HIGH_MS - self.FINE_HIGH_MS) / self.COARSE_STEP_MS)
        self._counts = np.zeros(self._fine + coarse, dtype=np.int64)
        self._last = len(self._counts) - 1
        self.count = 0
        self.max = float("-inf")

    def add(self, ms: float) -> None:
        if ms != ms:  # NaN: nothing to count
            return
        self.count += 1
        if ms > self.max:
            self.max = ms
        if ms < self.FINE_HIGH_MS:
            index = max(0, int((ms - self.FINE_LOW_MS) / self.FINE_STEP_MS))
        else:
            index = min(self._last, self._fine + int((ms - self.FINE_HIGH_MS) / self.COARSE_STEP_MS))
        self._counts[index] += 1

    def _upper_edge(self, index: int) -> float:
        if index < self._fine:
            return self.FINE_LOW_MS + (index + 1) * self.FINE_STEP_MS
        return self.FINE_HIGH_MS + (index - self._fine + 1) * self.COARSE_STEP_MS

    def percentile(self, q: float) -> float:
        """The smallest bin edge with at least q % of the samples at or below it (capped at the max)."""
        rank = max(1, int(np.ceil(q / 100.0 * self.count)))
        index = int(np.searchsorted(np.cumsum(self._counts), rank))
        return min(self._upper_edge(index), self.max)

    def report(self, digits: int = 3) -> dict[str, float]:
        """Same shape as `percentiles` (zeros when empty, so report fields keep their types)."""
        if not self.count:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        return {"p50": round(self.percentile(50), digits), "p99": round(self.percentile(99), digits),
                "max": round(self.max, digits)}


def cpu_times() -> tuple[int, int, int] | None:
    """(busy, steal, total) jiffies of the whole machine from /proc/stat; None where it is absent."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields + [0] * (8 - len(fields))
    return user + nice + system + irq + softirq, steal, sum(fields)


def cpu_usage(before: tuple[int, int, int] | None, after: tuple[int, int, int] | None,
              not_counted_s: float = 0.0) -> dict[str, float] | None:
    """Share of the machine's CPU time that was busy, and stolen by the hypervisor, between two
    `cpu_times` (percent of all CPUs). Steal is time a virtual machine wanted a CPU and the host
    gave it to someone else: figures measured under heavy steal are the host's, not ours.
    `not_counted_s`: CPU time that was only filling idle time (idle_poll.py), left out of busy."""
    if before is None or after is None or after[2] <= before[2]:
        return None
    total = after[2] - before[2]
    busy = max(0.0, after[0] - before[0] - not_counted_s * os.sysconf("SC_CLK_TCK"))
    return {"busy_pct": round(100.0 * busy / total, 1),
            "steal_pct": round(100.0 * (after[1] - before[1]) / total, 1)}


def security_rejections(counters: Counter[str]) -> dict[str, int]:
    return {k: int(v) for k, v in sorted(counters.items()) if k not in NOT_SECURITY and v}


class PathRecorder:
    """Samples a LinkCore's per-path statistics over a run so reports give whole-run RTT percentiles."""

    def __init__(self) -> None:
        self.rtt: dict[str, list[float]] = {}
        self.last: dict[str, Any] = {}
        self._last_rtt: dict[str, float | None] = {}

    def sample(self, path_stats: dict[str, Any]) -> None:
        for name, s in path_stats.items():
            self.last[name] = s
            # record each new probe result once (the same last sample is not counted twice)
            if s.rtt_ms is not None and s.rtt_ms != self._last_rtt.get(name):
                self.rtt.setdefault(name, []).append(float(s.rtt_ms))
            self._last_rtt[name] = s.rtt_ms

    def report(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, s in self.last.items():
            judged = int(s.probes_answered) + int(s.probes_lost)
            pct = percentiles(self.rtt.get(name, []))
            out[name] = {
                "state": str(getattr(s.state, "value", s.state)),
                "rtt_ms": {"p50": pct["p50"], "p99": pct["p99"], "max": pct["max"]},
                "jitter_ms": round(float(s.jitter_ms), 3),
                "loss_pct": round(100.0 * int(s.probes_lost) / judged, 3) if judged else 0.0,
                "state_changes": int(s.state_changes),
                "probes_sent": int(s.probes_sent),
            }
        return out


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGINT/SIGTERM set `stop` so the site shuts down cleanly and still writes its report."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def wait_stop(stop: asyncio.Event, duration: float | None) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), duration)


def write_report(path: Path | str | None, report: dict[str, Any]) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False, default=str))
    tmp.replace(path)


IDLE_POLL_HELP = ("keep idle CPUs awake, so a datagram's thread runs without waiting for a halted CPU to wake: "
                  "the kernel's latency request where it has a cpuidle driver, else a SCHED_IDLE spinner per CPU "
                  "(the CPUs then look fully busy); see telesurg/idle_poll.py. On a dedicated machine, the "
                  "kernel's idle=poll does the same")


def add_idle_poll_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--idle-poll", action="store_true", help=IDLE_POLL_HELP + " (default: off)")


@contextlib.contextmanager
def idle_polling(args: argparse.Namespace) -> Iterator[str | None]:
    """The site's `--idle-poll`, for the whole run, on the CPUs it may use (after `--cpus`); yields
    how the CPUs are kept awake ("pm_qos" or "pollers"), or None."""
    if not args.idle_poll:
        yield None
        return
    keeper = KeepCpusAwake()
    try:
        yield keeper.method if keeper.start() else None
    finally:
        keeper.stop()
