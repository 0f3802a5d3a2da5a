"""Cost of one servo period on the kinematic driver, against the MuJoCo cart in the same run.

    python bench/kinematic_driver.py [--rounds 5] [--periods 2000] [--json F]

Per period, as the servo loop does for a following arm: `servo_cp` (a 2 mm sine along x) and
`measured_cp` on PSM1, then `driver.step(1 ms)` for all three arms. Kinematic driver with encoder
noise on (1e-4 rad, 1e-5 m: a noise draw per arm per period), MuJoCo `SimDriver` as the baseline,
interleaved rounds; p50 of wall time per period (perf_counter), median over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("MUJOCO_GL", "osmesa")

import numpy as np  # noqa: E402

from telesurg.robot.driver import Driver, Pose  # noqa: E402
from telesurg.robot.kinematic_driver import KinematicConfig, KinematicDriver  # noqa: E402
from telesurg.robot.sim import SimDriver  # noqa: E402
from telesurg.robot.testing import enable_and_home  # noqa: E402


def period_p50_us(driver: Driver, periods: int) -> float:
    arm = driver.arms()["PSM1"]
    start = arm.measured_cp()
    samples = []
    for i in range(periods):
        target = Pose(start.position + np.array([0.002 * np.sin(i / 200), 0.0, 0.0]), start.orientation)
        t0 = time.perf_counter()
        arm.servo_cp(target)
        arm.measured_cp()
        driver.step(0.001)
        samples.append(time.perf_counter() - t0)
    return float(np.percentile(samples, 50) * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--periods", type=int, default=2000)
    parser.add_argument("--json")
    args = parser.parse_args()
    drivers = {"kinematic": enable_and_home(KinematicDriver(settings=KinematicConfig(encoder_noise_rad=1e-4, encoder_noise_m=1e-5))),
               "mujoco": enable_and_home(SimDriver())}
    rounds: dict[str, list[float]] = {name: [] for name in drivers}
    for _ in range(args.rounds):
        for name, driver in drivers.items():
            rounds[name].append(period_p50_us(driver, args.periods))
    median = {name: float(np.median(values)) for name, values in rounds.items()}
    ratio = median["kinematic"] / median["mujoco"]
    print("p50 us per period by round:", {name: [round(v) for v in values] for name, values in rounds.items()})
    print(f"kinematic {median['kinematic']:.0f} us vs mujoco {median['mujoco']:.0f} us per period: {ratio:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": rounds, "median_us": median, "ratio": ratio}, f, indent=2)


if __name__ == "__main__":
    main()
