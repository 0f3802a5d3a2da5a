"""Output of bench/peers.py: the terminal table and the plot of the path cut."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

RATE_HZ = 1000


def _fmt(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(results: dict[str, Any], profile: str, base_ms: float) -> Table:
    out = Table(title=f"{RATE_HZ} Hz two-arm servo stream over emulated paths ({profile}); "
                      f"latency beyond path a's {base_ms:g} ms, in ms")
    for column in ("system", "paths", "cmd/s", "p50", "p99", "max", "age p99", "cut: lost", "cut: gap",
                   "1% loss: lost", "gap", "p99", "30ms jit: gap", "p99", "CPU µs/cmd"):
        out.add_column(column, justify="right")
    for name, r in results.items():
        if "paths" not in r:
            out.add_row(name, *["–"] * 13, "[red]failed")
            continue
        ph = r["phases"]
        steady, cut, outage, loss, jit = (ph.get(k, {}) for k in ("steady", "cut", "cut_outage", "loss", "jitter"))
        out.add_row(
            name, "+".join(r["paths"]) + f" {r['transport']}",
            _fmt(steady.get("delivered_per_s"), 0),
            *(_fmt((steady.get("excess_ms") or {}).get(k), 2) for k in ("p50", "p99", "max")),
            _fmt((steady.get("newest_age_excess_ms") or {}).get("p99"), 1),
            str(outage.get("lost", "–")), _fmt(cut.get("longest_gap_ms"), 0),
            str(loss.get("lost", "–")), _fmt(loss.get("longest_gap_ms"), 0),
            _fmt((loss.get("excess_ms") or {}).get("p99"), 1),
            _fmt(jit.get("longest_gap_ms"), 0), _fmt((jit.get("excess_ms") or {}).get("p99"), 1),
            _fmt(steady.get("cpu_us_per_delivered"), 0))
    return out


def plot(results: dict[str, Any], schedule: Any, path: Path) -> None:
    """Latency by send time through the cut (log scale) and commands delivered per 50 ms, per system."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    bin_s = 0.05
    start = -schedule.cut_before
    edges = np.arange(start, schedule.cut + schedule.cut_after + bin_s, bin_s)
    for name, r in results.items():
        trace = r.get("cut_trace")
        if not trace:
            continue
        sent, latency = np.asarray(trace["sent_s"]), np.asarray(trace["latency_ms"], dtype=float)
        breaks = np.flatnonzero(np.diff(sent) > 0.02) + 1  # no line across a stretch with nothing delivered
        sent, latency = np.insert(sent, breaks, np.nan), np.insert(latency, breaks, np.nan)
        sparse = np.count_nonzero(~np.isnan(sent)) < 500
        top.plot(sent, latency, lw=0.9, marker="o" if sparse else None, ms=2.5, label=name)
        counts, _ = np.histogram(np.asarray(trace["received_s"]), bins=edges)
        bottom.step(edges[:-1], counts / bin_s, where="post", lw=0.9, label=name)
    for ax in (top, bottom):
        ax.axvspan(0.0, schedule.cut, color="0.85", zorder=0)
        ax.grid(alpha=0.3)
    top.set_yscale("log")
    top.set_ylabel("one-way latency (ms, by send time)")
    top.set_title(f"path a cut for {schedule.cut:g} s (shaded); telesurg also has path b")
    top.legend(fontsize=8, ncol=3)
    bottom.set_ylim(0, 2500)
    bottom.set_ylabel("commands delivered / s\n(50 ms bins; bursts clipped)")
    bottom.set_xlabel("time from the cut (s)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
