"""`telesurg robot`: the command line of the robot site (robot.py holds the site itself)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np

from telesurg.apps import site_extras
from telesurg.apps.common import (
    add_idle_poll_option,
    idle_polling,
    install_stop_signals,
    write_report,
)
from telesurg.apps.robot import RobotSite
from telesurg.apps.robot_local_console import start_local_console
from telesurg.apps.site_extras import SiteExtras
from telesurg.interop.igtl import IgtlServer
from telesurg.link.driver import install_uvloop
from telesurg.realtime import pin_to_option
from telesurg.robot.driver import DRIVER_KINDS
from telesurg.robot.local_console import KeyboardConsole
from telesurg.site_config import ConfigError, RobotSiteConfig, load_config

log = logging.getLogger("telesurg.robot")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="robot.toml (see `telesurg init`)")
    parser.add_argument("--report", type=Path, help="write a JSON report here on exit")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: until SIGINT)")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed (ring placement)")
    parser.add_argument("--force-hz", type=float, help="tool force messages per second (force feedback; "
                        "default: robot.force_hz of the config, 0 = off)")
    parser.add_argument("--audit", type=Path, metavar="DIR",
                        help="write the tamper-evident audit log of safety events here (telesurg audit verify)")
    parser.add_argument("--local-console", action="store_true",
                        help="the patient-side team's console on standard input, one action a line: "
                             + KeyboardConsole.help)
    parser.add_argument("--ready-file", type=Path,
                        help="write this file once the link listens and the servo loop runs (for launchers)")
    parser.add_argument("--record", type=Path, metavar="DIR",
                        help="black-box recording (MCAP, robot-<n>.mcap) of every command, decision, telemetry "
                             "sample, link figure, safety event and video frame (telesurg record info)")
    parser.add_argument("--no-video", action="store_true", help="do not stream the endoscope")
    parser.add_argument("--driver", choices=DRIVER_KINDS, default="mujoco",
                        help="mujoco: the simulated cart (physics, rings, endoscope); kinematic: no physics, "
                             "for hardware-in-the-loop tests (no rings, no endoscope video)")
    parser.add_argument("--igtl", metavar="[HOST]:PORT",
                        help="serve each arm's measured tool pose over OpenIGTLink, read-only (3D Slicer): "
                             ":18944 listens on loopback, 0.0.0.0:18944 on every interface")
    parser.add_argument("--video-source", choices=("sim-endoscope", "test-pattern"),
                        help="override [video] source of the config")
    parser.add_argument("--video-fps", type=float, help="override [video] fps of the config")
    parser.add_argument("--video-size", type=video_size, metavar="WxH",
                        help="override [video] width and height of the config (e.g. 1280x720)")
    parser.add_argument("--cpus", help="run this site on these CPUs only (e.g. 1 or 2-3); video may use any")
    parser.add_argument("--servo-trace", type=Path, metavar="F.npy",
                        help="at exit, write each servo period's start (time.monotonic) and lateness, seconds, "
                             "as an n x 2 numpy array (benchmarks split one run into blocks with it)")
    add_idle_poll_option(parser)
    site_extras.add_arguments(parser)
    parser.add_argument("--log-level", default="WARNING")


def video_size(text: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720); the config's own limits are checked when it is overridden."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: give the picture size as WIDTHxHEIGHT, e.g. 1280x720")
    return int(width), int(height)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s robot %(levelname)s %(message)s")
    try:
        config = load_config(args.config, RobotSiteConfig)
        width, height = args.video_size or (None, None)
        config.video = config.video.overridden(source=args.video_source, fps=args.video_fps, width=width, height=height)
        if args.force_hz is not None:
            config.robot = config.robot.model_copy(update={"force_hz": args.force_hz})
        igtl = IgtlServer(args.igtl) if args.igtl else None  # binds now: a bad address is a one-line error
    except (ConfigError, ValueError) as exc:
        print(f"telesurg robot: {exc}")
        return 2
    if (error := pin_to_option(args.cpus) or site_extras.check(args, config.site.name)) is not None:
        print(f"telesurg robot: {error}")
        return 2
    install_uvloop()

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        install_stop_signals(stop)
        site = RobotSite(config, seed=args.seed, video=False if args.no_video else None, audit_dir=args.audit,
                         driver=args.driver, igtl=igtl, record_dir=args.record)
        site.ready_file = args.ready_file
        if args.servo_trace is not None:
            site.servo.keep_trace()
        if args.local_console:
            start_local_console(site)
        extras = SiteExtras(args, site.tap, site_name=config.site.name, role="robot", video=site.want_video)
        try:
            report = await site.run(args.duration, stop)
        finally:
            extras.close_dashboard()
        if args.servo_trace is not None:
            np.save(args.servo_trace, site.servo.trace())
        extras.close(report)
        if site.audit is not None:
            site.audit.close(report)
            report["audit"] = site.audit.log.stats()
        return report

    with idle_polling(args) as polling:
        report = asyncio.run(main())
    report["idle_poll"] = polling
    write_report(args.report, report)
    violations = report["safety"]["violations"]
    print(f"robot: applied {report['commands']['applied']} commands, {violations} safety violations, "
          f"final state {report['safety']['final_state']}")
    return 1 if violations else 0
