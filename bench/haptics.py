"""Energy and stability of delayed force feedback, passivity controller ON vs OFF (virtual clock).

    python bench/haptics.py [--delays 0,50,100,150,200,300] [--seeds 3] [--seconds 5] [--png F] [--json F]

Runs console/haptics/teleop_sim.py (master + human arm, netem delay line with 2 ms jitter and 1 % loss
each way, position-controlled tool against a 10 kN/m wall, forces back at 500 Hz) for every delay and
seed, with the time-domain passivity controller ON and OFF; saturation and travel bound are lifted
(10 N, 1 m) so only the controller differs, and a third column runs the product defaults
(`HapticsConfig(enabled=True)`). Per delay it prints, over the hold window (after 2.5 s):
- energy bound: max over the run of E_out - E_in,remote (J), the energy the delayed loop generated
  and handed to the master; 0 for a passive port;
- E_out: energy delivered to the master by the feedback over the run (J);
- master speed RMS (mm/s) and zero crossings of the master velocity (2 mm/s deadband);
- peak rendered force (N).
The baseline is the OFF column of the same run. Plot: master position, rendered force and E_out vs
time, ON vs OFF, one colour per delay. No sockets, no real clock: the figures do not depend on load.
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

from telesurg.console.haptics.config import HapticsConfig, PassivityConfig  # noqa: E402
from telesurg.console.haptics.teleop_sim import LoopSetup, figures, run_loop  # noqa: E402

HOLD_FROM_S = 2.5
VARIANTS = {
    "ON": HapticsConfig(enabled=True, max_force_n=10.0, max_feedback_travel_m=1.0),
    "OFF": HapticsConfig(enabled=True, max_force_n=10.0, max_feedback_travel_m=1.0,
                         passivity=PassivityConfig(enabled=False)),
    "defaults": HapticsConfig(enabled=True),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays", default="0,50,100,150,200,300", help="one-way delays, ms, comma separated")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--png", type=Path, default=Path("bench-haptics.png"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    delays = [float(d) for d in args.delays.split(",")]
    console = Console(width=120)
    results: dict[str, dict[str, dict[str, float]]] = {}
    traces: dict[tuple[str, float], dict[str, np.ndarray]] = {}
    with Progress(console=console) as progress:
        task = progress.add_task("runs", total=len(delays) * args.seeds * len(VARIANTS))
        for delay in delays:
            for name, config in VARIANTS.items():
                runs = []
                for seed in range(args.seeds):
                    trace = run_loop(LoopSetup(one_way_delay_ms=delay, seed=seed, seconds=args.seconds), config)
                    if seed == 0:
                        traces[(name, delay)] = trace.arrays()
                    runs.append(figures(trace, HOLD_FROM_S))
                    progress.advance(task)
                results.setdefault(f"{delay:g}", {})[name] = {
                    "energy_bound_j": max(r.energy_excess_j for r in runs),
                    "energy_out_j": max(r.energy_out_j for r in runs),
                    "speed_rms_mm_s": 1000 * max(r.speed_rms_m_per_s for r in runs),
                    "zero_crossings": max(r.speed_zero_crossings for r in runs),
                    "peak_force_n": max(r.peak_rendered_n for r in runs),
                    "dissipated_j": max(r.dissipated_j for r in runs),
                }
    table = Table(title=f"delayed force feedback, worst of {args.seeds} seeds (hold window from {HOLD_FROM_S} s)")
    for column in ("one-way ms", "variant", "energy bound J", "E_out J", "speed RMS mm/s", "zero x",
                   "peak N", "dissipated J"):
        table.add_column(column, justify="right")
    for delay, variants in results.items():
        for name, r in variants.items():
            table.add_row(delay, name, f"{r['energy_bound_j']:.4f}", f"{r['energy_out_j']:.4f}",
                          f"{r['speed_rms_mm_s']:.2f}", str(r["zero_crossings"]), f"{r['peak_force_n']:.2f}",
                          f"{r['dissipated_j']:.4f}")
    console.print(table)
    for delay, variants in results.items():
        if float(delay) == 0.0:
            continue  # nothing to compare: both are stable without delay
        on, off = variants["ON"], variants["OFF"]
        console.print(f"{delay} ms: OFF/ON energy bound {off['energy_bound_j'] / max(on['energy_bound_j'], 1e-9):.0f}x, "
                      f"speed RMS {off['speed_rms_mm_s'] / max(on['speed_rms_mm_s'], 1e-6):.0f}x")
    plot(traces, delays, args.png)
    console.print(f"plot: {args.png}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def plot(traces: dict[tuple[str, float], dict[str, np.ndarray]], delays: list[float], path: Path) -> None:
    fig, axes = plt.subplots(3, 2, figsize=(12, 9), sharex=True)
    for column, name in enumerate(("ON", "OFF")):
        for delay in delays:
            a = traces[(name, delay)]
            axes[0, column].plot(a["t"], 1000 * a["master_x"], label=f"{delay:g} ms")
            axes[1, column].plot(a["t"], a["rendered_n"], lw=0.8)
            axes[2, column].semilogy(a["t"], np.maximum(a["energy_out_j"], 1e-6), lw=0.8)
        axes[0, column].set_title(f"passivity controller {name}")
        axes[2, column].set_xlabel("time (s)")
    axes[0, 0].set_ylabel("master x (mm)")
    axes[1, 0].set_ylabel("force on master (N)")
    axes[2, 0].set_ylabel("energy to master (J)")
    axes[0, 0].legend(title="one-way delay")
    fig.suptitle("position-forward / force-back teleoperation against a stiff wall (virtual clock)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
