"""Do N observers, or an open dashboard page, move the robot's servo loop? Measured inside one robot
run, in alternating blocks.

    flock /tmp/telesurg-heavy.lock python bench/observers_blocks.py [--observers 100] [--cycles 3]
                                          [--block 8] [--size 1280x720] [--load observers|page] [--json F]

`--load page`: the robot serves its dashboard (`--dashboard`), and the blocks alternate one page open
(a WebSocket client in another process, as a browser: the JSON updates and the JPEG picture, whose
decoding runs only while a page is open) and none. The dashboard's feed thread runs in both.

Why a second observers bench: bench/observers.py compares separate runs, and on this VM the servo
loop's p99 lateness moves by 2x between two runs of the same configuration (no broadcast at all gave
98 and 334 µs), more than the 1.2x it tests. Here one robot site (`telesurg robot --broadcast`, the
1280x720 stereo test pattern, idle CPUs kept awake, `--servo-trace`) and one console (scripted
rings) run once, with the router up all along; N observers (nice 19, as in bench/observers.py) are
started, measured for `--block` seconds, stopped, and the same time is measured without them, for
`--cycles` cycles. Observer start-up and shutdown fall between blocks and are not counted. The robot's
trace (each servo period's start and lateness) is split by the blocks' times (same machine, same
time.monotonic), so VM noise hits both conditions alike.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from telesurg.apps.emulated import site_command
from telesurg.child_process import interrupt_or_kill

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard_cost import PAGE  # noqa: E402  (a WebSocket client, as a browser's page is)
from observers import VIDEO_FPS, cpu_placement, site_pair, start_pools, start_router  # noqa: E402

TARGET_RATIO = 1.2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def p99_us(values: np.ndarray) -> float:
    return float(np.percentile(values, 99) * 1e6) if values.size else float("nan")


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="telesurg-obs-blocks-") as tmp:
        work = Path(tmp)
        robot_toml, console_toml, endpoint = site_pair(work)
        trace_file, following = work / "servo.npy", work / "following"
        log = (work / "aux.log").open("w")
        blocks: list[tuple[str, float, float]] = []
        processes: dict[str, subprocess.Popen[Any]] = {}
        fanout_cpus, site_cpus = cpu_placement(args.placement)
        on_site_cpus = ["--cpus", site_cpus] if site_cpus else []
        port = free_port()
        board = ["--dashboard", f"127.0.0.1:{port}"] if args.load == "page" else []
        label = "1 page" if args.load == "page" else str(args.observers)
        args.label = label
        try:
            processes["router"] = start_router(endpoint, log, fanout_cpus)
            processes["robot"] = subprocess.Popen(site_command("robot", robot_toml, work / "robot.json", [
                "--video-source", "test-pattern", "--video-fps", str(VIDEO_FPS), "--video-size", args.size,
                "--idle-poll", "--broadcast", endpoint, "--servo-trace", str(trace_file), *board, *on_site_cpus]),
                stdout=log, stderr=subprocess.STDOUT)
            processes["lead"] = subprocess.Popen(site_command("console", console_toml, work / "console.json", [
                "--rings", str(args.rings), "--no-video", "--no-live", "--following-file", str(following),
                *on_site_cpus]),
                stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 60.0
            while not following.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not following.exists():
                raise SystemExit("the console never followed; see the sites' log:\n"
                                 + (work / "aux.log").read_text(errors="replace")[-2000:])
            time.sleep(2.0)
            for cycle in range(args.cycles):
                if processes["lead"].poll() is not None:
                    break
                if args.load == "page":
                    loads = [subprocess.Popen([sys.executable, "-c", PAGE, f"http://127.0.0.1:{port}/ws"],
                                              stdout=log, stderr=subprocess.STDOUT)]
                    time.sleep(2.0)  # the snapshot, and the picture from the stream's next intra refresh
                else:
                    loads = [process for process, _ in start_pools(endpoint, args.observers, work, log,
                                                                    solo_last=False, cpus=fanout_cpus)]
                    time.sleep(1.0)  # the observers' sessions settle before the block counts
                start = time.monotonic()
                time.sleep(args.block)
                blocks.append((label, start, time.monotonic()))
                for process in loads:
                    interrupt_or_kill(process)
                time.sleep(1.0)
                start = time.monotonic()
                time.sleep(args.block)
                blocks.append(("0", start, time.monotonic()))
                console.print(f"cycle {cycle + 1}/{args.cycles} measured")
        finally:
            for name in ("lead", "robot", "router"):
                if name in processes:
                    interrupt_or_kill(processes[name])
            log.close()
        if not trace_file.exists():
            raise SystemExit("the robot wrote no servo trace:\n" + (work / "aux.log").read_text(errors="replace")[-2000:])
        trace = np.load(trace_file)
        robot = json.loads((work / "robot.json").read_text())
    started, late = trace[:, 0], trace[:, 1]
    by_block = []
    for label, a, b in blocks:
        inside = late[(started >= a) & (started < b)]
        by_block.append({"load": label, "periods": int(inside.size), "p99_us": p99_us(inside),
                         "max_us": float(inside.max() * 1e6) if inside.size else None})
    pooled = {}
    for label in (args.label, "0"):
        mask = np.zeros(started.shape, dtype=bool)
        for lab, a, b in blocks:
            if lab == label:
                mask |= (started >= a) & (started < b)
        pooled[label] = {"periods": int(mask.sum()), "p50_us": float(np.percentile(late[mask], 50) * 1e6),
                         "p99_us": p99_us(late[mask]), "max_us": float(late[mask].max() * 1e6),
                         "over_2ms": int((late[mask] > 0.002).sum())}
    return {"blocks": by_block, "pooled": pooled, "holds": len(robot["safety"]["holds"]),
            "violations": robot["safety"]["violations"], "load": args.label, "size": args.size,
            "placement": args.placement}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--observers", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--block", type=float, default=8.0, help="seconds measured per block")
    parser.add_argument("--rings", type=int, default=6, help="the console's task (it must outlast the cycles)")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--placement", choices=("shared", "apart"), default="shared",
                        help="apart: the router and the observers on the last CPU, the sites on the others")
    parser.add_argument("--load", choices=("observers", "page"), default="observers",
                        help="what the blocks switch on and off: N observers, or one dashboard page")
    parser.add_argument("--json", type=Path, default=Path("observers_blocks.json"))
    args = parser.parse_args()
    console = Console()
    result = run(args, console)
    table = Table(title=f"servo lateness in alternating blocks, one robot run ({args.size} stereo, placement "
                        f"{args.placement}, 2-vCPU VM)")
    for column in ("load", "periods", "p50 µs", "p99 µs", "max µs", "> 2 ms"):
        table.add_column(column, justify="right")
    for label, row in result["pooled"].items():
        table.add_row(label, str(row["periods"]), f"{row['p50_us']:.0f}", f"{row['p99_us']:.0f}",
                      f"{row['max_us']:.0f}", str(row["over_2ms"]))
    console.print(table)
    console.print("per block p99 µs: " + ", ".join(f"{b['load']}: {b['p99_us']:.0f}" for b in result["blocks"]))
    on, off = result["pooled"][result["load"]], result["pooled"]["0"]
    result["ratio_p99"] = on["p99_us"] / off["p99_us"]
    what = "one dashboard page" if args.load == "page" else f"{args.observers} observers"
    console.print(f"p99 with {what} / without: {result['ratio_p99']:.2f}x (target "
                  f"{TARGET_RATIO}x); holds {result['holds']}, violations {result['violations']}")
    args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
