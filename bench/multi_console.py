"""Several consoles into one robot: does the robot's command path keep its timing with 3 sessions?

    python bench/multi_console.py [--runs N] [--seconds D] [--idle-poll] [--json F]
    python bench/multi_console.py --flood console-2.toml --seconds D --report F   (one load session)

The issue's figure: three sessions at 1 kHz each into one robot; servo lateness p99 and command
overhead p99 against the single-session figure in the same run; target <= 1.5x.

Each run writes a fresh site set (`telesurg.apps.init.write_sites`: robot.toml with the roster
console = lead of PSM1+PSM2, console-2 and console-3 consultants; fresh ports and keys in a fresh
temp dir) and starts real processes on loopback, with no WAN emulator (so `latency_ms` is almost all
software): the robot site (`telesurg robot --no-video --duration D`; D, default 30 s, is only a cap:
a run lasts as long as the lead's task, ~23 s) and the lead as a real `telesurg console` (scripted
peg transfer, --rings 1 --no-video --no-live; its commands are applied once it re-engages). In the
3-session configuration two more processes of this script (`--flood`) join as console-2 and
console-3. Each is an honest consultant session, not a second lead: a `LinkEndpoint.from_config(...,
is_client=True)` client (own TLS identity, own datagram keys), which sends a ServoBundle of 2
commands (PSM1, PSM2; strictly increasing cmd_seq, t_sent = time.monotonic()) every 1 ms for the
whole run, sealed and sent from a 1 kHz `DeadlineLoop` thread with `send_from_thread`, as the
console's ticker does (same real-time priorities as a console where the system grants them). Its
achieved rate and period lateness are measured and printed (first trial here: 999.4 and 999.6 Hz,
tick lateness p99 198-272 µs, no send failed), so a thread with precise sleeps keeps the rate; an
asyncio-timer sender (uvloop's timers count whole ms) was not tried. The robot takes each of these
through its whole receive path (kernel, AEAD, replay window, decode, servo inbox, safety supervisor)
and rejects it `not_owner` (`commands.rejected.not_owner`): the load is real, but none of it is
applied, so `apply_overhead_ms` (the robot's kernel arrival -> judged and applied) and `latency_ms`
are the lead's commands only, measured while the robot also judges 4,000 foreign commands a second.
The run ends when the lead's script ends; the floods and the robot are then stopped with SIGINT
(killed after a timeout), so no process outlives a run.

Both configurations use the same site files; they are interleaved run by run (1, 3, 1, 3, ...) so
both see the same machine phase, and the summary compares their medians. A run in which a site wrote
no report is reported as failed. Robot log lines at WARNING or above are kept in the JSON; those
that are not routine (console joined/left, local enable) are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from telesurg.apps.emulated import free_udp_ports, site_command
from telesurg.apps.init import write_sites
from telesurg.child_process import interrupt_or_kill

TARGET_RATIO = 1.5
CONSOLES = 3
LOG_LEVELS = ("WARNING", "ERROR", "CRITICAL", "Traceback")
# the robot logs these every run at WARNING (operator-visible transitions), not problems
ROUTINE = ("local console: enable", "left (peer_closed: local_close)")


# ------------------------------------------------------------------------- flood (load session)
def flood(config_path: Path, seconds: float, report_path: Path) -> int:
    """One consultant session sending 1 kHz servo bundles (not owner: every command is rejected)."""
    from telesurg.apps.common import DelayHistogram, install_stop_signals, wait_stop, write_report
    from telesurg.apps.console import TICKER_SWITCH_INTERVAL_S
    from telesurg.link.driver import LinkEndpoint, install_uvloop
    from telesurg.link.events import Event, MessageClass, MessageReceived
    from telesurg.messages import FLAG_ENGAGED, ArmId, ServoBundle, ServoCommand
    from telesurg.realtime import (
        CONSOLE_LINK_PRIORITY,
        CONSOLE_TICKER_PRIORITY,
        request_realtime,
        settle_garbage_collector,
    )
    from telesurg.robot.servo import DeadlineLoop
    from telesurg.site_config import ConsoleSiteConfig, load_config

    config = load_config(config_path, ConsoleSiteConfig)
    install_uvloop()
    received = {"messages": 0, "events": 0}
    sent = {"bundles": 0, "failed": 0}
    send_ms = DelayHistogram()
    seq = [0]
    pose = {ArmId.PSM1: (-0.03, 0.0, 0.08), ArmId.PSM2: (0.03, 0.0, 0.08)}

    def on_message(_: MessageReceived) -> None:
        received["messages"] += 1

    def on_event(_: Event) -> None:
        received["events"] += 1

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        install_stop_signals(stop)
        endpoint = LinkEndpoint.from_config(config.link, is_client=True, on_message=on_message, on_event=on_event)
        link_rt = request_realtime(CONSOLE_LINK_PRIORITY)
        await endpoint.start()
        try:
            await endpoint.wait_established(15.0)
        except TimeoutError:
            await endpoint.close()
            return {"established": False}

        def tick(_: float) -> None:
            seq[0] += 1
            t = time.monotonic()
            bundle = ServoBundle(tuple(ServoCommand(arm, seq[0], t, pos, (1.0, 0.0, 0.0, 0.0), 0.3, FLAG_ENGAGED)
                                       for arm, pos in pose.items()))
            if endpoint.send_from_thread(MessageClass.CONTROL, bundle.encode()) is None:
                sent["failed"] += 1
            else:
                sent["bundles"] += 1
                send_ms.add(1000.0 * (time.monotonic() - t))

        loop = DeadlineLoop(0.001, tick, name="flood-tick", realtime_priority=CONSOLE_TICKER_PRIORITY)
        sys.setswitchinterval(TICKER_SWITCH_INTERVAL_S)
        settle_garbage_collector()
        started = time.monotonic()
        loop.start()
        await wait_stop(stop, seconds)
        loop.stop()
        elapsed = time.monotonic() - started
        await endpoint.close()
        return {"established": True, "identity": config.site.name, "seconds": round(elapsed, 3),
                "bundles_sent": sent["bundles"], "commands_sent": 2 * sent["bundles"], "failed": sent["failed"],
                "rate_hz": round(sent["bundles"] / elapsed, 1), "send_overhead_ms": send_ms.report(),
                "ticker": {**loop.stats.summary(), "realtime": loop.realtime}, "link_realtime": link_rt,
                "received": received, "link_counters": dict(endpoint.core.counters)}

    report = asyncio.run(main())
    write_report(report_path, report)
    return 0 if report.get("established") else 1


# ------------------------------------------------------------------------------ one run
def run_once(sessions: int, seconds: float, idle_poll: bool) -> dict[str, Any]:
    """One run in a fresh temp dir with fresh ports; the raw reports and the exit codes."""
    with tempfile.TemporaryDirectory(prefix="telesurg-multi-") as tmp:
        work = Path(tmp)
        ports = free_udp_ports(2 + 2 * CONSOLES)
        robot_toml, tomls = write_sites(work, robot_ports=tuple(ports[:2]),
                                        console_ports=[tuple(ports[2 + 2 * i:4 + 2 * i]) for i in range(CONSOLES)],
                                        overwrite=True)
        reports = {"robot": work / "robot.json", "lead": work / "console.json"}
        processes: dict[str, subprocess.Popen[Any]] = {}
        logs = {name: (work / f"{name}.log").open("w") for name in ("robot", "lead", "floods")}
        robot_ended_first = lead_timed_out = False
        try:
            robot_extra = ["--no-video", "--duration", str(seconds), *(["--idle-poll"] if idle_poll else [])]
            processes["robot"] = subprocess.Popen(site_command("robot", robot_toml, reports["robot"], robot_extra),
                                                  stdout=logs["robot"], stderr=subprocess.STDOUT)
            lead_extra = ["--rings", "1", "--no-video", "--no-live", "--log-file", str(work / "lead-site.log")]
            processes["lead"] = subprocess.Popen(site_command("console", tomls[0], reports["lead"], lead_extra),
                                                 stdout=logs["lead"], stderr=subprocess.STDOUT)
            for toml in tomls[1:sessions]:
                reports[toml.stem] = work / f"{toml.stem}.json"
                processes[toml.stem] = subprocess.Popen(
                    [sys.executable, __file__, "--flood", str(toml), "--seconds", str(seconds + 30.0),
                     "--report", str(reports[toml.stem])], stdout=logs["floods"], stderr=subprocess.STDOUT)
            deadline = time.monotonic() + seconds + 30.0
            while processes["lead"].poll() is None and processes["robot"].poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
            robot_ended_first = processes["robot"].poll() is not None and processes["lead"].poll() is None
            lead_timed_out = processes["lead"].poll() is None and not robot_ended_first
        finally:  # the lead first (it disengages), then the floods, then the robot
            for name in ["lead", *(n for n in processes if n.startswith("console")), "robot"]:
                if name in processes:
                    interrupt_or_kill(processes[name])
            for log in logs.values():
                log.close()
        robot_log = (work / "robot.log").read_text(errors="replace").splitlines()
        out: dict[str, Any] = {
            "sessions": sessions,
            "exit_codes": {name: p.returncode for name, p in processes.items()},
            "reports": {name: json.loads(path.read_text()) if path.exists() else None
                        for name, path in reports.items()},
            "robot_log_warnings": [line for line in robot_log if any(w in line for w in LOG_LEVELS)][:100],
        }
        out["robot_log_problems"] = [line for line in out["robot_log_warnings"]
                                     if not any(r in line for r in ROUTINE)]
        missing = [name for name, report in out["reports"].items() if report is None]
        if missing:
            out["failed"] = f"no report from {', '.join(missing)}"
        elif robot_ended_first:
            out["failed"] = f"the robot stopped before the lead's task ended (--seconds {seconds} too short?)"
        elif lead_timed_out:
            out["failed"] = f"the lead's task did not end within {seconds + 30.0:.0f} s"
        if "failed" in out:
            out["log_tails"] = {name: (work / f"{name}.log").read_text(errors="replace")[-3000:]
                                for name in ("robot", "lead", "floods", "lead-site") if (work / f"{name}.log").exists()}
        return out


def figures(run: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run from the robot's, the lead's and the floods' reports."""
    robot, lead = run["reports"]["robot"], run["reports"]["lead"]
    commands, safety = robot["commands"], robot["safety"]
    floods = {name: r for name, r in run["reports"].items() if name.startswith("console") and r}
    return {
        "servo": {k: robot["servo"].get(k) for k in ("p50_us", "p99_us", "max_us", "missed", "skipped", "realtime")},
        "apply_overhead_ms": commands["apply_overhead_ms"], "latency_ms": commands["latency_ms"],
        "applied": commands.get("applied"), "not_owner": commands["rejected"].get("not_owner", 0),
        "rejected": commands["rejected"],
        "delivered": {name: s["commands"]["delivered"] for name, s in robot.get("sessions", {}).items()},
        "rings_moved": robot["task"]["rings_moved"], "violations": safety["violations"],
        "holds": len(safety["holds"]), "hold_reasons": sorted({h.get("reason", "?") for h in safety["holds"]}),
        "lead_send_overhead_ms": lead.get("send_overhead_ms"), "lead_ticker": lead.get("ticker"),
        "lead_holds_seen": lead.get("holds_seen"),
        "floods": {name: {k: f.get(k) for k in ("rate_hz", "commands_sent", "failed", "send_overhead_ms")}
                   | {"ticker_p99_us": (f.get("ticker") or {}).get("p99_us"),
                      "realtime": (f.get("ticker") or {}).get("realtime")} for name, f in floods.items()},
        "robot_duration_s": robot.get("duration_s"), "robot_log_problems": len(run["robot_log_problems"]),
    }


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


SUMMARY_KEYS: dict[str, Any] = {
    "servo_p50_us": lambda f: f["servo"]["p50_us"], "servo_p99_us": lambda f: f["servo"]["p99_us"],
    "servo_max_us": lambda f: f["servo"]["max_us"], "servo_missed": lambda f: f["servo"]["missed"],
    "servo_skipped": lambda f: f["servo"]["skipped"],
    "apply_p50_ms": lambda f: f["apply_overhead_ms"]["p50"], "apply_p99_ms": lambda f: f["apply_overhead_ms"]["p99"],
    "apply_max_ms": lambda f: f["apply_overhead_ms"]["max"], "latency_p50_ms": lambda f: f["latency_ms"]["p50"],
    "latency_p99_ms": lambda f: f["latency_ms"]["p99"], "lead_send_p99_ms": lambda f: f["lead_send_overhead_ms"]["p99"],
    "not_owner": lambda f: f["not_owner"], "rings_moved": lambda f: f["rings_moved"],
    "violations": lambda f: f["violations"], "holds": lambda f: f["holds"],
}


def summarise(results: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    medians = {f"{n}_sessions": {key: median([get(f) for f in runs]) for key, get in SUMMARY_KEYS.items()}
               for n, runs in results.items()}

    def ratio(key: str) -> float | None:
        one, three = medians["1_sessions"][key], medians[f"{CONSOLES}_sessions"][key]
        return round(three / one, 3) if one and three is not None else None

    ratios = {"servo_p99": ratio("servo_p99_us"), "apply_overhead_p99": ratio("apply_p99_ms")}
    return {"medians": medians, "ratio_3_vs_1": ratios, "target_ratio": TARGET_RATIO,
            "meets_target": {k: (v is not None and v <= TARGET_RATIO) for k, v in ratios.items()},
            "runs_ok": {f"{n}_sessions": len(runs) for n, runs in results.items()}}


def run_table(index: int, sessions: int, f: dict[str, Any]) -> Table:
    table = Table(title=f"run {index}: {sessions} session(s)", title_justify="left", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    s, a, lat, send = f["servo"], f["apply_overhead_ms"], f["latency_ms"], f["lead_send_overhead_ms"]
    rows = [("servo lateness p50 / p99 / max µs", f"{s['p50_us']:.0f} / {s['p99_us']:.0f} / {s['max_us']:.0f}"),
            ("servo missed / skipped", f"{s['missed']} / {s['skipped']}"),
            ("apply overhead p50 / p99 / max ms", f"{a['p50']:.3f} / {a['p99']:.3f} / {a['max']:.3f}"),
            ("latency p50 / p99 / max ms", f"{lat['p50']:.3f} / {lat['p99']:.3f} / {lat['max']:.3f}"),
            ("lead send overhead p50 / p99 ms", f"{send['p50']:.3f} / {send['p99']:.3f}"),
            ("applied / rejected not_owner", f"{f['applied']} / {f['not_owner']}"),
            ("delivered per session", " ".join(f"{k}={v}" for k, v in f["delivered"].items())),
            ("rings / violations / holds", f"{f['rings_moved']} / {f['violations']} / {f['holds']}")]
    rows += [(f"flood {name}: Hz, tick p99 µs, failed", f"{fl['rate_hz']:.1f}, {fl['ticker_p99_us']:.0f}, {fl['failed']}")
             for name, fl in f["floods"].items()]
    for row in rows:
        table.add_row(*row)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="pairs of runs (1 session, 3 sessions)")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="the robot's --duration, a cap: a run ends with the lead's 1-ring task (~23 s)")
    parser.add_argument("--idle-poll", action="store_true", help="robot site with --idle-poll")
    parser.add_argument("--json", type=Path, default=None, help="write every run and the summary here")
    parser.add_argument("--flood", type=Path, metavar="CONSOLE_TOML", help="be one load session (internal)")
    parser.add_argument("--report", type=Path, help="--flood: write its report here")
    args = parser.parse_args()
    if args.flood is not None:
        return flood(args.flood, args.seconds, args.report)
    console = Console()
    console.print("3-session runs: the lead plus 2 consultant sessions (console-2, console-3) at 1 kHz each, "
                  "whose commands cross the robot's whole receive path and are rejected not_owner; "
                  "loopback, no WAN emulator (latency_ms is almost all software).")
    order = [n for _ in range(args.runs) for n in (1, CONSOLES)]
    results: dict[int, list[dict[str, Any]]] = {1: [], CONSOLES: []}
    runs: list[dict[str, Any]] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("runs", total=len(order))
        for i, sessions in enumerate(order, 1):
            progress.update(task, description=f"run {i}/{len(order)}: {sessions} session(s)")
            run = run_once(sessions, args.seconds, args.idle_poll)
            run["index"] = i
            if "failed" not in run:
                try:
                    run["figures"] = figures(run)
                except (KeyError, TypeError) as exc:
                    run["failed"] = f"report without an expected field: {exc!r}"
            if "failed" in run:
                console.print(f"[red]run {i} ({sessions} session(s)) FAILED: {run['failed']}; "
                              f"exit codes {run['exit_codes']}[/red]")
                for name, tail in run.get("log_tails", {}).items():
                    console.print(f"--- {name} log (tail) ---\n{tail[-1500:]}")
            else:
                results[sessions].append(run["figures"])
                progress.console.print(run_table(i, sessions, run["figures"]))
            for line in run["robot_log_problems"][:10]:
                console.print(f"[yellow]robot log, run {i}:[/yellow] {line}", soft_wrap=True)
            runs.append(run)
            progress.advance(task)
    failed = [r["index"] for r in runs if "failed" in r]
    summary = summarise(results) if results[1] and results[CONSOLES] else {"error": "no successful run of a config"}
    summary["failed_runs"] = failed
    table = Table(title=f"medians per configuration (target: {CONSOLES}-session / 1-session <= {TARGET_RATIO}x)")
    table.add_column("figure")
    for name in ("1 session", f"{CONSOLES} sessions"):
        table.add_column(name, justify="right")
    for key in SUMMARY_KEYS:
        row = [str((summary.get("medians") or {}).get(f"{n}_sessions", {}).get(key)) for n in (1, CONSOLES)]
        table.add_row(key, *row)
    console.print(table)
    console.print({k: summary.get(k) for k in ("ratio_3_vs_1", "meets_target", "runs_ok", "failed_runs")})
    if args.json is not None:
        for run in runs:  # the raw reports are large; keep what the figures came from, minus per-path detail
            for report in run["reports"].values():
                if isinstance(report, dict):
                    report.pop("paths", None)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2, default=str))
        console.print(f"written {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
