"""Side by side (issue #15): the same 1 kHz servo stream over the same emulated Shanghai–Casablanca
paths through telesurg, a WebRTC data channel (aiortc), Zenoh pub/sub, and a lock-step TLS bridge.

    python bench/peers.py [--quick] [--systems a,b] [--json F] [--plot F] [--steady S] ...

Each system runs in its own worker process (sender and receiver together, so one clock measures
one-way delay, and the process's CPU time is the system's: both ends plus the 1 kHz sender thread
that builds and stamps each two-arm `ServoBundle`, the same for all). The relays run in this process:
`netem.relay.PathRelay` (UDP) or `netem.tcp_relay.TcpPathRelay` (TCP: loss becomes retransmission
delay and an outage a stall), built from the profile with the same seed for every system. telesurg
uses paths a and b (multi-path is its point); the others have one path and get path a, the better one.

Each phase is its own stream on a fresh connection and fresh relays (same seed, so every system
meets the same random draws), so what one phase leaves behind (a sender's backlog, a collapsed
congestion window) cannot spill into the next. The peers connect over the jitter- and loss-free
paths; the stream runs `--warmup` s before each measured window:
  steady   the profile without jitter or loss: latency beyond path a's configured delay (52.5 ms)
           is software; commands delivered per second of the 1,000 offered; CPU per delivered command
  cut      the real profile; path a cut for 2 s (with some time before and after)
  loss     the real profile with 1 % random loss on every path
  jitter   the real profile with 30 ms jitter (SD) on every path (order kept, as netem/core.py)
Figures per window (commands sent in it): delivered, lost (not delivered by the end of the drain),
one-way latency beyond path a's delay, the longest time the receiver went without a new command
(the window's edges count, so a stream that never comes back shows it), and the age of the newest
command the receiver held, sampled every millisecond (what a robot's watchdog sees; for the lock-step
bridge, which delivers few commands, it is the figure that counts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_systems import SYSTEMS  # noqa: E402
from peers_report import plot, table  # noqa: E402
from telesurg.messages import DecodeError, ServoBundle, ServoCommand, decode  # noqa: E402
from telesurg.netem.profiles import load_profile  # noqa: E402
from telesurg.netem.relay import PathRelay  # noqa: E402
from telesurg.netem.tcp_relay import TcpPathRelay  # noqa: E402

RATE_HZ = 1000
PROBE_BASE = 1 << 40  # cmd_seq of readiness probes, outside the measured range
ORIENTATION = (1.0, 0.0, 0.0, 0.0)


def bundle(seq: int, now: float) -> bytes:
    """One servo period for two arms, stamped `now`: what the console sends 1,000 times a second."""
    x = 0.001 * math.sin(seq * 1e-3)
    return ServoBundle((ServoCommand(0, seq, now, (x, 0.0, 0.1), ORIENTATION, 0.2),
                        ServoCommand(1, seq, now, (-x, 0.0, 0.1), ORIENTATION, 0.2))).encode()


# -- the schedule ---------------------------------------------------------------------------------
@dataclass
class Durations:
    """Seconds of each part of the run (0 skips a phase) and the impairments of the phases."""

    warmup: float = 2.0
    steady: float = 10.0
    cut_before: float = 1.0
    cut: float = 2.0
    cut_after: float = 3.0
    loss: float = 10.0
    jitter: float = 10.0
    drain: float = 2.0
    loss_rate: float = 0.01
    jitter_ms: float = 30.0


@dataclass
class Phase:
    """One measurement on a fresh connection: the stream runs `warmup` s, then the window; the
    relay actions are (offset from the stream's start, what, arguments)."""

    name: str
    window: tuple[float, float]
    actions: list[tuple[float, str, dict[str, Any]]]
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def end(self) -> float:
        return self.window[1]


def phases(d: Durations) -> list[Phase]:
    w = d.warmup
    plans = []
    if d.steady > 0:  # the jitter-free profile throughout
        plans.append(Phase("steady", (w, w + d.steady), []))
    if d.cut > 0:
        length = d.cut_before + d.cut + d.cut_after
        down, up = w + d.cut_before, w + d.cut_before + d.cut
        plans.append(Phase("cut", (w, w + length), [(0.0, "revert", {}), (down, "down", {}), (up, "up", {})],
                           {"cut_outage": (down, up)}))
    if d.loss > 0:
        plans.append(Phase("loss", (w, w + d.loss), [(0.0, "revert", {}), (w, "set", {"loss": d.loss_rate})]))
    if d.jitter > 0:
        plans.append(Phase("jitter", (w, w + d.jitter), [(0.0, "revert", {}), (w, "set", {"jitter_ms": d.jitter_ms})]))
    for plan in plans:
        plan.windows = {plan.name: plan.window, **plan.windows}
    return plans


# -- the worker process ---------------------------------------------------------------------------
class Recorder:
    """First arrival time per command (by its cmd_seq); probes only raise a flag."""

    def __init__(self, n: int) -> None:
        self.t_sent = np.full(n, np.nan)
        self.t_recv = np.full(n, np.nan)
        self.duplicates = 0
        self.malformed = 0
        self.probe_seen = threading.Event()

    def receive(self, payload: bytes) -> None:
        now = time.monotonic()
        try:
            message = decode(payload)
        except DecodeError:
            self.malformed += 1
            return
        if not isinstance(message, ServoBundle):
            self.malformed += 1
            return
        seq = message.commands[0].cmd_seq
        if seq >= PROBE_BASE:
            self.probe_seen.set()
        elif seq < len(self.t_recv):
            if math.isnan(self.t_recv[seq]):
                self.t_recv[seq] = now
            else:
                self.duplicates += 1


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the worker, Rust ones included
    return usage.ru_utime + usage.ru_stime


def sender(peer: Any, rec: Recorder, t0: float, n: int, marks: list[float], cpu: list[float]) -> None:
    """1 kHz on an absolute schedule (time.sleep, no spinning: a spinner's CPU would be charged to
    every system alike and hide their differences); CPU sampled as the stream crosses each mark."""
    next_mark = 0
    for seq in range(n):
        due = t0 + seq / RATE_HZ
        while next_mark < len(marks) and due >= t0 + marks[next_mark]:
            cpu.append(cpu_seconds())
            next_mark += 1
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        now = time.monotonic()
        rec.t_sent[seq] = now
        peer.send(bundle(seq, now))
    while next_mark < len(marks):
        cpu.append(cpu_seconds())
        next_mark += 1


def worker(system: str, conn: Any, n: int) -> None:
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_worker(system, conn, n))


async def _worker(system: str, conn: Any, n: int) -> None:
    rec = Recorder(n)
    peer = SYSTEMS[system](rec.receive)
    try:
        targets = await peer.bind()
        conn.send(("targets", targets, list(peer.paths), peer.transport, peer.description))
        relays = await asyncio.to_thread(conn.recv)
        await peer.connect(relays)
        probe = PROBE_BASE
        deadline = time.monotonic() + 30.0
        while not rec.probe_seen.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{system}: no probe came through the relays in 30 s")
            peer.send(bundle(probe, time.monotonic()))
            probe += 1
            await asyncio.sleep(0.02)
        conn.send(("ready",))
        t0, marks, drain = await asyncio.to_thread(conn.recv)
        cpu: list[float] = []
        thread = threading.Thread(target=sender, args=(peer, rec, t0, n, marks, cpu), daemon=True)
        thread.start()
        await asyncio.to_thread(thread.join)
        await asyncio.sleep(drain)
        conn.send(("result", {"t_sent": rec.t_sent, "t_recv": rec.t_recv, "cpu": cpu, "marks": marks,
                              "duplicates": rec.duplicates, "malformed": rec.malformed}))
    except Exception as exc:  # reported to the harness, which prints it with the system's name
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        with contextlib.suppress(Exception):  # closing after a failure must not hide the failure
            await asyncio.wait_for(peer.close(), 5.0)


# -- the harness ----------------------------------------------------------------------------------
class Relays:
    """The paths one system uses, UDP or TCP, from the profile with the run's seed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, profile: Any, paths: list[str], transport: str,
                 targets: dict[str, tuple[str, int]], seed: int) -> None:
        self.loop = loop
        self.relays: dict[str, PathRelay | TcpPathRelay] = {}
        self.listen: dict[str, tuple[str, int]] = {}
        for name in paths:
            spec = profile.path(name)
            if transport == "tcp":
                relay: PathRelay | TcpPathRelay = TcpPathRelay(name, spec.forward, spec.reverse, seed)
                self.listen[name] = relay.start(("127.0.0.1", 0), tuple(targets[name]))
            else:
                relay = PathRelay(name, spec.forward, spec.reverse, seed)
                self.listen[name] = asyncio.run_coroutine_threadsafe(
                    relay.start(("127.0.0.1", 0), tuple(targets[name])), loop).result(5.0)
            self.relays[name] = relay

    def apply(self, what: str, args: dict[str, Any]) -> None:
        now = time.monotonic()
        for name, relay in self.relays.items():
            if what == "set":
                relay.path.set(**args)
            elif what == "revert":
                relay.path.revert("jitter_ms", "loss")
            elif what == "down" and name == "a":
                relay.path.down(now)
            elif what == "up" and name == "a":
                relay.path.up()
            relay.rearm()

    def stats(self) -> dict[str, Any]:
        return {name: relay.stats for name, relay in self.relays.items()}

    def close(self) -> None:
        for relay in self.relays.values():
            if isinstance(relay, TcpPathRelay):
                relay.close()
            else:
                self.loop.call_soon_threadsafe(relay.close)


def expect(conn: Any, kind: str, timeout: float, system: str) -> tuple[Any, ...]:
    if not conn.poll(timeout):
        raise TimeoutError(f"{system}: no {kind!r} from the worker in {timeout:.0f} s")
    message = conn.recv()
    if message[0] == "error":
        raise RuntimeError(f"{system}: {message[1]}")
    return message


def run_phase(system: str, phase: Phase, durations: Durations, profile: Any, seed: int,
              loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    """One phase of one system: a worker process, fresh relays (same seed for every system)."""
    n = int(phase.end * RATE_HZ)
    marks = sorted({t for window in phase.windows.values() for t in window})
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    proc = ctx.Process(target=worker, args=(system, child, n), daemon=True)
    proc.start()
    relays: Relays | None = None
    try:
        _, targets, paths, transport, description = expect(conn, "targets", 60, system)
        relays = Relays(loop, profile, paths, transport, targets, seed)
        relays.apply("set", {"jitter_ms": 0.0, "loss": 0.0})  # steady while the peers connect
        conn.send(relays.listen)
        expect(conn, "ready", 90, system)
        t0 = time.monotonic() + 0.3
        conn.send((t0, marks, durations.drain))
        for offset, what, args in phase.actions:
            time.sleep(max(0.0, t0 + offset - time.monotonic()))
            relays.apply(what, args)
        _, result = expect(conn, "result", phase.end + durations.drain + 60, system)
        relay_stats = relays.stats()
    finally:
        if relays is not None:
            relays.close()
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
    return {"description": description, "paths": paths, "transport": transport,
            **analyse(result, phase, t0, profile.path("a").forward.delay_ms / 1000.0), "relays": relay_stats}


def _ms(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"p50": None, "p99": None, "max": None}
    return {"p50": round(float(np.percentile(values, 50)) * 1000, 3),
            "p99": round(float(np.percentile(values, 99)) * 1000, 3), "max": round(float(values.max()) * 1000, 3)}


def newest_age(t_sent: np.ndarray, t_recv: np.ndarray, start: float, end: float, base: float) -> np.ndarray:
    """Every millisecond of [start, end) (absolute, shifted by path a's delay): how old the newest
    command the receiver had by then was. What a robot's watchdog sees, whatever was lost or skipped."""
    got = ~np.isnan(t_recv)
    order = np.argsort(t_recv[got])
    arrived = t_recv[got][order]
    newest = np.maximum.accumulate(t_sent[got][order])
    grid = np.arange(start + base, end + base, 1.0 / RATE_HZ)
    index = np.searchsorted(arrived, grid, side="right") - 1
    known = index >= 0
    return grid[known] - newest[index[known]]


def analyse(result: dict[str, Any], phase: Phase, t0: float, base: float) -> dict[str, Any]:
    """Figures of each window; `base` is path a's configured one-way delay (latency beyond it is excess)."""
    t_sent, t_recv = result["t_sent"], result["t_recv"]
    cpu = dict(zip(result["marks"], result["cpu"], strict=False))
    out: dict[str, Any] = {}
    for name, (start, end) in phase.windows.items():
        sel = slice(int(start * RATE_HZ), int(end * RATE_HZ))
        sent, recv = t_sent[sel], t_recv[sel]
        got = ~np.isnan(recv)
        delivered = int(got.sum())
        latency = recv[got] - sent[got]
        arrivals = np.sort(recv[got])
        edges = np.concatenate(([t0 + start + base], arrivals, [t0 + end + base]))
        out[name] = {
            "seconds": round(end - start, 3), "offered": int(sent.size), "delivered": delivered,
            "lost": int(sent.size - delivered), "delivered_per_s": round(delivered / (end - start), 1),
            "latency_ms": _ms(latency), "excess_ms": _ms(latency - base),
            "longest_gap_ms": round(float(np.diff(edges).max()) * 1000, 1),
            "newest_age_excess_ms": _ms(newest_age(t_sent, t_recv, t0 + start, t0 + end, base) - base),
        }
        if start in cpu and end in cpu and delivered:
            out[name]["cpu_us_per_delivered"] = round((cpu[end] - cpu[start]) / delivered * 1e6, 1)
            out[name]["cpu_share_pct"] = round((cpu[end] - cpu[start]) / (end - start) * 100, 1)
    trace = None
    if phase.name == "cut":
        start, end = phase.window
        cut_at = phase.windows["cut_outage"][0]
        sel = slice(int(start * RATE_HZ), int(end * RATE_HZ))
        got = ~np.isnan(t_recv[sel])
        trace = {"sent_s": np.round(t_sent[sel][got] - t0 - cut_at, 4).tolist(),
                 "latency_ms": np.round((t_recv[sel][got] - t_sent[sel][got]) * 1000, 3).tolist(),
                 "received_s": np.round(t_recv[sel][got] - t0 - cut_at, 4).tolist()}
    return {"phases": out, "cut_trace": trace, "duplicates": result["duplicates"],
            "malformed": result["malformed"]}


def run_system(system: str, durations: Durations, profile: Any, seed: int, loop: asyncio.AbstractEventLoop,
               progress: Progress, task: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {"phases": {}, "relays": {}, "duplicates": 0, "malformed": 0, "errors": {}}
    for phase in phases(durations):
        progress.update(task, description=f"{system}: {phase.name}")
        try:
            result = run_phase(system, phase, durations, profile, seed, loop)
        except (RuntimeError, TimeoutError, OSError) as exc:
            merged["errors"][phase.name] = str(exc)
        else:
            for key in ("description", "paths", "transport"):
                merged[key] = result[key]
            merged["phases"].update(result["phases"])
            merged["relays"][phase.name] = result["relays"]
            merged["duplicates"] += result["duplicates"]
            merged["malformed"] += result["malformed"]
            if result["cut_trace"] is not None:
                merged["cut_trace"] = result["cut_trace"]
        progress.advance(task)
    return merged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {', '.join(SYSTEMS)}")
    parser.add_argument("--profile", default="shanghai-casablanca", help="netem profile (name or .toml)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="short phases: a smoke run of ~2.5 min")
    defaults = Durations()
    for name, text in (("warmup", "s of stream before each window"), ("steady", "s of the jitter-free phase"),
                       ("cut", "s path a is cut"), ("cut_before", "s before the cut"),
                       ("cut_after", "s after the cut"), ("loss", "s of the 1 %% loss phase"),
                       ("jitter", "s of the 30 ms jitter phase"),
                       ("drain", "s waited for late commands after each stream")):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=None,
                            help=f"{text} (default {getattr(defaults, name):g}; 0 skips the phase)")
    parser.add_argument("--json", type=Path, default=Path("out/bench/peers.json"))
    parser.add_argument("--plot", type=Path, default=Path("out/bench/peers.png"))
    args = parser.parse_args()
    systems = args.systems.split(",")
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"--systems: unknown {unknown}; choose from {', '.join(SYSTEMS)}")
    durations = Durations(warmup=1.0, steady=2.0, cut_before=0.5, cut_after=1.5, loss=2.0, jitter=2.0,
                          drain=1.5) if args.quick else Durations()
    for name in vars(defaults):
        value = getattr(args, name, None)
        if value is not None:
            setattr(durations, name, value)
    profile = load_profile(args.profile)
    console = Console() if sys.stdout.isatty() else Console(width=170)  # a log keeps the whole table
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True, name="relays").start()
    results: dict[str, Any] = {}
    started = time.monotonic()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("systems", total=len(systems) * len(phases(durations)))
        for system in systems:
            results[system] = run_system(system, durations, profile, args.seed, loop, progress, task)
            for phase, error in results[system]["errors"].items():
                console.print(f"[red]{system} ({phase}): {error}")
    console.print(table(results, profile.name, profile.path("a").forward.delay_ms))
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
              "profile": profile.name, "seed": args.seed, "rate_hz": RATE_HZ, "durations": vars(durations),
              "wall_s": round(time.monotonic() - started, 1), "systems": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    if durations.cut > 0:
        plot(results, durations, args.plot)
        console.print(f"written {args.json} and {args.plot}")
    else:
        console.print(f"written {args.json}")
    return 1 if any(r["errors"] for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
