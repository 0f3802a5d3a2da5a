"""`telesurg console`: the command line of the console site (console.py holds the site itself)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from telesurg.apps import site_extras
from telesurg.apps.common import (
    add_idle_poll_option,
    idle_polling,
    install_stop_signals,
    write_report,
)
from telesurg.apps.console import ConsoleSite
from telesurg.apps.console_room import parse_hand_over
from telesurg.apps.site_extras import SiteExtras
from telesurg.console.consult import ConsultantInput
from telesurg.console.haptics.bridge import SimulatedHapticMaster
from telesurg.console.inputs import MasterInput, ScriptedSurgeonInput, ScriptedTaskInput
from telesurg.link.driver import install_uvloop
from telesurg.messages import ArmId
from telesurg.realtime import pin_to_option
from telesurg.site_config import ConfigError, ConsoleSiteConfig, load_config


def parse_arm(name: str) -> ArmId:
    try:
        return ArmId[name.upper()]
    except KeyError:
        raise ValueError(f"--request-arm: unknown arm {name!r}; use one of {[a.name for a in ArmId]}") from None


def make_input(script: str | None, config: ConsoleSiteConfig, rings: int) -> tuple[MasterInput, float | None]:
    """The master input and, for scripts, how long they last."""
    if script is None or script == "peg-transfer":
        from telesurg.robot.peg_transfer import peg_transfer_plan
        from telesurg.robot.scene import default_board

        plan = peg_transfer_plan(default_board(), rings=rings)
        driven = plan.only([arm.name for arm in config.console.arms])
        return ScriptedTaskInput(driven, config.console.scale, config.console.registration_wxyz), plan.duration
    if script == "consult":
        return ConsultantInput(list(config.console.arms), config.console.scale), None
    if script == "keyboard":
        from telesurg.console.human_input import PygameMaster

        return PygameMaster(config.console.arms), None
    surgeon = ScriptedSurgeonInput(Path(script))
    return surgeon, surgeon.duration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="console.toml (see `telesurg init`)")
    parser.add_argument("--script", default="peg-transfer",
                        help="'peg-transfer' (built-in scripted surgeon), 'consult' (takes an arm when handed "
                             "over, draws a small loop, hands it back), 'keyboard', or a trajectory file")
    parser.add_argument("--request-arm", action="append", default=[], metavar="ARM",
                        help="ask the robot for control of ARM (e.g. PSM1) once connected; repeatable")
    parser.add_argument("--hand-over", metavar="ARM@S",
                        help="scripted surgeon: at task time S release ARM (the first waiting console gets "
                             "it) and ask for it back; the script goes on once the arm is ours again")
    parser.add_argument("--rings", type=int, default=6, help="rings the scripted peg transfer moves")
    parser.add_argument("--report", type=Path, help="write a JSON report here on exit")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: end of script)")
    parser.add_argument("--no-video", action="store_true")
    parser.add_argument("--record", type=Path, metavar="DIR",
                        help="black-box recording (MCAP, console-<n>.mcap) of every command sent, telemetry "
                             "sample, link figure, alarm and video frame received (telesurg record info)")
    parser.add_argument("--video-fps", type=float, help="override [video] fps of the config (match the robot's)")
    parser.add_argument("--no-live", action="store_true", help="print a final status instead of a live one")
    parser.add_argument("--following-file", type=Path, help="write this file once every arm is following")
    parser.add_argument("--connect-timeout", type=float, default=15.0, help="seconds to wait for the robot")
    parser.add_argument("--cpus", help="run this site on these CPUs only (e.g. 1 or 2-3); video may use any")
    add_idle_poll_option(parser)
    parser.add_argument("--haptics", action="store_true", help="force feedback on a simulated motorised handle "
                        "around the master input (console/haptics/)")
    site_extras.add_arguments(parser)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--log-file", type=Path, help="log here instead of stderr (keeps the live display clean)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s console %(levelname)s %(message)s",
                        filename=args.log_file)
    try:
        config = load_config(args.config, ConsoleSiteConfig)
        master, script_s = make_input(args.script, config, args.rings)
        if args.haptics:
            master = SimulatedHapticMaster(master)
            config.console = config.console.model_copy(update={"haptics": config.console.haptics.model_copy(
                update={"enabled": True})})
        config.video = config.video.overridden(fps=args.video_fps)
        request_arms = [parse_arm(name) for name in args.request_arm]
        hand_over = parse_hand_over(args.hand_over) if args.hand_over else None
    except (ConfigError, ValueError, OSError) as exc:
        print(f"telesurg console: {exc}")
        return 2
    if (error := pin_to_option(args.cpus) or site_extras.check(args, config.site.name)) is not None:
        print(f"telesurg console: {error}")
        return 2
    # a scripted task runs until performed (time spent in holds extends it), within a generous cap
    duration = args.duration if args.duration is not None else (
        None if script_s is None else 2 * script_s + 30.0)
    install_uvloop()

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        install_stop_signals(stop)
        site = ConsoleSite(config, master, video=False if args.no_video else None, record_dir=args.record)
        site.following_file = args.following_file
        site.request_arms = request_arms
        site.room.hand_over = hand_over
        site.stop_when_done = args.duration is None
        extras = SiteExtras(args, site.tap, site_name=config.site.name, role="console", video=site.want_video)
        try:
            report = await site.run(duration, stop, live=not args.no_live and sys.stdout.isatty(),
                                    connect_timeout=args.connect_timeout)
        finally:
            extras.close_dashboard()
        extras.close(report)
        if site.recorder is not None:
            report["record"] = await asyncio.to_thread(site.recorder.close)
        return report

    with idle_polling(args) as polling:
        report = asyncio.run(main())
    report["idle_poll"] = polling
    write_report(args.report, report)
    if not report["established"]:
        print("console: the robot did not accept this console (see the robot's security report)")
        return 3
    print(f"console: sent {report['commands']['sent']} commands; robot holds seen: {report['holds_seen']}")
    return 0
