"""`telesurg simulate`: sweep seeded fault scenarios through the whole system under a virtual clock.

Scenario i of a sweep uses seed S + i. Each failure prints its seed and is shrunk to a minimal timeline,
written as `sim-failure-<seed>.toml` (a scenario file, see simulate/timeline.py) that
`telesurg simulate --replay FILE --seed <seed>` reruns and `telesurg demo --scenario FILE` replays.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from telesurg.simulate.runner import ScenarioResult, run_scenario, scenario_timeline, shrink
from telesurg.simulate.timeline import read_timeline, timeline_toml
from telesurg.simulate.world import SimSettings

_CHUNK = 10
_REACTION_BINS_MS = (50.0, 51.0, 52.0, 55.0, 60.0, 100.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenarios", type=int, default=1000, help="how many scenarios (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first scenario (default 0)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: CPUs)")
    parser.add_argument("--seconds", type=float, default=SimSettings.seconds,
                        help=f"simulated seconds per scenario (default {SimSettings.seconds})")
    parser.add_argument("--command-hz", type=float, default=SimSettings.command_hz,
                        help=f"console command rate (default {SimSettings.command_hz:g}; the product sends 1000)")
    parser.add_argument("--out", type=Path, default=Path("."), help="where failing timelines are written")
    parser.add_argument("--replay", type=Path, help="run one timeline file (with --seed) instead of a sweep")
    parser.add_argument("--no-shrink", action="store_true", help="write failing timelines unshrunk")
    parser.add_argument("--plot", type=Path, help="write a PNG of the hold reactions and faults drawn")


def _run_chunk(args: tuple[list[int], SimSettings]) -> list[ScenarioResult]:
    seeds, settings = args
    return [run_scenario(seed, settings) for seed in seeds]


def _results(seeds: list[int], settings: SimSettings, jobs: int) -> Iterator[ScenarioResult]:
    chunks = [(seeds[i:i + _CHUNK], settings) for i in range(0, len(seeds), _CHUNK)]
    if jobs <= 1:
        for chunk in chunks:
            yield from _run_chunk(chunk)
        return
    # spawn, not fork: forked from a process with other threads (a test run's servers, a site's link),
    # a worker can inherit a lock held mid-operation and hang for ever (seen once under pytest)
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for batch in pool.imap_unordered(_run_chunk, chunks):
            yield from batch


def sweep(seeds: list[int], settings: SimSettings, jobs: int, console: Console) -> tuple[list[ScenarioResult], float]:
    results: list[ScenarioResult] = []
    start = time.perf_counter()
    columns = (TextColumn("[bold]simulate"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn())
    # redrawn twice a second, not ten times: this process shares the cores with the workers
    with Progress(*columns, console=console, transient=False, refresh_per_second=2) as progress:
        task = progress.add_task("sweep", total=len(seeds), rate="", failed=0)
        failed = 0
        for result in _results(seeds, settings, jobs):
            results.append(result)
            failed += not result.ok
            elapsed = time.perf_counter() - start
            progress.update(task, advance=1, failed=failed, rate=f"{len(results) / elapsed:.0f} scen/s")
    return results, time.perf_counter() - start


def summary_table(results: list[ScenarioResult], wall_s: float, settings: SimSettings, jobs: int) -> Table:
    table = Table(title="telesurg simulate", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    sim_s = sum(r.sim_seconds for r in results)
    holds = [h for r in results for h in r.holds]
    kinds: Counter[str] = sum((r.fault_kinds for r in results), Counter())
    rows = [
        ("scenarios (passed / failed)", f"{sum(r.ok for r in results)} / {sum(not r.ok for r in results)}"),
        ("violations", str(sum(r.violation_count for r in results))),
        ("simulated s per scenario / command rate", f"{settings.seconds:g} s / {settings.command_hz:g} Hz"),
        ("commands sent (last console) / applied", f"{sum(r.sent for r in results)} / {sum(r.applied for r in results)}"),
        ("commands due while a path delivered / lost",
         f"{sum(r.commands_expected for r in results)} / {sum(r.commands_lost for r in results)}"),
        ("holds / scenarios that latched", f"{len(holds)} / {sum(r.latched for r in results)}"),
        ("console restarts", str(sum(r.restarts for r in results))),
        ("faults drawn", ", ".join(f"{k} {v}" for k, v in kinds.most_common())),
        ("wall time / jobs", f"{wall_s:.1f} s / {jobs}"),
        ("scenarios per wall second", f"{len(results) / wall_s:.1f}"),
        ("simulated seconds per wall second", f"{sim_s / wall_s:.1f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def reaction_table(results: list[ScenarioResult]) -> Table:
    """Distribution of hold reactions (last valid command -> hold), by cause."""
    table = Table(title="hold reactions (ms from the last valid command)")
    for column in ("cause", "holds", "p50", "p99", "max", *(f"<= {b:g}" for b in _REACTION_BINS_MS), "more"):
        table.add_column(column, justify="right")
    by_cause: dict[str, list[float]] = {}
    for r in results:
        for cause, ms in r.holds:
            by_cause.setdefault(cause, []).append(ms)
    for cause, values in sorted(by_cause.items()):
        values.sort()
        bins = [sum(1 for v in values if lo < v <= hi) for lo, hi in
                zip((-1.0, *_REACTION_BINS_MS), _REACTION_BINS_MS, strict=False)]
        more = sum(1 for v in values if v > _REACTION_BINS_MS[-1])
        p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
        table.add_row(cause, str(len(values)), f"{statistics.median(values):.1f}", f"{p99:.1f}",
                      f"{values[-1]:.1f}", *map(str, bins), str(more))
    return table


def plot(results: list[ScenarioResult], settings: SimSettings, path: Path) -> None:
    """Histogram of hold reactions (with the watchdog bound) and the count of each fault drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reactions = [ms for r in results for _, ms in r.holds]
    kinds: Counter[str] = sum((r.fault_kinds for r in results), Counter())
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.hist(reactions, bins=40, color="tab:blue")
    left.axvline(50.0, color="tab:orange", linestyle="--", label="watchdog 50 ms")
    left.axvline(51.0, color="tab:red", linestyle=":", label="watchdog + one period")
    left.set(xlabel="hold reaction: last valid command -> hold (ms)", ylabel="holds",
             title=f"{len(reactions)} holds in {len(results)} scenarios")
    left.legend()
    names = [k for k, _ in kinds.most_common()]
    right.barh(names, [kinds[k] for k in names], color="tab:gray")
    right.set(xlabel="faults drawn", title=f"{settings.seconds:g} s per scenario, commands at "
                                           f"{settings.command_hz:g} Hz")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_failure(result: ScenarioResult, settings: SimSettings, out: Path, do_shrink: bool,
                   console: Console) -> Path:
    timeline = scenario_timeline(result.seed, settings)
    console.print(f"[red]FAILED seed {result.seed}[/red]: {result.violation_count} violations, first:")
    for line in result.violations[:5]:
        console.print(f"  {line}")
    if do_shrink:
        timeline = shrink(result.seed, timeline, settings)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"sim-failure-{result.seed}.toml"
    path.write_text(timeline_toml(timeline, f"telesurg simulate seed {result.seed}, {settings.seconds:g} s at "
                                            f"{settings.command_hz:g} Hz: {result.violations[0]}"), encoding="utf-8")
    console.print(f"  minimal timeline ({timeline.size} events) written to {path}; rerun with "
                  f"telesurg simulate --replay {path} --seed {result.seed}")
    return path


def run(args: argparse.Namespace) -> int:
    console = Console()
    settings = SimSettings(seconds=args.seconds, command_hz=args.command_hz)
    if args.replay is not None:
        timeline = read_timeline(args.replay.read_text(encoding="utf-8"), str(args.replay))
        result = run_scenario(args.seed, settings, timeline)
        console.print(f"replay {args.replay} seed {args.seed}: {'ok' if result.ok else 'FAILED'}")
        for line in result.violations:
            console.print(f"  {line}")
        return 0 if result.ok else 1
    if args.scenarios < 1 or args.seconds <= 0.5:
        console.print("[red]--scenarios must be >= 1 and --seconds > 0.5 (faults start at 0.45 s)[/red]")
        return 2
    seeds = list(range(args.seed, args.seed + args.scenarios))
    results, wall = sweep(seeds, settings, max(1, args.jobs), console)
    results.sort(key=lambda r: r.seed)
    console.print(summary_table(results, wall, settings, max(1, args.jobs)))
    console.print(reaction_table(results))
    if args.plot is not None:
        plot(results, settings, args.plot)
        console.print(f"plot written to {args.plot}")
    failed = [r for r in results if not r.ok]
    for result in failed[:5]:
        report_failure(result, settings, args.out, not args.no_shrink, console)
    if len(failed) > 5:
        console.print(f"... and {len(failed) - 5} more failing seeds: {[r.seed for r in failed[5:50]]}")
    return 1 if failed else 0
