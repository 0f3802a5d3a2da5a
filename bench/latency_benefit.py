"""What the predictive overlay and force feedback are worth at 100–300 ms RTT (issue #16), virtual clock.

    python bench/latency_benefit.py [--rtts 0,100,200,300] [--seeds 8] [--rings 3] [--png F] [--json F]

A modelled surgeon (console/latency_study.py; read its docstring: the human is an assumption and these
figures measure the model) touches the top of each peg of the peg transfer in turn (ring i's start
peg, then its target peg; 3 rings = 6 touches) through a netem link (RTT/2 each way, 2 ms jitter, 1 %
loss), seeing the tool in the video (30 frames/s, +41 ms codec and display). Variants per RTT:
- move-and-wait: no overlay: after each move, wait until the delayed picture settles, then correct;
- + feedback: the same, but contact with the peg top is felt (force back over the link) as well as seen;
- overlay: corrects from the commanded cross at once (no network delay in the loop);
- overlay + feedback;
- continuous, no overlay: corrects from the delayed picture without waiting (what operators learn to
  avoid; shown for reference).
Figures (mean ± sd over seeds): task time (until the tool leaves the last peg), path length of the
tool, the push on the peg top at touch-down (mean over touches, and the peak). The baseline is the
move-and-wait row of the same RTT. Also the demo's scripted surgeon (open loop; the overlay and the
feedback cannot change what it does) over the same link. Plot: the three figures against RTT.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from telesurg.console.latency_study import StudySetup, run_scripted, run_study  # noqa: E402

VARIANTS = {  # name: (overlay, feedback, strategy)
    "move-and-wait": (False, False, "auto"),
    "move-and-wait + feedback": (False, True, "auto"),
    "overlay": (True, False, "auto"),
    "overlay + feedback": (True, True, "auto"),
    "continuous, no overlay": (False, False, "continuous"),
}
BASELINE = "move-and-wait"


def _stats(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {"mean": float(np.nanmean(array)), "sd": float(np.nanstd(array))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtts", default="0,100,200,300", help="round-trip times, ms, comma separated")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--rings", type=int, default=3, help="rings; each is two peg touches")
    parser.add_argument("--png", type=Path, default=Path("bench-latency-benefit.png"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rtts = [float(r) for r in args.rtts.split(",")]
    console = Console(width=130)
    results: dict[str, dict[str, dict]] = {}
    scripted: dict[str, dict] = {}
    with Progress(console=console) as progress:
        task = progress.add_task("sessions", total=len(rtts) * (len(VARIANTS) + 1) * args.seeds)
        for rtt in rtts:
            for name, (overlay, feedback, strategy) in VARIANTS.items():
                runs = []
                for seed in range(args.seeds):
                    runs.append(run_study(StudySetup(rtt_ms=rtt, overlay=overlay, feedback=feedback,
                                                     strategy=strategy, seed=seed, rings=args.rings)))
                    progress.advance(task)
                results.setdefault(f"{rtt:g}", {})[name] = {
                    "task_s": _stats([r.task_s for r in runs]),
                    "path_mm": _stats([r.path_mm for r in runs]),
                    "touch_force_n": _stats([r.mean_touch_force_n for r in runs]),
                    "peak_force_n": max(r.peak_force_n for r in runs),
                    "submovements": _stats([r.submovements for r in runs]),
                    "completed": sum(r.completed for r in runs),
                    "runs": len(runs),
                }
            runs_scripted = []
            for seed in range(args.seeds):
                runs_scripted.append(run_scripted(rtt, seed, args.rings))
                progress.advance(task)
            scripted[f"{rtt:g}"] = {"task_s": _stats([r.task_s for r in runs_scripted]),
                                    "plan_s": runs_scripted[0].plan_s,
                                    "path_mm": _stats([r.path_mm for r in runs_scripted])}

    table = Table(title=f"peg-top touches ({2 * args.rings}) by a modelled surgeon, mean ± sd over {args.seeds} seeds; "
                        f"ratio vs {BASELINE} at the same RTT")
    for column in ("RTT ms", "variant", "task s", "ratio", "path mm", "touch force N", "peak N", "moves",
                   "done"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for rtt, variants in results.items():
        base = variants[BASELINE]["task_s"]["mean"]
        for name, r in variants.items():
            table.add_row(rtt, name, f"{r['task_s']['mean']:.2f} ± {r['task_s']['sd']:.2f}",
                          f"{r['task_s']['mean'] / base:.2f}", f"{r['path_mm']['mean']:.0f} ± {r['path_mm']['sd']:.0f}",
                          f"{r['touch_force_n']['mean']:.1f} ± {r['touch_force_n']['sd']:.1f}",
                          f"{r['peak_force_n']:.1f}", f"{r['submovements']['mean']:.1f}",
                          f"{r['completed']}/{r['runs']}")
        table.add_section()
    console.print(table)
    table = Table(title=f"the demo's scripted surgeon ({args.rings} rings, open loop: overlay and feedback change "
                        "nothing it does)")
    for column in ("RTT ms", "script s", "task s (tool settled)", "path mm"):
        table.add_column(column, justify="right")
    for rtt, r in scripted.items():
        table.add_row(rtt, f"{r['plan_s']:.2f}", f"{r['task_s']['mean']:.3f}", f"{r['path_mm']['mean']:.1f}")
    console.print(table)

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    x = [float(r) for r in results]
    for name in VARIANTS:
        for axis, key in zip(axes, ("task_s", "path_mm", "touch_force_n"), strict=True):
            means = [results[r][name][key]["mean"] for r in results]
            sds = [results[r][name][key]["sd"] for r in results]
            axis.errorbar(x, means, yerr=sds, marker="s" if "feedback" in name else "o", capsize=3, label=name,
                          linestyle="--" if "feedback" in name else "-")  # feedback dashed: lines overlap
    for axis, label in zip(axes, ("task time (s)", "tool path length (mm)", "push on the peg top at touch-down (N)"),
                           strict=True):
        axis.set_xlabel("round-trip time (ms)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"modelled surgeon, {2 * args.rings} peg touches, {args.seeds} seeds (console/latency_study.py: "
                    "the human is a model)")
    figure.tight_layout()
    figure.savefig(args.png, dpi=110)
    console.print(f"plot: {args.png}")
    if args.json is not None:
        args.json.write_text(json.dumps({"study": results, "scripted": scripted, "seeds": args.seeds,
                                         "rings": args.rings}, indent=1))
        console.print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
