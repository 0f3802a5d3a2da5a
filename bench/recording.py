"""What black-box recording costs the control path, how much it writes, and what it survives.

    flock /tmp/telesurg-heavy.lock python bench/recording.py [--runs N] [--kills N] [--no-video] [--json F]

(a) overhead: `telesurg demo` (1 ring, the jitter-free shanghai-casablanca copy of
    bench/command_overhead.py, video on) with recording on (the default) and off (`--no-record`),
    interleaved run by run. Figures: end-to-end command overhead p99 (latency - 52.5 ms of path a),
    the robot's kernel -> applied p99, servo lateness p99, each as a ratio on/off of the medians
    (target: within 1.1x), and bytes per minute of recording (both sites, video included).
(b) kill -9: `telesurg init` pair on loopback, the robot recording (`--record`, test-pattern video)
    and a scripted console; the robot's whole process group (site, video process and the recorder's
    writer process, the harshest case) is killed with SIGKILL at a random moment 3-8 s after start,
    `--kills` times. Each file must be readable (telesurg's reader, and the stock `mcap` StreamReader up
    to the cut) and its newest record at most 100 ms older than the kill.
(c) full disk: the demo recording into a 4 MB tmpfs (needs root to mount; skipped otherwise), which
    fills within seconds: the site must not crash, the control figures stay as with recording off, and
    the records lost are counted in the sites' reports.
Run it only under the heavy-run lock (see BRIEF-COMMON.md): it starts real site processes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from command_overhead import PATH_A_ONE_WAY_MS, STEADY_PROFILE  # noqa: E402

CLI = [sys.executable, "-m", "telesurg.cli"]


def demo(workdir: Path, rings: int, video: bool, flags: list[str]) -> dict[str, Any]:
    profile = workdir / "steady.toml"
    profile.write_text(STEADY_PROFILE)
    report = workdir / "report.json"
    report.unlink(missing_ok=True)
    command = [*CLI, "demo", "--no-live", "--profile", str(profile), "--rings", str(rings), "--report", str(report),
               *([] if video else ["--no-video"]), *flags]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if not report.exists():
        raise SystemExit(f"demo wrote no report (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return json.loads(report.read_text())


def figures(report: dict[str, Any]) -> dict[str, Any]:
    record = report.get("record") or {}
    sites = [s for s in (record.get("robot"), record.get("console")) if s]
    minutes = report["duration_s"] / 60.0
    servo = (report.get("robot") or {}).get("servo") or {}
    return {
        "e2e_overhead_p99_ms": round(report["commands"]["latency_ms"]["p99"] - PATH_A_ONE_WAY_MS, 3),
        "robot_apply_p99_ms": report["overhead_ms"]["robot_apply"]["p99"],
        "servo_late_p99_us": round(servo.get("p99_us", 0.0), 1), "servo_missed": servo.get("missed"),
        "holds": len(report["safety"]["holds"]), "violations": report["safety"]["violations"],
        "lost": report["commands"]["lost"],
        "record_bytes_per_min": round(sum(s["bytes"] for s in sites) / minutes) if sites else None,
        "record_bytes": {k: (record.get(k) or {}).get("bytes") for k in ("robot", "console")} if sites else None,
        "record_dropped": sum(s["dropped_total"] for s in sites) if sites else None,
        "record_write_errors": sum(s["write_errors"] for s in sites) if sites else None,
        "cpu_steal_pct": ((report.get("machine") or {}).get("cpu") or {}).get("steal_pct"),
        "duration_s": report["duration_s"],
    }


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def overhead(console: Console, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {"record_on": [], "record_off": []}
    for run in range(args.runs):
        for name, flags in (("record_on", []), ("record_off", ["--no-record"])):
            with console.status(f"(a) run {run + 1}/{args.runs}: demo, {name}"):
                results[name].append(figures(demo(tmp, args.rings, not args.no_video, flags)))
    table = Table(title="(a) recording on vs off: control path figures per run")
    for col in ("config", "e2e p99 ms", "robot apply p99 ms", "servo late p99 us", "missed", "holds", "MB/min",
                "dropped", "steal %"):
        table.add_column(col, justify="right")
    for name, runs in results.items():
        for f in runs:
            mb = "-" if f["record_bytes_per_min"] is None else f"{f['record_bytes_per_min'] / 1e6:.1f}"
            table.add_row(name, f"{f['e2e_overhead_p99_ms']:.2f}", f"{f['robot_apply_p99_ms']:.2f}",
                          f"{f['servo_late_p99_us']:.0f}", str(f["servo_missed"]), str(f["holds"]), mb,
                          str(f["record_dropped"]), str(f["cpu_steal_pct"]))
    console.print(table)
    on, off = results["record_on"], results["record_off"]
    summary = {key: {"on": median(on, key), "off": median(off, key),
                     "ratio": round(median(on, key) / median(off, key), 3) if median(off, key) > 0 else None}
               for key in ("e2e_overhead_p99_ms", "robot_apply_p99_ms", "servo_late_p99_us")}
    summary["record_bytes_per_min"] = median(on, "record_bytes_per_min")
    summary["target_ratio"] = 1.1
    return {"summary": summary, "runs": results}


def read_back(path: Path) -> dict[str, Any]:
    """Newest record time and counts of a (killed) recording, with telesurg's reader and the stock one."""
    from mcap.records import Message
    from mcap.stream_reader import StreamReader

    from telesurg.record.reader import RecordingError, open_recording

    out: dict[str, Any] = {"readable": True, "error": None}
    try:
        rec = open_recording(path)
        newest, n = 0, 0
        for _channel, m in rec.messages():
            newest, n = max(newest, m.log_time), n + 1
        out.update(messages=n, newest_ns=newest, truncated=rec.truncated, closed=rec.closed)
    except RecordingError as exc:
        out.update(readable=False, error=str(exc))
        return out
    stock = 0
    with path.open("rb") as f:
        try:
            for record in StreamReader(f, validate_crcs=True).records:
                stock += isinstance(record, Message)
        except Exception as exc:  # noqa: BLE001 - the cut-off tail ends the stock reader's stream
            out["stock_stopped_by"] = type(exc).__name__
    out["stock_messages"] = stock
    return out


def kills(console: Console, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    sites = tmp / "sites"
    subprocess.run([*CLI, "init", str(sites), "--force"], check=True, capture_output=True)
    rng = random.Random(args.seed)
    runs = []
    for i in range(args.kills):
        record = tmp / f"kill-{i}"
        at = rng.uniform(3.0, 8.0)
        with console.status(f"(b) kill -9 {i + 1}/{args.kills}: robot killed {at:.1f} s after start"):
            robot = subprocess.Popen([*CLI, "robot", "--config", str(sites / "robot.toml"), "--record", str(record),
                                      "--video-source", "test-pattern"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
            consoles = subprocess.Popen([*CLI, "console", "--config", str(sites / "console.toml"), "--no-live",
                                         "--no-video", "--rings", "1", "--connect-timeout", "20"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(at)
            killed_at = time.time()
            os.killpg(robot.pid, signal.SIGKILL)  # the site and its children: video, recording writer
            robot.wait(10)
            consoles.send_signal(signal.SIGINT)
            try:
                consoles.wait(20)
            except subprocess.TimeoutExpired:
                consoles.kill()
                consoles.wait()
        files = sorted(record.glob("robot-*.mcap"))
        result: dict[str, Any] = {"run": i, "kill_after_s": round(at, 2), "files": [str(f) for f in files]}
        if files:
            back = read_back(files[-1])
            result.update(back)
            if back.get("newest_ns"):
                result["lost_ms"] = round(1000.0 * (killed_at - back["newest_ns"] / 1e9), 1)
        else:
            result.update(readable=False, error="no file")
        runs.append(result)
    table = Table(title="(b) kill -9 of the recording robot site")
    for col in ("run", "killed at s", "readable", "messages", "stock reader", "lost ms", "partial tail"):
        table.add_column(col, justify="right")
    for r in runs:
        table.add_row(str(r["run"]), str(r["kill_after_s"]), "yes" if r.get("readable") else f"NO {r.get('error')}",
                      str(r.get("messages")), str(r.get("stock_messages")), str(r.get("lost_ms")),
                      "yes" if r.get("truncated") else "no")
    console.print(table)
    lost = [r["lost_ms"] for r in runs if "lost_ms" in r]
    return {"summary": {"runs": len(runs), "readable": sum(bool(r.get("readable")) for r in runs),
                        "lost_ms_max": max(lost) if lost else None,
                        "lost_ms_median": statistics.median(lost) if lost else None, "target_ms": 100.0},
            "runs": runs}


def full_disk(console: Console, tmp: Path, args: argparse.Namespace, off: list[dict[str, Any]]) -> dict[str, Any]:
    tiny = tmp / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.tiny_mb}m", "tmpfs", str(tiny)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        console.print(f"(c) skipped: cannot mount a tmpfs ({mounted.stderr.strip()}); run as root")
        return {"skipped": mounted.stderr.strip()}
    try:
        with console.status(f"(c) demo recording into a {args.tiny_mb} MB tmpfs"):
            report = demo(tmp, args.rings, not args.no_video, ["--record-dir", str(tiny)])
    finally:
        subprocess.run(["umount", str(tiny)], check=False)
    f = figures(report)
    base = {k: median(off, k) for k in ("e2e_overhead_p99_ms", "robot_apply_p99_ms", "servo_late_p99_us")} \
        if off else {}
    table = Table(title=f"(c) disk full ({args.tiny_mb} MB tmpfs) vs recording off (median of (a))")
    for col in ("figure", "disk full", "recording off", "ratio"):
        table.add_column(col, justify="right")
    for key, value in base.items():
        table.add_row(key, f"{f[key]:.2f}", f"{value:.2f}", f"{f[key] / value:.2f}" if value else "-")
    table.add_row("records dropped (counted)", str(f["record_dropped"]), "-", "-")
    table.add_row("write errors", str(f["record_write_errors"]), "-", "-")
    table.add_row("violations / holds", f"{f['violations']} / {f['holds']}", "-", "-")
    console.print(table)
    alarms = {site: (report["record"].get(site) or {}).get("alarm") for site in ("robot", "console")}
    return {"figures": f, "baseline_off": base, "alarms": alarms,
            "ratios": {k: round(f[k] / v, 3) for k, v in base.items() if v}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="(a) runs of each configuration, interleaved")
    parser.add_argument("--rings", type=int, default=1)
    parser.add_argument("--kills", type=int, default=10, help="(b) kill -9 runs")
    parser.add_argument("--tiny-mb", type=int, default=4, help="(c) size of the full tmpfs")
    parser.add_argument("--no-video", action="store_true")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--only", choices=("overhead", "kill", "full"), action="append",
                        help="run only these parts (default: all)")
    parser.add_argument("--json", type=Path, default=Path("recording.json"))
    args = parser.parse_args()
    parts = set(args.only or ("overhead", "kill", "full"))
    console = Console()
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "video": not args.no_video}
    with tempfile.TemporaryDirectory(prefix="telesurg-recording-") as name:
        tmp = Path(name)
        off: list[dict[str, Any]] = []
        if "overhead" in parts:
            out["overhead"] = overhead(console, tmp, args)
            off = out["overhead"]["runs"]["record_off"]
            console.print(out["overhead"]["summary"])
        if "kill" in parts:
            out["kill"] = kills(console, tmp, args)
            console.print(out["kill"]["summary"])
        if "full" in parts:
            out["full_disk"] = full_disk(console, tmp, args, off)
    args.json.write_text(json.dumps(out, indent=2))
    console.print(f"written {args.json}")


if __name__ == "__main__":
    main()
