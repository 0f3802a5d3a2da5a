"""Session outputs: a JSON file with every figure, and a self-contained HTML report (plots embedded as
base64 PNG, drawn with matplotlib's Agg backend) that also lists earlier sessions of the same folder."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from telesurg.qualify.analysis import Session  # noqa: E402

PREFIX = "qualify-"


def history(out_dir: Path) -> list[dict[str, Any]]:
    """Earlier sessions in `out_dir` (oldest first): when, mode, verdict and the failed criteria."""
    rows = []
    for path in sorted(out_dir.glob(f"{PREFIX}*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        failed = [c["name"] for c in data.get("criteria", []) if c.get("status") == "no-go"]
        rows.append({"file": path.name, "started": data.get("started"), "mode": data.get("mode"),
                     "verdict": data.get("verdict"), "failed": failed})
    return rows


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(session: Session, t0: float) -> dict[str, str]:
    """Base64 PNGs: RTT over time per path, RTT histograms, loss timeline, failover timeline."""
    paths = session.path_names()
    out = {}
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for p in paths:
        times, rtt = session.rtt_series(p)
        ax.plot([t - t0 for t in times], rtt, ".", markersize=2, label=f"path {p}")
    for label, at in session.marks:
        ax.axvline(at - t0, color="grey", linewidth=0.6)
        ax.text(at - t0, ax.get_ylim()[1], label, fontsize=7, rotation=90, va="top")
    ax.set(xlabel="time (s)", ylabel="RTT (ms)", title="RTT per path (link probes)")
    ax.legend(loc="upper right")
    out["rtt_over_time"] = _png(fig)

    fig, ax = plt.subplots(figsize=(9, 3.2))
    for p in paths:
        _, rtt = session.rtt_series(p)
        if rtt:
            ax.hist(rtt, bins=60, alpha=0.6, label=f"path {p}")
    ax.set(xlabel="RTT (ms)", ylabel="probes", title="RTT distribution per path", yscale="log")
    ax.legend(loc="upper right")
    out["rtt_histogram"] = _png(fig)

    fig, ax = plt.subplots(figsize=(9, 2.4))
    ax.eventplot([[t - t0 for t in session.loss_times(p)] for p in paths] or [[]], lineoffsets=list(range(len(paths)))
                 or [0], linelengths=0.8)
    ax.set_yticks(range(len(paths)), [f"path {p}" for p in paths])
    ax.set(xlabel="time (s)", title="lost probes (timed out) per path")
    out["loss_timeline"] = _png(fig)

    fig, ax = plt.subplots(figsize=(9, 2.6))
    level = {"down": 0, "degraded": 1, "up": 2}
    for i, p in enumerate(paths):
        changes = [c for c in session.path_changes if c.path == p]
        xs = [c.at - t0 for c in changes]
        ys = [level.get(c.new, 0) + 0.05 * i for c in changes]
        if xs:
            ax.step(xs, ys, where="post", label=f"path {p}")
    for label, at in session.marks:
        if label.startswith(("cut", "restore")):
            ax.axvline(at - t0, color="red" if label.startswith("cut") else "green", linewidth=0.8)
            ax.text(at - t0, 2.1, label, fontsize=7, rotation=90, va="bottom")
    ax.set_yticks([0, 1, 2], ["DOWN", "DEGRADED", "UP"])
    ax.set(xlabel="time (s)", title="failover timeline: link path states, cuts (red) and restores (green)")
    if paths:
        ax.legend(loc="lower right")
    out["failover_timeline"] = _png(fig)
    return out


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%}.go{background:#d8f5d8}.warn{background:#fff3c4}
.no-go{background:#f8d0d0}.not_run{background:#eee}h1 span{padding:2px 10px}"""


def _table(headers: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def render_html(report: dict[str, Any], images: dict[str, str]) -> str:
    verdict = report["verdict"]
    crit = report["criteria"]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>telesurg qualification "
             f"{html.escape(report['started'])}</title><style>{_STYLE}</style></head><body>",
             f"<h1>Qualification: <span class='{verdict}'>{verdict.upper()}</span></h1>",
             f"<p>Started {html.escape(report['started'])}, mode {html.escape(report['mode'])}, "
             f"{report['duration_s']:.1f} s. Not run: {html.escape(', '.join(report['not_run']) or 'nothing')}.</p>",
             "<h2>Criteria</h2>",
             _table(["criterion", "measured", "limit", "unit", "status", "detail"],
                    [[c["name"], "—" if c["measured"] is None else c["measured"],
                      "—" if c["limit"] is None else c["limit"], c["unit"], c["status"], c["detail"]] for c in crit],
                    [c["status"] for c in crit])]
    network = report["figures"].get("network")
    if network:
        rows = []
        for p, f in network["paths"].items():
            ow = f["one_way_ms"]
            rows.append([p, f["probes"], f["rtt_ms"]["p50"], f["rtt_ms"]["p99"], f["rtt_ms"]["p999"], f["rtt_ms"]["max"],
                         ow["forward"]["p50"], ow["reverse"]["p50"], f["jitter_ms"]["forward"],
                         f["jitter_ms"]["reverse"], f["loss_pct"], f["loss_bursts"]["max"]])
        parts += ["<h2>Network (per path)</h2>",
                  _table(["path", "probes", "RTT p50", "p99", "p99.9", "max", "fwd p50", "rev p50", "jitter fwd",
                          "jitter rev", "loss %", "max burst"], rows),
                  f"<p>Differential delay (ms): {html.escape(json.dumps(network['differential_ms']))}; clock offset "
                  f"{network['clock_offset_ms']} ms (peer − local).</p>"]
    titles = {"rtt_over_time": "RTT over time", "rtt_histogram": "Latency histograms",
              "loss_timeline": "Loss timeline", "failover_timeline": "Failover timeline"}
    for key, data in images.items():
        parts.append(f"<h2>{titles.get(key, key)}</h2><img alt='{key}' src='data:image/png;base64,{data}'>")
    parts.append("<h2>Earlier sessions in this folder</h2>")
    hist = report.get("history", [])
    parts.append(_table(["file", "started", "mode", "verdict", "failed criteria"],
                        [[h["file"], h["started"], h["mode"], h["verdict"], ", ".join(h["failed"])] for h in hist],
                        [h["verdict"] or "not_run" for h in hist]) if hist else "<p>none</p>")
    parts.append("<h2>All figures</h2><pre>" + html.escape(json.dumps(report["figures"], indent=1)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_outputs(out_dir: Path, stem: str, report: dict[str, Any], images: dict[str, str]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / f"{stem}.json", out_dir / f"{stem}.html"
    json_path.write_text(json.dumps(report, indent=2, default=str))
    html_path.write_text(render_html(report, images))
    return json_path, html_path
