"""Many headless observers in one process (the demo's `--observers N`, bench/observers.py).

    python -m telesurg.broadcast.observer_pool --connect tcp/127.0.0.1:7447 --count 10 --report F

Why several per process: a Python interpreter costs ~40 MB and a second of start-up; 100 of them
would measure the machine's memory, not the broadcast. Each observer here still has its own Zenoh
session (its own TCP connection to the router and its own subscription), so the router fans out to
each one separately. Only the first `--decode` observers decode H.264 (two 720p60 streams cost a
third of a core); the others parse every header and measure fps, frame gaps and latency
(capture -> received) without decoding. SIGINT/SIGTERM or `--duration` ends the run and writes the
JSON report (one entry per observer and a summary).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def summarize(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Across observers: median of each one's p50/p99 latency and fps, sums of drops and malformed."""
    def med(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return round(float(np.median(kept)), 3) if kept else None

    def worst(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return round(max(kept), 3) if kept else None

    return {"observers": len(reports),
            "latency_p50_ms": med([r["latency_ms"]["p50"] for r in reports]),
            "latency_p99_ms": med([r["latency_ms"]["p99"] for r in reports]),
            "latency_p99_ms_worst": worst([r["latency_ms"]["p99"] for r in reports]),
            "fps_left": med([r["fps"]["left"] for r in reports]), "fps_right": med([r["fps"]["right"] for r in reports]),
            "fps_min": min((min(r["fps"].values()) for r in reports), default=None),
            "frames_missing_min": min((r["video"]["left"]["missing"] + r["video"]["right"]["missing"] for r in reports),
                                      default=None),
            "frames_missing_max": max((r["video"]["left"]["missing"] + r["video"]["right"]["missing"] for r in reports),
                                      default=None),
            "publisher": next((r["publisher"] for r in reports if r.get("publisher")), {}),
            "frames_missing": sum(r["video"]["left"]["missing"] + r["video"]["right"]["missing"] for r in reports),
            "frames": sum(r["video"]["left"]["frames"] + r["video"]["right"]["frames"] for r in reports),
            "dropped_local": sum(r["dropped_local"] for r in reports),
            "malformed": sum(r["malformed_total"] for r in reports),
            "decoded": sum(r["video"]["left"]["decoded"] + r["video"]["right"]["decoded"] for r in reports),
            "router_lost": sum(r["router_lost"] for r in reports),
            "router_regained": sum(r["router_regained"] for r in reports)}


def run_pool(connect: list[str], site: str | None, count: int, decode: int, duration: float | None,
             report_path: Path | None, zenoh_config: Path | None = None, ready_path: Path | None = None) -> int:
    from telesurg.broadcast.observer import ObserverSession
    from telesurg.broadcast.zconfig import BroadcastConfigError, quiet_logs

    quiet_logs("off")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        observers = [ObserverSession(connect, site, decode=i < decode, zenoh_config=zenoh_config)
                     for i in range(count)]
    except BroadcastConfigError as exc:
        print(f"telesurg observers: {exc}", flush=True)
        return 2
    if ready_path is not None:
        ready_path.write_text("ready")
    deadline = None if duration is None else time.monotonic() + duration
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        if sum(o.poll() for o in observers) == 0:
            stop.wait(0.002)
    reports = [o.report() for o in observers]
    for o in observers:
        o.close()
    if report_path is not None:
        report_path.write_text(json.dumps({"summary": summarize(reports), "observers": reports}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connect", action="append", required=True)
    parser.add_argument("--site", default=None)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--decode", type=int, default=0, help="how many of them decode H.264")
    parser.add_argument("--duration", type=float)
    parser.add_argument("--report", type=Path)
    parser.add_argument("--ready", type=Path, help="write this file once every observer is subscribed")
    parser.add_argument("--zenoh-config", type=Path)
    args = parser.parse_args(argv)
    return run_pool(args.connect, args.site, args.count, args.decode, args.duration, args.report, args.zenoh_config,
                    args.ready)


if __name__ == "__main__":
    raise SystemExit(main())
