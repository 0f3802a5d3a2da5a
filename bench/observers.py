"""Observers of the live broadcast: do 0-100 of them cost the control path anything?

    python bench/observers.py [--configs off,0,1,10,50,100,stall,router-kill] [--size 1280x720]
                              [--placement shared|apart] [--repeat N] [--json F] [--png F]

Each run writes a fresh site pair (`write_sites`, fresh ports and keys) and starts real processes on
loopback, no WAN emulator (as bench/multi_console.py): `telesurg robot --broadcast ENDPOINT` with the
endoscope stream on (test-pattern source, 1280x720 at 30 fps per eye by default, real libx264), a
real `telesurg console` lead (scripted 1-ring peg transfer, no video), a `telesurg broadcast-router`
process and N observers (telesurg.broadcast.observer_pool: up to 25 observers per process, each its
own Zenoh session and TCP connection; the first decodes both eyes, the others parse every header and
measure fps, gaps and capture -> received latency). The router and the observers run at nice 10 /
19. The robot keeps idle CPUs awake (`--idle-poll`, as `telesurg demo` does): a VM's CPU waking
from halt added ~0.2 ms to a wake-up at p99 (bench/wakeup_latency.py), more than the effect measured here.
`--placement shared` (default): every process may use both cores, so the fan-out's CPU and
kernel network work (100 TCP streams of stereo video on loopback) land on the sites' cores too.
`--placement apart`: the router and the observers on the last CPU, the two sites on the others (their
video processes may use any), the nearest this one machine gets to the fan-out running elsewhere,
as it does in use (say which with every figure).
Configurations, run in this order:
- `off`: no broadcast at all (the control path's own figures; reference for the publisher's cost)
- `0`, `1`, `10`, `50`, `100`: publisher attached, router up, N observers (target: control figures
  within 1.2x of `0`, measured in the same run)
- `stall`: 10 observers of which one is SIGSTOPped from 8 s to the end of the run
- `router-kill`: 10 observers; the router is SIGKILLed at 8 s and restarted 3 s later on the same
  port: the publisher and the observers must reconnect by themselves.
Control figures (robot report): servo lateness p99 (µs), apply overhead p99 (ms: the robot's kernel
arrival -> judged and applied), command latency p99 (ms, console stamp -> applied; loopback).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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
from telesurg.broadcast.site_options import free_tcp_port
from telesurg.child_process import interrupt_or_kill

TARGET_RATIO = 1.2
PER_PROCESS = 25
EVENT_AT_S = 8.0
ROUTER_DOWN_S = 3.0
VIDEO_FPS = 30.0


# ------------------------------------------------------------------------------ one run
def placed(command: list[str], cpus: str | None) -> list[str]:
    """`command` restricted to `cpus` (util-linux taskset), or as it is."""
    return ["taskset", "-c", cpus, *command] if cpus else command


def start_router(endpoint: str, log: Any, cpus: str | None) -> subprocess.Popen[Any]:
    return subprocess.Popen(placed(["nice", "-n", "10", sys.executable, "-m", "telesurg.cli", "broadcast-router",
                                    "--listen", endpoint], cpus), stdout=log, stderr=subprocess.STDOUT)


def start_pools(endpoint: str, count: int, work: Path, log: Any, solo_last: bool,
                cpus: str | None) -> list[tuple[subprocess.Popen[Any], Path]]:
    """Observer processes (<= PER_PROCESS each); `solo_last`: the last observer alone (to be stalled)."""
    sizes = []
    left = count - (1 if solo_last else 0)
    while left > 0:
        sizes.append(min(PER_PROCESS, left))
        left -= sizes[-1]
    if solo_last:
        sizes.append(1)
    pools = []
    for i, size in enumerate(sizes):
        report, ready = work / f"observers-{i}.json", work / f"observers-{i}.ready"
        process = subprocess.Popen(placed(["nice", "-n", "19", sys.executable, "-m", "telesurg.broadcast.observer_pool",
                                           "--connect", endpoint, "--site", "robot", "--count", str(size),
                                           "--decode", "1" if i == 0 else "0", "--report", str(report),
                                           "--ready", str(ready)], cpus), stdout=log, stderr=subprocess.STDOUT)
        pools.append((process, report))
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline and not all((work / f"observers-{i}.ready").exists() for i in range(len(sizes))):
        time.sleep(0.1)
    return pools


def site_pair(work: Path) -> tuple[Path, Path, str]:
    """A fresh robot/console site pair in `work` (new keys, free ports) and a free router endpoint."""
    ports = free_udp_ports(4)
    robot_toml, tomls = write_sites(work, robot_ports=tuple(ports[:2]), console_ports=[tuple(ports[2:4])],
                                    overwrite=True)
    return robot_toml, tomls[0], f"tcp/127.0.0.1:{free_tcp_port()}"


def run_once(config: str, seconds: float, size: str, fanout_cpus: str | None, site_cpus: str | None) -> dict[str, Any]:
    broadcast = config != "off"
    observers = {"off": 0, "stall": 10, "router-kill": 10}.get(config)
    observers = int(config) if observers is None else observers
    with tempfile.TemporaryDirectory(prefix="telesurg-observers-") as tmp:
        work = Path(tmp)
        robot_toml, console_toml, endpoint = site_pair(work)
        log = (work / "aux.log").open("w")
        robot_log = (work / "robot.log").open("w")
        reports = {"robot": work / "robot.json", "lead": work / "console.json"}
        processes: dict[str, subprocess.Popen[Any]] = {}
        pools: list[tuple[subprocess.Popen[Any], Path]] = []
        events: list[str] = []
        try:
            if broadcast:
                processes["router"] = start_router(endpoint, log, fanout_cpus)
                pools = start_pools(endpoint, observers, work, log, solo_last=config == "stall", cpus=fanout_cpus)
            robot_cmd = site_command("robot", robot_toml, reports["robot"], [
                "--duration", str(seconds), "--video-source", "test-pattern", "--video-fps", str(VIDEO_FPS),
                "--video-size", size, "--idle-poll", *(["--cpus", site_cpus] if site_cpus else []),
                *(["--broadcast", endpoint] if broadcast else [])])
            processes["robot"] = subprocess.Popen(robot_cmd, stdout=robot_log, stderr=subprocess.STDOUT)
            lead = site_command("console", console_toml, reports["lead"],
                                ["--rings", "1", "--no-video", "--no-live", "--log-file", str(work / "lead.log"),
                                 *(["--cpus", site_cpus] if site_cpus else [])])
            processes["lead"] = subprocess.Popen(lead, stdout=log, stderr=subprocess.STDOUT)
            started = time.monotonic()
            event_done = False
            while processes["lead"].poll() is None and processes["robot"].poll() is None \
                    and time.monotonic() < started + seconds + 30.0:
                time.sleep(0.1)
                if not event_done and time.monotonic() - started >= EVENT_AT_S:
                    event_done = True
                    if config == "stall":
                        os.kill(pools[-1][0].pid, signal.SIGSTOP)
                        events.append(f"observer process {pools[-1][0].pid} SIGSTOPped at {EVENT_AT_S:.0f} s")
                    elif config == "router-kill":
                        processes["router"].kill()
                        processes["router"].wait()
                        time.sleep(ROUTER_DOWN_S)
                        processes["router"] = start_router(endpoint, log, fanout_cpus)
                        events.append(f"router SIGKILLed at {EVENT_AT_S:.0f} s, restarted {ROUTER_DOWN_S:.0f} s later")
        finally:
            for name in ("lead", "robot"):
                if name in processes:
                    interrupt_or_kill(processes[name])
            for process, _ in pools:
                interrupt_or_kill(process)
            if "router" in processes:
                interrupt_or_kill(processes["router"])
            log.close()
            robot_log.close()
        out: dict[str, Any] = {"config": config, "observers": observers, "events": events,
                               "reports": {k: json.loads(p.read_text()) if p.exists() else None
                                           for k, p in reports.items()},
                               "pools": [json.loads(p.read_text()) if p.exists() else None for _, p in pools]}
        if out["reports"]["robot"] is None or out["reports"]["lead"] is None or None in out["pools"]:
            out["failed"] = "a process wrote no report"
            out["log_tail"] = {n: (work / n).read_text(errors="replace")[-2000:] for n in ("robot.log", "aux.log")}
        return out


def figures(run: dict[str, Any]) -> dict[str, Any]:
    from telesurg.broadcast.observer_pool import summarize

    robot = run["reports"]["robot"]
    observers = [o for pool in run["pools"] for o in pool["observers"]]
    decoded = run["pools"][0]["observers"][0] if run["pools"] else None
    out = {"servo_p99_us": robot["servo"]["p99_us"], "servo_max_us": robot["servo"]["max_us"],
           "apply_p99_ms": robot["commands"]["apply_overhead_ms"]["p99"],
           "latency_p99_ms": robot["commands"]["latency_ms"]["p99"], "applied": robot["commands"]["applied"],
           "violations": robot["safety"]["violations"], "holds": len(robot["safety"]["holds"]),
           "rings": robot["task"]["rings_moved"], "broadcast": robot.get("broadcast"),
           "observers": summarize(observers) if observers else None,
           "decoding_observer": None if decoded is None else {
               "decoded": decoded["video"]["left"]["decoded"] + decoded["video"]["right"]["decoded"],
               "decoded_latency_ms": decoded["video"]["left"]["decoded_latency_ms"],
               "decode_errors": decoded["decode_errors"]}}
    if run["config"] == "stall":
        stalled = run["pools"][-1]["observers"][0]
        out["stalled_observer"] = {"frames": stalled["video"]["left"]["frames"], "missing":
                                   stalled["video"]["left"]["missing"], "dropped_local": stalled["dropped_local"]}
        out["observers"] = summarize([o for pool in run["pools"][:-1] for o in pool["observers"]])
    return out


def run_row(table: Table, label: str, f: dict[str, Any], base: dict[str, Any] | None) -> None:
    ratio = "-"
    if base:
        ratio = f"{f['servo_p99_us'] / base['servo_p99_us']:.2f} / {f['apply_p99_ms'] / base['apply_p99_ms']:.2f}"
    o = f["observers"] or {}
    child = o.get("publisher") or {}
    share = child.get("capture_to_publish_ms") or {}
    pub = (f["broadcast"] or {})
    drops = sum((pub.get("dropped_handover") or {}).values()) + sum((pub.get("dropped_tap") or {}).values())
    table.add_row(label, f"{f['servo_p99_us']:.0f}", f"{f['apply_p99_ms']:.3f}", f"{f['latency_p99_ms']:.3f}",
                  ratio, f"{o.get('latency_p50_ms')}/{o.get('latency_p99_ms')}" if o else "-",
                  f"{share.get('p50')}/{share.get('p99')}" if share else "-",
                  f"{o.get('fps_left')}/{o.get('fps_right')} ({o.get('fps_min')})" if o else "-",
                  f"{o.get('frames_missing_min')}/{o.get('frames_missing_max')}" if o else "-",
                  str((child.get("publisher") or {}).get("video_frames_lost", 0)) if o else "-",
                  str(drops) if f["broadcast"] else "-", str(f["holds"]))


def new_table(title: str) -> Table:
    table = Table(title=title)
    for column in ("config", "servo p99 µs", "apply p99 ms", "cmd lat p99 ms", "ratio servo/apply vs 0",
                   "obs lat p50/p99 ms", "capture->published p50/p99 ms", "fps L/R (min)",
                   "missing per obs min/max", "pub lost frames", "pub drops", "holds"):
        table.add_column(column, justify="right")
    return table


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def cpu_placement(placement: str) -> tuple[str | None, str | None]:
    """(fan-out CPUs, site CPUs) for `--placement`; (None, None): shared."""
    cpus = sorted(os.sched_getaffinity(0))
    if placement == "shared" or len(cpus) < 2:
        return None, None
    return str(cpus[-1]), ",".join(str(c) for c in cpus[:-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="off,0,1,10,50,100,stall,router-kill")
    parser.add_argument("--repeat", type=int, default=1, help="run the whole list this many times (interleaved)")
    parser.add_argument("--seconds", type=float, default=35.0, help="robot --duration cap (the 1-ring task ends a run)")
    parser.add_argument("--size", default="1280x720", help="each eye's picture (test pattern), WxH")
    parser.add_argument("--placement", choices=("shared", "apart"), default="shared",
                        help="shared: every process may use every CPU; apart: the router and the observers on "
                             "the last CPU, the sites on the others (as if the fan-out ran on other machines)")
    parser.add_argument("--json", type=Path, default=Path("observers.json"))
    parser.add_argument("--png", type=Path, default=Path("observers.png"))
    args = parser.parse_args()
    console = Console(width=190)
    configs = args.configs.split(",")
    runs: list[dict[str, Any]] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("runs", total=len(configs) * args.repeat)
        for rep in range(args.repeat):
            for config in configs:
                progress.update(task, description=f"round {rep + 1}/{args.repeat}: config {config}")
                run = run_once(config, args.seconds, args.size, *cpu_placement(args.placement))
                run["round"] = rep + 1
                if "failed" not in run:
                    run["figures"] = figures(run)
                else:
                    console.print(f"[red]{config}: {run['failed']}[/red]\n{run['log_tail']}")
                runs.append(run)
                progress.advance(task)
    per_config: dict[str, list[dict[str, Any]]] = {c: [r["figures"] for r in runs if r["config"] == c and "figures" in r]
                                                   for c in configs}
    ok = {c: fs for c, fs in per_config.items() if fs}
    base_runs = {r["round"]: r["figures"] for r in runs if r["config"] == "0" and "figures" in r}
    table = new_table(f"every run (2-vCPU VM; {args.size} stereo; placement {args.placement}; router nice 10, "
                      "observers nice 19); ratio vs the 0 run of the same round")
    for r in runs:
        if "figures" in r:
            run_row(table, f"{r['config']} #{r['round']}", r["figures"], base_runs.get(r["round"]))
    console.print(table)
    medians = {c: {k: median([f[k] for f in fs]) for k in ("servo_p99_us", "apply_p99_ms", "latency_p99_ms")}
               for c, fs in ok.items()}
    base = medians.get("0")
    ratios = {c: {"servo_p99": round(m["servo_p99_us"] / base["servo_p99_us"], 3),
                  "apply_p99": round(m["apply_p99_ms"] / base["apply_p99_ms"], 3)} for c, m in medians.items()} if base else {}
    for r in runs:
        for e in r["events"]:
            console.print(f"{r['config']} #{r['round']}: {e}")
        f = r.get("figures") or {}
        if "stalled_observer" in f:
            console.print(f"stall #{r['round']}: the stalled observer {f['stalled_observer']}")
        if r["config"] == "router-kill" and f.get("observers"):
            console.print(f"router-kill #{r['round']}: observers lost/regained the router "
                          f"{f['observers']['router_lost']}/{f['observers']['router_regained']}, frames missing per "
                          f"observer {f['observers']['frames_missing_min']}-{f['observers']['frames_missing_max']}")
    summary = {"target_ratio": TARGET_RATIO, "rounds": args.repeat, "medians": medians, "ratios_of_medians_vs_0": ratios,
               "meets_target": {c: all(v <= TARGET_RATIO for v in r.values()) for c, r in ratios.items()},
               "failed": [f"{r['config']} #{r['round']}" for r in runs if "failed" in r]}
    console.print(summary)
    args.json.write_text(json.dumps({"summary": summary, "figures": per_config,
                                     "events": {f"{r['config']} #{r['round']}": r["events"] for r in runs}},
                                    indent=1, default=str))
    plot({c: fs[-1] for c, fs in ok.items()}, args.png)
    console.print(f"written {args.json}, {args.png}")
    return 1 if summary["failed"] else 0


def plot(ok: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [c for c in ("0", "1", "10", "50", "100") if c in ok]
    if not counts:
        return
    n = [int(c) for c in counts]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(n, [ok[c]["servo_p99_us"] / 1000.0 for c in counts], "o-", label="servo lateness p99 (ms)")
    left.plot(n, [ok[c]["apply_p99_ms"] for c in counts], "s-", label="apply overhead p99 (ms)")
    if "off" in ok:
        left.axhline(ok["off"]["apply_p99_ms"], ls=":", color="gray", label="apply p99, no broadcast")
    left.set_xlabel("observers")
    left.set_title("control path")
    left.legend()
    obs = [c for c in counts if ok[c]["observers"]]
    right.plot([int(c) for c in obs], [ok[c]["observers"]["latency_p50_ms"] for c in obs], "o-", label="p50")
    right.plot([int(c) for c in obs], [ok[c]["observers"]["latency_p99_ms"] for c in obs], "s-", label="p99")
    right.set_xlabel("observers")
    right.set_ylabel("capture -> observer (ms)")
    right.set_title("observers")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
