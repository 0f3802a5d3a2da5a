"""`telesurg qualify`: a pre-operative test session against a running `telesurg robot`, or (`--demo`)
against a robot subprocess over emulated paths on this machine, ending in a go / no-go report.

Exit status: 0 go, 1 no-go, 2 error (bad configuration, no link, a crash).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from telesurg.apps.emulated import site_command, start_emulated_link
from telesurg.link.driver import install_uvloop
from telesurg.netem.errors import NetemConfigError
from telesurg.netem.profiles import load_profile
from telesurg.netem.relay import PathRelay
from telesurg.netem.scenario import load_scenario
from telesurg.qualify import report as report_mod
from telesurg.qualify.runner import Plan, QualifyClient, run_phases
from telesurg.qualify.thresholds import ThresholdError, load_thresholds
from telesurg.qualify.verdict import NOT_RUN, judge, overall
from telesurg.site_config import ConfigError, ConsoleSiteConfig, load_config

QUICK = {"network_s": 4.0, "load_s": 3.0, "failover_hold_s": 1.0}


class EmulatorSwitch:
    """Demo mode: the netem relay takes the path away (both directions) and gives it back."""

    def __init__(self, relays: dict[str, PathRelay]) -> None:
        self.relays = relays

    async def cut(self, path: str) -> float:
        now = time.monotonic()
        self.relays[path].path.down(asyncio.get_running_loop().time())
        self.relays[path].rearm()
        return now

    async def restore(self, path: str) -> float:
        now = time.monotonic()
        self.relays[path].path.up()
        self.relays[path].rearm()
        return now


class GuidedSwitch:
    """Real networks: the engineer pulls the path; the link's DOWN/UP reports detect it."""

    def __init__(self, console: Console) -> None:
        self.console = console

    async def cut(self, path: str) -> None:
        self.console.print(f"[bold yellow]>>> Disconnect path {path} now[/] (unplug it or shut its interface); "
                           "waiting for the link to report it DOWN …")

    async def restore(self, path: str) -> None:
        self.console.print(f"[bold green]>>> Reconnect path {path} now[/]; waiting for the link to report it UP …")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="console.toml of this site (not needed with --demo)")
    parser.add_argument("--demo", action="store_true", help="robot subprocess + emulated paths on this machine")
    parser.add_argument("--profile", default="shanghai-casablanca", help="netem profile for --demo")
    parser.add_argument("--scenario", help="netem scenario (TOML timeline) played during a --demo session")
    parser.add_argument("--duration", type=float, help="seconds for each of the network and load phases (default 20)")
    parser.add_argument("--quick", action="store_true", help="short phases (a few seconds each), e.g. for CI")
    parser.add_argument("--out", type=Path, default=Path("qualify-reports"), help="folder for JSON + HTML reports")
    parser.add_argument("--thresholds", type=Path, help="TOML overriding the go/no-go limits (see thresholds.py)")
    parser.add_argument("--robot-checks", action="store_true", help="homing, sweep, watchdog, e-stop, video")
    parser.add_argument("--no-failover", action="store_true", help="skip the failover drill")
    parser.add_argument("--probe-hz", type=float, default=200.0, help="link probes per second per path")
    parser.add_argument("--seed", type=int, default=1, help="emulator seed for --demo")
    parser.add_argument("--verbose", action="store_true", help="show the robot subprocess's output (--demo)")


def _plan(args: argparse.Namespace, config: ConsoleSiteConfig, watchdog_limit_ms: float) -> Plan:
    times: dict[str, float] = dict(QUICK) if args.quick else {}
    if args.duration is not None:
        times.update(network_s=args.duration, load_s=args.duration)
    video_kbps = float(config.video.bitrate_kbps) if config.video.enabled else 0.0
    return Plan(control_hz=config.console.rate_hz, video_kbps=video_kbps, failover=not args.no_failover,
                robot_checks=args.robot_checks, watchdog_limit_ms=watchdog_limit_ms, **times)


class _Progress:
    """One rich status line per phase; plain lines when stdout is not a terminal."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._last: tuple[str, int] = ("", -1)

    def __call__(self, label: str, fraction: float) -> None:
        step = int(fraction * 4)
        if (label, step) != self._last:
            self._last = (label, step)
            self.console.print(f"  {label}: {min(100, 25 * step)} %", style="dim")


async def _session(args: argparse.Namespace, config: ConsoleSiteConfig, console: Console,
                   relays: dict[str, PathRelay] | None) -> tuple[QualifyClient, dict[str, Any]]:
    client = QualifyClient(config, args.probe_hz)
    await client.endpoint.start()
    try:
        console.print("connecting to the robot (mutual TLS on every path) …")
        try:
            await client.endpoint.wait_established(30.0)
        except TimeoutError:
            raise RuntimeError("no link to the robot within 30 s: is `telesurg robot` running and reachable?") \
                from None
        console.print(f"link established with {client.endpoint.core.peer_name}")
        switch = EmulatorSwitch(relays) if relays is not None else GuidedSwitch(console)
        figures = await run_phases(client, _plan(args, config, args.thresholds_model.watchdog_hold_ms), switch, _Progress(console), console.print)
        return client, figures
    finally:
        await client.endpoint.close()


async def _demo(args: argparse.Namespace, workdir: Path, console: Console) -> tuple[QualifyClient, dict[str, Any]]:
    profile = load_profile(args.profile)
    scenario = load_scenario(args.scenario) if args.scenario else None
    try:
        link = await start_emulated_link(profile, workdir, seed=args.seed, scenario=scenario)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    relays, robot_toml, console_toml = link.relays, link.robot_toml, link.console_toml
    robot_report = workdir / "robot.json"
    video = [] if args.robot_checks else ["--no-video"]  # the video check needs the endoscope streaming
    robot = subprocess.Popen(site_command("robot", robot_toml, robot_report, video),
                             stdout=None if args.verbose else subprocess.DEVNULL,
                             stderr=None if args.verbose else subprocess.DEVNULL)
    try:
        client, figures = await _session(args, load_config(console_toml, ConsoleSiteConfig), console, relays)
    finally:
        if robot.poll() is None:
            robot.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(robot.wait, 20.0)
        except subprocess.TimeoutExpired:
            robot.kill()
        figures_relays = await link.close()
    figures["demo"] = {"profile": profile.name, "relays": figures_relays}
    if robot_report.exists():
        import json

        robot_data = json.loads(robot_report.read_text())
        figures.setdefault("robot", {})["safety_violations"] = robot_data["safety"]["violations"]
        figures["robot"]["holds"] = robot_data["safety"]["holds"]
    return client, figures


def _summary(console: Console, report: dict[str, Any]) -> None:
    table = Table(title=f"qualification: {report['verdict'].upper()}")
    for col in ("criterion", "measured", "limit", "status"):
        table.add_column(col)
    colours = {"go": "green", "warn": "yellow", "no-go": "bold red", NOT_RUN: "dim"}
    for c in report["criteria"]:
        measured = "—" if c["measured"] is None else f"{c['measured']} {c['unit']}"
        limit = "—" if c["limit"] is None else f"{c['limit']} {c['unit']}"
        table.add_row(c["name"], measured, limit, f"[{colours[c['status']]}]{c['status']}[/]")
    console.print(table)


def run(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    try:
        thresholds = args.thresholds_model = load_thresholds(args.thresholds)
        if not args.demo and args.config is None:
            raise ConfigError("give --config console.toml (a running `telesurg robot` on the other end) or --demo")
    except (ThresholdError, ConfigError) as exc:
        console.print(f"telesurg qualify: {exc}")
        return 2
    install_uvloop()
    started = datetime.datetime.now().astimezone()
    t_start = time.monotonic()
    earlier = report_mod.history(args.out)
    try:
        with contextlib.ExitStack() as stack:
            if args.demo:
                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="telesurg-qualify-")))
                client, figures = asyncio.run(_demo(args, workdir, console))
                mode = f"demo ({args.profile})"
            else:
                config = load_config(args.config, ConsoleSiteConfig)
                client, figures = asyncio.run(_session(args, config, console, None))
                mode = f"site {config.site.name}"
    except (ConfigError, NetemConfigError, RuntimeError, OSError) as exc:
        console.print(f"telesurg qualify: {exc}")
        return 2
    criteria = judge(figures, thresholds)
    report: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"), "mode": mode,
        "duration_s": round(time.monotonic() - t_start, 3),
        "verdict": overall(criteria), "criteria": [c.as_dict() for c in criteria],
        "not_run": [c.name for c in criteria if c.status == NOT_RUN],
        "thresholds": thresholds.model_dump(), "figures": figures, "history": earlier,
        "malformed_replies": client.malformed,
    }
    stem = base = report_mod.PREFIX + started.strftime("%Y%m%d-%H%M%S")
    for n in range(2, 100):  # two sessions started in the same second keep both reports
        if not (args.out / f"{stem}.json").exists():
            break
        stem = f"{base}-{n}"
    images = report_mod.plots(client.session, min((t for _, t in client.session.marks), default=0.0))
    json_path, html_path = report_mod.write_outputs(args.out, stem, report, images)
    _summary(console, report)
    console.print(f"report: {html_path} (figures: {json_path})")
    return 0 if report["verdict"] == "go" else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(2)
