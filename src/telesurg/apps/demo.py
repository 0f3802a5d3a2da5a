"""`telesurg demo`: the whole system on one machine, over an emulated intercontinental WAN.

It writes a throw-away site pair (fresh keys), starts the netem relays of the profile (one per path,
console → relay → robot), the robot site (MuJoCo cart, supervisor, servo loop) and the console site
(scripted peg-transfer surgeon) as separate processes, exactly as `telesurg robot` / `telesurg
console` run in two hospitals, then merges their reports with the relays' counters into one JSON.
Exit status 1 if any safety invariant was violated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from telesurg import dashboard
from telesurg.apps.common import IDLE_POLL_HELP, cpu_times, cpu_usage, write_report
from telesurg.apps.demo_report import console_section, merge_reports, summary_lines
from telesurg.apps.emulated import site_command, start_emulated_link
from telesurg.broadcast.site_options import DemoBroadcast
from telesurg.idle_poll import KeepCpusAwake
from telesurg.link.driver import install_uvloop
from telesurg.netem.errors import NetemConfigError
from telesurg.netem.profiles import load_profile
from telesurg.netem.relay import start_scenario
from telesurg.netem.scenario import load_scenario
from telesurg.realtime import split_cpus

ROBOT_STOP_TIMEOUT_S = 20.0
DRAIN_TIMEOUT_S = 2.0  # longest wait for commands still crossing the emulated WAN when the console stops


async def _run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    profile = load_profile(args.profile)
    scenario = load_scenario(args.scenario) if args.scenario else None
    consultants = [load_profile(args.consultant_profile)] * (args.consoles - 1)
    try:
        link = await start_emulated_link(profile, workdir, seed=args.seed, more_consoles=consultants)
    except ValueError as exc:
        raise SystemExit(f"telesurg demo: {exc}") from None
    relays, robot_toml, console_toml = link.relays, link.robot_toml, link.console_toml
    if args.no_video:
        video = robot_video = ["--no-video"]
    else:  # both sites must agree on the frame rate; only the robot has a source
        video = [] if args.video_fps is None else ["--video-fps", str(args.video_fps)]
        robot_video = [*video, "--video-source", args.video_source]
    robot_report, console_report = workdir / "robot.json", workdir / "console.json"
    for stale in (robot_report, console_report):  # never merge a previous run's figures
        stale.unlink(missing_ok=True)
    env = dict(os.environ)
    halves = split_cpus() if args.cpu_split else None
    pollers = KeepCpusAwake() if args.idle_poll else None
    if pollers is not None and not pollers.start():
        pollers = None
    console_cpus, robot_cpus = halves if halves is not None else (None, None)
    robot_log = (workdir / "robot.log").open("w")  # the robot's transition log; the terminal is the console's
    robot_ready = workdir / "robot.ready"
    robot_ready.unlink(missing_ok=True)
    broadcast = DemoBroadcast(args.observers, workdir) if args.observers is not None else None
    boards = dashboard.demo_flags(args.dashboard, args.dashboard_allow)
    if boards["robot"]:
        print(f"dashboards: console http://{boards['console'][1]}/, robot http://{boards['robot'][1]}/", flush=True)
    robot_extra = ["--seed", str(args.seed), "--ready-file", str(robot_ready), *robot_video, *_cpus_flag(robot_cpus),
                   *(broadcast.site_flags() if broadcast is not None else []), *boards["robot"]]
    if args.haptics:
        robot_extra += ["--force-hz", "500"]
    record_dir = _record_dir(args, workdir)
    if record_dir is not None:  # black-box recording of the robot and every console (MCAP)
        robot_extra += ["--record", str(record_dir)]
    robot = subprocess.Popen(site_command("robot", robot_toml, robot_report, robot_extra),
                             env=env, stdout=robot_log, stderr=subprocess.STDOUT)
    if not await _wait_ready(robot, robot_ready):  # as long as it takes a slow machine, while it lives
        await _close_helpers(robot_log, broadcast, link, pollers)
        raise SiteFailed(f"the robot site stopped before it was ready (exit {robot.returncode})\n"
                         + log_tail(workdir / "robot.log"))
    following_marker = workdir / "console.following"
    following_marker.unlink(missing_ok=True)
    console_extra = ["--rings", str(args.rings), "--following-file", str(following_marker), "--connect-timeout", "60",
                     "--log-file", str(workdir / "console.log"), *video]
    if record_dir is not None:
        console_extra += ["--record", str(record_dir)]
    if args.duration is not None:
        console_extra += ["--duration", str(args.duration)]
    if args.haptics:
        console_extra.append("--haptics")
    console_extra += boards["console"]
    if args.consoles > 1:  # the lead hands PSM1 to the consultant mid-task, and gets it back
        console_extra += ["--hand-over", f"PSM1@{_hand_over_time(args.rings):.2f}"]
    if not args.live:
        console_extra.append("--no-live")
    started, cpu_at_start = time.monotonic(), cpu_times()
    console_extra += _cpus_flag(console_cpus)
    console = subprocess.Popen(site_command("console", console_toml, console_report, console_extra), env=env)
    others = _start_consultants(link.console_tomls[1:], workdir, env, record_dir)
    # the emulator (this process) is not pinned: on the console's CPU its packets waited up to 30-40 ms
    # behind the console; unpinned, its real-time threads take whichever CPU has room
    report_extra = {"cpu_split": None if halves is None else {"console": sorted(console_cpus or ()),
                                                              "robot": sorted(robot_cpus or ())}}
    timers: list[asyncio.TimerHandle] = []
    scenario_started = scenario is None
    try:
        while console.poll() is None:
            await asyncio.sleep(0.05)
            if not scenario_started and following_marker.exists():
                # scenario times count from the start of teleoperation, not from process start-up
                assert scenario is not None
                timers = start_scenario(scenario, relays)
                scenario_started = True
            if robot.poll() is not None:
                console.send_signal(signal.SIGINT)
                break
        await asyncio.to_thread(console.wait)
        for other, _ in others:  # the consultants stop with the lead
            other.send_signal(signal.SIGINT)
        for other, _ in others:
            try:
                await asyncio.to_thread(other.wait, ROBOT_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                other.kill()
        await link.drain(DRAIN_TIMEOUT_S)  # the console's last commands reach the robot before it stops
    finally:
        for timer in timers:
            timer.cancel()
        if robot.poll() is None:
            robot.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(robot.wait, ROBOT_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            robot.kill()
        for process in [console, *(o for o, _ in others)]:
            if process.poll() is None:
                process.kill()
        observers, relay_sets = await _close_helpers(robot_log, broadcast, link, pollers)
        relay_stats = relay_sets[0]
    elapsed = time.monotonic() - started
    robot_data = json.loads(robot_report.read_text()) if robot_report.exists() else {}
    console_data = json.loads(console_report.read_text()) if console_report.exists() else {}
    if not robot_data or not console_data:
        tails = "\n".join(log_tail(workdir / name) for name, data in (("robot.log", robot_data),
                                                                       ("console.log", console_data)) if not data)
        raise SiteFailed(f"a site wrote no report (robot exit {robot.returncode}, console exit "
                         f"{console.returncode})\n{tails}")
    other_data = [json.loads(path.read_text()) if path.exists() else {} for _, path in others]
    report = merge_reports(profile.name, elapsed, robot_data, console_data, relay_stats, other_data)
    if observers is not None:
        report["observers"] = observers
    if record_dir is not None:
        report["record"] = {"dir": str(record_dir), "robot": robot_data.get("record"),
                            "console": console_data.get("record"),
                            **{data.get("me") or toml.stem: data.get("record")
                               for data, toml in zip(other_data, link.console_tomls[1:], strict=True)}}
    if others:
        report["consoles"] = {"console": console_section(console_data, profile.name, relay_stats)}
        for data, relays, p in zip(other_data, relay_sets[1:], consultants, strict=True):
            report["consoles"][data.get("me") or f"console-{len(report['consoles']) + 1}"] = \
                console_section(data, p.name, relays)
    polled_s = 0.0 if pollers is None else pollers.cpu_seconds()
    report["machine"] = {"cpus": os.cpu_count(), **report_extra,
                         "idle_poll": None if pollers is None else {"method": pollers.method, "cpus": pollers.cpus,
                                                                    "cpu_s": round(polled_s, 1)},
                         "cpu": cpu_usage(cpu_at_start, cpu_times(), not_counted_s=polled_s)}
    return report


class SiteFailed(RuntimeError):
    """A site process died or wrote no report; the message carries the tail of its log."""


async def _wait_ready(process: subprocess.Popen, marker: Path) -> bool:
    """Wait until the site writes its ready file: no fixed deadline (a cold, loaded 2-core machine
    can take tens of seconds to import and start), only as long as the process is alive."""
    while not marker.exists():
        if process.poll() is not None:
            return False
        await asyncio.sleep(0.05)
    return True


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of a site's log, titled; says so when there is none."""
    if not path.exists():
        return f"--- {path.name}: no log was written"
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join([f"--- {path.name} (last {len(tail)} lines)", *tail])
def _record_dir(args: argparse.Namespace, workdir: Path) -> Path | None:
    """Where the demo's recordings go (kept after the run: beside the report unless --workdir is given);
    a previous run's recordings there are removed, so the files are this run's alone."""
    if not args.record:
        return None
    directory = args.record_dir or (args.workdir / "record" if args.workdir else
                                    args.report.resolve().parent / f"{args.report.stem}-record")
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.mcap"):
        stale.unlink()
    return directory


def _hand_over_time(rings: int) -> float:
    """The lead's task time for handing PSM1 over: mid-task, the tool high over the board."""
    from telesurg.robot.peg_transfer import handover_moment, peg_transfer_plan
    from telesurg.robot.scene import default_board

    return handover_moment(peg_transfer_plan(default_board(), rings=rings))


async def _close_helpers(robot_log: Any, broadcast: Any, link: Any, pollers: Any) -> tuple[Any, list[Any]]:
    """Stop what the demo started around the sites (router and observers, relays, CPU pollers);
    returns the observers' figures and each console's relay figures."""
    robot_log.close()
    observers = broadcast.close() if broadcast is not None else None
    relay_sets = await link.close_all()
    if pollers is not None:
        pollers.stop()
    return observers, relay_sets


def _start_consultants(tomls: list[Path], workdir: Path, env: dict[str, str],
                       record_dir: Path | None) -> list[tuple[subprocess.Popen, Path]]:
    """One scripted consultant per extra console: it waits for PSM1, draws a loop with it and hands it
    back. Without video (the lead's console shows it), so two consoles fit beside the robot on 2 CPUs.
    Each records its own MCAP file beside the others' (its site name, e.g. console-2, names it)."""
    started = []
    for toml in tomls:
        report = workdir / f"{toml.stem}.json"
        report.unlink(missing_ok=True)
        extra = ["--script", "consult", "--request-arm", "PSM1", "--no-video", "--no-live",
                 "--log-file", str(workdir / f"{toml.stem}.log"), "--connect-timeout", "30",
                 *(["--record", str(record_dir)] if record_dir is not None else [])]
        started.append((subprocess.Popen(site_command("console", toml, report, extra), env=env), report))
    return started


def _cpus_flag(cpus: set[int] | None) -> list[str]:
    return [] if cpus is None else ["--cpus", ",".join(str(c) for c in sorted(cpus))]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="shanghai-casablanca", help="netem profile (see `telesurg netem --list`)")
    parser.add_argument("--duration", type=float, help="seconds of teleoperation (default: the scripted task)")
    parser.add_argument("--scenario", help="TOML timeline of network faults (e.g. cut-path-a); its times count "
                                           "from the moment the scripted surgeon is first following")
    parser.add_argument("--report", type=Path, default=Path("demo-report.json"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--haptics", action="store_true", help="force feedback: the robot sends tool forces at "
                        "500 Hz, the console renders them on a simulated handle (console/haptics/)")
    parser.add_argument("--rings", type=int, default=6, help="rings the scripted surgeon moves (1-6)")
    parser.add_argument("--no-video", action="store_true", help="control path only")
    parser.add_argument("--video-source", choices=("sim-endoscope", "test-pattern"), default="sim-endoscope",
                        help="what the endoscope stream shows (test-pattern: no CPU rendering)")
    parser.add_argument("--video-fps", type=float, help="endoscope frame rate (default: the sites' 15 fps)")
    parser.add_argument("--workdir", type=Path, help="keep site files and reports here (default: a temp dir)")
    parser.add_argument("--cpu-split", action=argparse.BooleanOptionalAction, default=False,
                        help="run the robot site and the console site on separate halves of the CPUs, as on two "
                             "machines (needs 2 or more CPUs; the emulator and video use any CPU). Off by default: "
                             "on 2 vCPUs it measured no better end to end (bench/command_overhead.py)")
    parser.add_argument("--idle-poll", action=argparse.BooleanOptionalAction, default=True,
                        help=IDLE_POLL_HELP + " (default: on)")
    parser.add_argument("--consoles", type=int, choices=(1, 2, 3), default=1,
                        help="consoles at the robot: the lead over --profile, consultants over "
                             "--consultant-profile; with 2 or more the lead hands PSM1 to a consultant "
                             "mid-task and gets it back")
    parser.add_argument("--consultant-profile", default="paris-casablanca",
                        help="the consultants' WAN profile (default: paris-casablanca)")
    parser.add_argument("--dashboard", metavar="[HOST:]PORT",
                        help="web dashboards and /metrics: the console site on PORT, the robot site on PORT + 1")
    parser.add_argument("--dashboard-allow", action="append", metavar="CIDR",
                        help="client networks the dashboards answer (repeatable)")
    parser.add_argument("--observers", type=int, metavar="N",
                        help="live broadcast: an in-process Zenoh router and N headless observers of the robot "
                             "(0: router and publisher only); their figures go to the report's 'observers'")
    parser.add_argument("--record", action=argparse.BooleanOptionalAction, default=True,
                        help="black-box MCAP recording of the robot and the console (default: on; "
                             "telesurg record info / telesurg replay)")
    parser.add_argument("--record-dir", type=Path, help="recordings here (default: <report>-record/ beside the "
                                                        "report, or <workdir>/record)")
    parser.add_argument("--verbose", action="store_true", help="print the tail of the robot and console logs")
    parser.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                        help="live status display (default: when stdout is a terminal)")


def run(args: argparse.Namespace) -> int:
    if args.live is None:
        args.live = sys.stdout.isatty()
    install_uvloop()
    try:  # fail fast, in one line, on a bad profile or scenario before any process starts
        load_profile(args.profile)
        load_profile(args.consultant_profile)
        dashboard.demo_flags(args.dashboard, args.dashboard_allow)
        if args.scenario:
            load_scenario(args.scenario)
    except (NetemConfigError, OSError, ValueError) as exc:
        print(f"telesurg demo: {exc}")
        return 2
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="telesurg-demo-")))
        try:
            report = asyncio.run(_run(args, workdir))
        except SiteFailed as exc:
            print(f"telesurg demo: {exc}")
            return 1
        if args.verbose:
            for name in ("robot.log", "console.log", *(f"console-{i}.log" for i in range(2, args.consoles + 1))):
                if (workdir / name).exists():
                    print(log_tail(workdir / name))
    write_report(args.report, report)
    print("\n".join(summary_lines(report)))
    print(f"report: {args.report}")
    return 1 if report["safety"]["violations"] else 0
