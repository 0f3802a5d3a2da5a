"""`telesurg observe --connect tcp/HOST:7447 [--site robot]`: watch a site's live broadcast.

Opens the stereo picture (the console's pygame window, video/display.py) and a rich status view
(arms, link paths, alarms, safety events, picture rate and latency). `--headless --report F` runs
without a window or live view and writes a JSON report (for tests and benchmarks). An observer is
a Zenoh subscriber only: it holds no link keys and cannot send anything to the robot.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table

from telesurg.broadcast.zconfig import BroadcastConfigError, quiet_logs

DISPLAY_HZ = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connect", action="append", required=True, metavar="ENDPOINT",
                        help="the broadcast router, e.g. tcp/127.0.0.1:7447 (repeatable)")
    parser.add_argument("--site", default="robot", help="which site to watch (its configured name; default robot)")
    parser.add_argument("--zenoh-config", type=Path, metavar="F",
                        help="Zenoh JSON5 config (TLS, user/password); the flags override it")
    parser.add_argument("--headless", action="store_true", help="no window, no live view (decode and measure)")
    parser.add_argument("--no-decode", action="store_true", help="do not decode the picture (headers only)")
    parser.add_argument("--report", type=Path, help="write a JSON report here on exit")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: until SIGINT)")
    parser.add_argument("--wall-clock", action="store_true",
                        help="latency from the site's UNIX time (another machine, NTP) instead of the shared "
                             "monotonic clock (same machine)")
    parser.add_argument("--display-mode", default="side_by_side",
                        help="side_by_side, top_bottom, anaglyph, left or right ('m' cycles)")


def status_view(report: dict[str, Any], state: Any) -> Group:
    video = Table(title="picture", title_justify="left")
    for column in ("eye", "frames", "fps", "missing", "decoded", "latency p50 ms", "p99 ms"):
        video.add_column(column, justify="right")
    for eye, r in report["video"].items():
        lat = r["latency_ms"]
        video.add_row(eye, str(r["frames"]), f"{r['fps']:.1f}", str(r["missing"]), str(r["decoded"]),
                      str(lat["p50"]), str(lat["p99"]))
    arms = Table(title="arms", title_justify="left")
    for column in ("arm", "supervisor", "operating", "owner", "x mm", "y mm", "z mm", "jaw rad"):
        arms.add_column(column, justify="right")
    for name, t in sorted(state.telemetry.items()):
        x, y, z = (1000.0 * v for v in t["position_m"])
        arms.add_row(name, t["supervisor_state"], t["operating_state"], str(t["owner"]), f"{x:.1f}", f"{y:.1f}",
                     f"{z:.1f}", f"{t['jaw_rad']:.2f}")
    paths = Table(title="link paths", title_justify="left")
    for column in ("peer", "path", "state", "rtt ms", "jitter ms", "loss %"):
        paths.add_column(column, justify="right")
    for peer, per_path in sorted(state.paths.items()):
        for name, p in sorted(per_path.items()):
            paths.add_row(peer, name, p["state"], str(p["rtt_ms"]), str(p["jitter_ms"]), str(p["loss_pct"]))
    events = Table(title="alarms and safety events (latest)", title_justify="left")
    events.add_column("kind")
    events.add_column("detail")
    for key, alarm in sorted(state.alarms.items()):
        if alarm.get("active"):
            events.add_row(f"alarm {alarm.get('severity')}", f"{key}: {alarm.get('message')}")
    for e in list(state.safety)[-6:]:
        detail = ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("v", "kind", "site", "t", "t_wall"))
        events.add_row(e["kind"], detail)
    footer = (f"malformed {report['malformed_total']}  dropped here {report['dropped_local']}  "
              f"router {'connected' if report['connected'] else 'LOST (reconnecting)'}  "
              f"reconnects {report['router_regained']}")
    return Group(video, arms, paths, events, footer)


def run(args: argparse.Namespace) -> int:
    quiet_logs("off")
    from telesurg.broadcast.observer import ObserverSession

    try:
        observer = ObserverSession(args.connect, args.site, decode=not args.no_decode,
                                   zenoh_config=args.zenoh_config, wall_clock=args.wall_clock)
    except (BroadcastConfigError, ValueError) as exc:
        print(f"telesurg observe: {exc}")
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        if args.headless:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                if observer.poll() == 0:
                    stop.wait(0.002)
        else:
            _interactive(observer, args, stop, deadline)
    finally:
        report = observer.report()
        observer.close()
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=1))
    lat = report["latency_ms"]
    print(f"observe: {report['video']['left']['frames']}+{report['video']['right']['frames']} frames "
          f"(fps {report['fps']['left']}/{report['fps']['right']}), latency p50 {lat['p50']} ms p99 {lat['p99']} ms, "
          f"{report['malformed_total']} malformed")
    return 0


def _interactive(observer: Any, args: argparse.Namespace, stop: threading.Event, deadline: float | None) -> None:
    from av.video.reformatter import VideoReformatter

    from telesurg.video.display import StereoDisplay

    window = None
    to_rgb = (VideoReformatter(), VideoReformatter())
    shown: list[Any] = [None, None]
    next_draw = 0.0
    with Live(refresh_per_second=4, transient=False) as live:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            if observer.poll() == 0:
                stop.wait(0.002)
            now = time.monotonic()
            if now < next_draw:
                continue
            next_draw = now + 1.0 / DISPLAY_HZ
            left, right = observer.latest
            if left is not None and (left is not shown[0] or right is not shown[1]):
                if window is None:
                    window = StereoDisplay(2 * left.picture.width, left.picture.height, args.display_mode,  # type: ignore[arg-type]
                                           title=f"telesurg observer: {args.site}")
                window.show(left.rgb(to_rgb[0]), right.rgb(to_rgb[1]) if right is not None else None)
                shown = [left, right]
            if window is not None and "quit" in window.poll():
                break
            live.update(status_view(observer.report(), observer.state))
    if window is not None:
        window.close()
