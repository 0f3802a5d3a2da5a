"""Hostile input against the link: fuzzing, amplification, a handshake flood, and a 4-hour operation.

Modes (default: all but `long`):
  fuzz   N datagrams (default 10^6) mutated from real captured traffic (handshake records, control,
         telemetry, probes, acks, rekeys, session events) into an established server LinkCore and a
         LinkHub: prints datagrams/s and the rejection reasons; fails on any accepted forgery/replay,
         leaked message, exception or counter that does not add up.
  amp    bytes a fresh core and hub send back to an unauthenticated sender vs bytes it sent: the mixed
         junk stream, and ClientHello replays alone at the gate's admitted rate (the worst case).
  flood  an established console's CONTROL delivery and latency to a hub, undisturbed then under a
         spoofed-source ClientHello flood, in one virtual-clock run (wall time shows the CPU cost).
  long   a 4-hour operation in accelerated virtual time (CONTROL at a reduced rate): memory samples and
         peak (tracemalloc), rekey intervals, counters' distance from wrapping.
Usage: python bench/fuzz_link.py [--mode fuzz|amp|flood|long|all] [-n N] [--hours H] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from telesurg.link.testing import make_hub, make_pair
from telesurg.simulate.linkfuzz import amplification, capture_hub, capture_pair, flood, fuzz
from telesurg.simulate.longrun import long_run

console = Console()


def run_fuzz(n: int, results: dict) -> bool:
    _, server, corpus = capture_pair()
    hub, hub_corpus = capture_hub()
    console.print(f"captured {len(corpus)} datagrams (pair) and {len(hub_corpus)} (hub)")
    ok = True
    reasons: list[str] = []
    table = Table(title=f"fuzz: {n} mutated datagrams per target")
    for column in ("target", "datagrams/s", "accepted", "leaked", "exceptions", "counted", "absorbed",
                   "double"):
        table.add_column(column)
    for name, target, data in (("server LinkCore", server, corpus), ("LinkHub", hub, hub_corpus)):
        start = time.perf_counter()
        report = None
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(name, total=n)
            done = 0
            while done < n:
                part = min(50_000, n - done)
                r = fuzz(target, data, part, seed=done)
                report = r if report is None else _merge(report, r)
                done += part
                progress.update(task, completed=done)
        wall = time.perf_counter() - start
        assert report is not None
        good = (report.accepted == report.leaked == report.exceptions == report.double_counted == 0
                and report.counted + report.absorbed == n and report.reasons.get("internal_error", 0) == 0)
        ok &= good
        table.add_row(name, f"{n / wall:,.0f}", str(report.accepted), str(report.leaked), str(report.exceptions),
                      str(report.counted), str(report.absorbed), str(report.double_counted))
        reasons.append(f"{name} rejections: " + ", ".join(f"{k} {v}" for k, v in report.reasons.most_common()))
        results[f"fuzz_{name.split()[-1].lower()}"] = {"datagrams": n, "per_s": n / wall, "accepted": report.accepted,
                                                        "leaked": report.leaked, "exceptions": report.exceptions,
                                                        "reasons": dict(report.reasons), "ok": good}
    console.print(table)
    for line in reasons:
        console.print(line)
    return ok


def _merge(a, b):  # type: ignore[no-untyped-def]
    a.fed += b.fed
    a.reasons += b.reasons
    for name in ("accepted", "leaked", "exceptions", "counted", "absorbed", "double_counted"):
        setattr(a, name, getattr(a, name) + getattr(b, name))
    return a


def run_amp(results: dict) -> bool:
    _, _, corpus = capture_pair()
    _, hub_corpus = capture_hub()
    table = Table(title="amplification: bytes sent back to an unauthenticated sender / bytes it sent")
    for column in ("target", "input", "bytes in", "bytes out", "handshakes started", "ratio"):
        table.add_column(column)
    worst = 0.0
    for name, make, data in (("LinkCore", lambda: make_pair(seed=3)[1], corpus),
                             ("LinkHub", lambda: make_hub(1, seed=4)[0], hub_corpus)):
        for label, kwargs in (("mixed junk, 200/s", {}),
                              ("ClientHello replays, 2/s (gate rate)", {"kinds": ("new_session",), "n": 200,
                                                                         "rate_hz": 2.0})):
            a = amplification(make(), data, **kwargs)
            worst = max(worst, a.ratio)
            table.add_row(name, label, str(a.bytes_in), str(a.bytes_out), str(a.handshakes_started), f"{a.ratio:.2f}")
            results.setdefault("amplification", []).append({"target": name, "input": label, "bytes_in": a.bytes_in,
                                                             "bytes_out": a.bytes_out, "ratio": a.ratio})
    console.print(table)
    console.print(f"worst amplification ratio {worst:.2f} (target <= 1)")
    return worst <= 1.0


def run_flood(results: dict) -> bool:
    _, _, corpus = capture_pair()
    quiet, flooded, counters = flood(corpus)
    table = Table(title="CONTROL to a hub at 1 kHz, Shanghai-Casablanca paths, without / with a spoofed "
                        "ClientHello flood (5000/s)")
    for column in ("phase", "sent", "delivered", "p50 ms", "p99 ms", "max ms", "flood datagrams", "wall s"):
        table.add_column(column)
    for name, p in (("quiet", quiet), ("flood", flooded)):
        table.add_row(name, str(p.sent), str(p.delivered), f"{p.percentile(0.5):.2f}", f"{p.percentile(0.99):.2f}",
                      f"{max(p.latencies_ms):.2f}", str(p.flood_datagrams), f"{p.wall_s:.2f}")
        results[f"flood_{name}"] = {"sent": p.sent, "delivered": p.delivered, "p50_ms": p.percentile(0.5),
                                    "p99_ms": p.percentile(0.99), "wall_s": p.wall_s}
    console.print(table)
    extra_us = 1e6 * (flooded.wall_s - quiet.wall_s) / max(1, flooded.flood_datagrams)
    console.print(f"hub refusals: {dict((k, v) for k, v in counters.items() if k != 'duplicates')}; "
                  f"CPU per flood datagram ≈ {extra_us:.1f} µs (wall difference of the phases)")
    return flooded.delivered >= flooded.sent - 2 and flooded.percentile(0.99) <= quiet.percentile(0.99) + 1.0


def run_long(hours: float, control_hz: float, results: dict) -> bool:
    seconds = hours * 3600.0
    start = time.perf_counter()
    # progress as bare print() lines: tracemalloc counts every allocation in the process, and rich's
    # rendering (a live bar's refresh thread, or its caches on a first console.print) showed up as
    # 200-600 KiB of "growth"; with plain prints the link's own memory is what is measured
    report = long_run(seconds, control_hz, sample_every_s=min(600.0, seconds / 4),
                      on_progress=lambda t: print(f"  {t / 3600:.2f} h of {hours:g} h virtual, "
                                                  f"{time.perf_counter() - start:.0f} s wall", flush=True))
    wall = time.perf_counter() - start
    table = Table(title=f"{hours:g} h operation, CONTROL at {control_hz:g} Hz (reduced from 1 kHz), virtual time")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [("wall time", f"{wall:.0f} s ({seconds / wall:.0f}x real time, tracemalloc on)"),
            ("CONTROL sent / delivered", f"{report.sent} / {report.delivered}"),
            ("longest gap between deliveries", f"{1000 * report.longest_delivery_gap_s:.0f} ms"),
            ("rekeys / longest interval", f"{report.rekeys} / {report.max_rekey_interval_s:.2f} s"),
            ("memory first / last sample", f"{report.memory_samples_kib[0][1]:.0f} / "
                                           f"{report.memory_samples_kib[-1][1]:.0f} KiB"),
            ("growth after warm-up / peak", f"{report.memory_growth_kib:.1f} KiB / {report.peak_kib:.0f} KiB")]
    rows += [(name, f"{fraction:.2e} used") for name, fraction in report.wrap_fractions.items()]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    results["long"] = {"hours": hours, "control_hz": control_hz, "wall_s": wall, "sent": report.sent,
                       "delivered": report.delivered, "rekeys": report.rekeys,
                       "max_rekey_interval_s": report.max_rekey_interval_s, "peak_kib": report.peak_kib,
                       "memory_samples_kib": report.memory_samples_kib, "wrap": report.wrap_fractions}
    return report.max_rekey_interval_s <= 120.5 and report.memory_growth_kib < 256


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("fuzz", "amp", "flood", "long", "all"), default="all",
                        help="all = fuzz, amp and flood (long is its own mode: minutes)")
    parser.add_argument("-n", type=int, default=1_000_000, help="fuzz datagrams per target (default 10^6)")
    parser.add_argument("--hours", type=float, default=4.0, help="long mode: virtual hours (default 4)")
    parser.add_argument("--control-hz", type=float, default=20.0, help="long mode: CONTROL rate (default 20 Hz)")
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    args = parser.parse_args()
    results: dict = {}
    ok = True
    if args.mode in ("fuzz", "all"):
        ok &= run_fuzz(args.n, results)
    if args.mode in ("amp", "all"):
        ok &= run_amp(results)
    if args.mode in ("flood", "all"):
        ok &= run_flood(results)
    if args.mode == "long":
        ok &= run_long(args.hours, args.control_hz, results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    console.print("[green]all checks passed[/green]" if ok else "[red]some checks failed (see above)[/red]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
