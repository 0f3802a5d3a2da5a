"""What the dashboard costs a 1 kHz thread in the same process (the robot's servo loop, the console's ticker).

    python bench/dashboard_cost.py [--rounds 3] [--block 5] [--idle-poll] [--no-picture] [--json F]

One process, as a robot site is: a scripted robot site publishes real records into the tap
(dashboard/sample_feed.py: 2,000 CommandJudged/s, 100 Hz telemetry, 4 Hz path figures, H.264 stereo
640x360 at 15 fps, encoded before the run and replayed: a robot site encodes in a child process), and a 1 kHz deadline loop with the servo loop's GIL switch interval (0.2 ms)
measures how late each period starts, under SCHED_FIFO where allowed, as the servo loop runs. Blocks
alternate: no dashboard, then the dashboard attached with one page open (a WebSocket client in
another process, like a browser, receiving the JSON updates and the JPEG preview), so machine noise
hits both alike. The first second after attaching (the server starting: once, when a site starts)
and the first second of the page (connecting, its snapshot, the decoder opening) are rows of their
own: the ratio compares the steady blocks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from telesurg.dashboard import attach_dashboard
from telesurg.dashboard.sample_feed import SampleRobotSite
from telesurg.idle_poll import KeepCpusAwake
from telesurg.realtime import ROBOT_LINK_PRIORITY, SERVO_PRIORITY, request_realtime, settle_garbage_collector
from telesurg.tap import Tap

SWITCH_INTERVAL_S = 0.0002  # robot/servo.py's
STARTING, OPENING = "dashboard starting", "page opening"  # the first second of each: shown apart
OPENING_S = 1.0
PAGE = """
import asyncio, sys, aiohttp
async def main():
    async with aiohttp.ClientSession() as s, s.ws_connect(sys.argv[1]) as ws:
        async for m in ws:
            pass
asyncio.run(main())
"""


class Ticker:
    """1 kHz deadline loop; `lateness` collects how late each period began (seconds), per block label."""

    def __init__(self) -> None:
        self.label = "warm-up"
        self.realtime = False
        self.lateness: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        self.realtime = request_realtime(SERVO_PRIORITY)  # as the servo loop does (robot/servo.py)
        period, due = 0.001, time.monotonic()
        while not self._stop.is_set():
            due += period
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            now = time.monotonic()
            self.lateness.setdefault(self.label, []).append(now - due)
            if now - due > 0.05:  # a long stall: start again from now, as the servo loop skips
                due = now


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--block", type=float, default=5.0, help="seconds per block")
    parser.add_argument("--no-picture", action="store_true",
                        help="the dashboard without its endoscope picture (separates the decoding's share)")
    parser.add_argument("--idle-poll", action="store_true",
                        help="keep idle CPUs awake, as `telesurg demo` and the observers bench do (telesurg/idle_poll.py)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    console = Console()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    awake = KeepCpusAwake() if args.idle_poll else None
    if awake is not None and not awake.start():
        console.print("[yellow]--idle-poll: could not keep the CPUs awake; measuring without")
    tap = Tap("casablanca-robot")
    feed = SampleRobotSite(tap, video_replay_s=8.0).start()  # encoded up front: a site encodes in a child process
    # the feed's thread stands for the robot's link and servo threads, which publish under SCHED_FIFO
    request_realtime(ROBOT_LINK_PRIORITY, feed._thread)
    settle_garbage_collector()  # as the sites do once started (realtime.py): no full collection of start-up objects
    ticker = Ticker()
    ticker.start()
    time.sleep(2.0)
    cpu: dict[str, list[float]] = {"dashboard": [], "feed": []}
    try:
        for round_ in range(args.rounds):
            console.print(f"round {round_ + 1}/{args.rounds}")
            ticker.label = "no dashboard"
            time.sleep(args.block)
            ticker.label = STARTING
            server = attach_dashboard(tap, "127.0.0.1:0", role="robot", video=not args.no_picture)
            time.sleep(OPENING_S)
            ticker.label = OPENING
            page = subprocess.Popen([sys.executable, "-c", PAGE, server.url + "ws"])
            time.sleep(OPENING_S)
            ticker.label = "dashboard + 1 page"
            cpu0, feed0, wall0 = server.cpu_s, server.feed_cpu_s, time.monotonic()  # the steady block only:
            time.sleep(args.block)  # not the process's start-up (imports), which is not a running cost
            wall = time.monotonic() - wall0
            cpu["dashboard"].append(100 * (server.cpu_s - cpu0) / wall)
            cpu["feed"].append(100 * (server.feed_cpu_s - feed0) / wall)
            page.terminate()
            page.wait()
            ticker.label = "closing"
            server.close()
    finally:
        ticker.stop()
        feed.close()
        if awake is not None:
            awake.stop()
    table = Table(title="1 kHz loop lateness, same process (2-vCPU VM)")
    for column in ("condition", "periods", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "> 2 ms"):
        table.add_column(column, justify="right" if column != "condition" else "left")
    results = {}
    for label in ("no dashboard", "dashboard + 1 page", STARTING, OPENING):
        late = np.asarray(ticker.lateness.get(label, [0.0])) * 1e6
        row = {"periods": int(late.size), "p50_us": float(np.percentile(late, 50)),
               "p99_us": float(np.percentile(late, 99)), "p999_us": float(np.percentile(late, 99.9)),
               "max_us": float(late.max()), "over_2ms": int((late > 2000).sum())}
        results[label] = row
        table.add_row(label, str(row["periods"]), f"{row['p50_us']:.0f}", f"{row['p99_us']:.0f}",
                      f"{row['p999_us']:.0f}", f"{row['max_us']:.0f}", str(row["over_2ms"]))
    console.print(table)
    base, board = results["no dashboard"], results["dashboard + 1 page"]
    console.print(f"p99 ratio {board['p99_us'] / base['p99_us']:.2f}x, max ratio {board['max_us'] / base['max_us']:.2f}x; "
                  f"dashboard {np.mean(cpu['dashboard']):.1f} % of a core (its process + the feed thread), of which the "
                  f"feed thread in this process {np.mean(cpu['feed']):.1f} %; "
                  f"1 kHz loop {'SCHED_FIFO' if ticker.realtime else 'normal priority (SCHED_FIFO refused)'}; "
                  f"idle CPUs {'kept awake' if awake is not None and awake.method else 'halting'}")
    results["dashboard_cpu_pct"] = float(np.mean(cpu["dashboard"]))
    results["feed_thread_cpu_pct"] = float(np.mean(cpu["feed"]))
    results["loop_realtime"] = ticker.realtime
    results["idle_poll"] = bool(awake is not None and awake.method)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
