"""Benchmark of the simulated cart: 1 kHz `SimDriver.step` cost, stereo render time, 6-ring task.

Timings on a shared 2-core VM are noisy, so every figure is printed next to a baseline measured in
the same run: a bare `mujoco.mj_step` on the same model (the floor for `step`).
Usage: python bench/robot_sim.py [--rings 6] [--json out/robot_sim.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("MUJOCO_GL", "osmesa")

import mujoco
import numpy as np

from telesurg.robot.driver import Pose
from telesurg.robot.peg_transfer import peg_transfer_plan
from telesurg.robot.render import StereoRenderer
from telesurg.robot.sim import SimDriver
from telesurg.robot.testing import enable_and_home


def ready_driver() -> SimDriver:
    return enable_and_home(SimDriver())


def percentiles(samples_us: list[float]) -> dict[str, float]:
    a = np.array(samples_us)
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)), "mean_us": float(a.mean())}


def bench_step(n: int = 5000) -> dict:
    driver = ready_driver()
    bare, step = [], []
    for _ in range(n):  # interleave so both see the same machine load
        t0 = time.perf_counter()
        mujoco.mj_step(driver.model, driver.data)
        t1 = time.perf_counter()
        driver.step(0.001)
        t2 = time.perf_counter()
        bare.append((t1 - t0) * 1e6)
        step.append((t2 - t1) * 1e6)
    arm = driver.arms()["PSM1"]
    home = arm.measured_cp()
    servo = []
    for k in range(n):
        t0 = time.perf_counter()
        arm.servo_cp(Pose(home.position + [0.0, 0.0, -0.01 * np.sin(k / 500)], home.orientation))
        driver.step(0.001)
        servo.append((time.perf_counter() - t0) * 1e6)
    return {"bare_mj_step": percentiles(bare), "driver_step": percentiles(step),
            "servo_cp_plus_step": percentiles(servo)}


BASELINE_SCENE = """<mujoco><visual><global offwidth="1280" offheight="720"/></visual><worldbody>
<light pos="0 0 1"/><geom type="plane" size="1 1 .1"/><geom type="box" size=".1 .1 .1" pos="0 0 .1"/>
<camera name="c" pos="0 -1 0.5" xyaxes="1 0 0 0 0.5 1"/></worldbody></mujoco>"""


def bench_render(width: int, height: int, frames: int = 20) -> dict:
    """Per-eye render time, next to one camera of a trivial scene (osmesa's fixed cost) in the same run."""
    model = mujoco.MjModel.from_xml_string(BASELINE_SCENE)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    with mujoco.Renderer(model, height=height, width=width) as baseline:
        baseline.update_scene(data, camera="c")
        baseline.render()
        t0 = time.perf_counter()
        for _ in range(frames):
            baseline.update_scene(data, camera="c")
            baseline.render()
        baseline_ms = (time.perf_counter() - t0) / frames * 1e3
    driver = ready_driver()
    renderer = StereoRenderer(driver, width, height)
    try:
        renderer.render()  # warm-up
        t0 = time.perf_counter()
        for _ in range(frames):
            renderer.render()
        per_eye_ms = (time.perf_counter() - t0) / frames / 2 * 1e3
    finally:
        renderer.close()
    return {"width": width, "height": height, "per_eye_ms": per_eye_ms, "stereo_fps": 1e3 / (2 * per_eye_ms),
            "baseline_trivial_scene_ms": baseline_ms}


def bench_task(rings: int, handover: bool) -> dict:
    driver = ready_driver()
    arms = driver.arms()
    plan = peg_transfer_plan(driver, rings=rings, handover=handover)
    t0 = time.perf_counter()
    steps = round((plan.duration + 0.5) / 0.001)
    for k in range(steps):
        for name, target in plan.sample(k * 0.001).items():
            arms[name].servo_cp(Pose(target.position, target.orientation))
            arms[name].servo_jaw(target.jaw)
        driver.step(0.001)
    wall = time.perf_counter() - t0
    return {"rings": rings, "handover": handover, "sim_seconds": plan.duration, "wall_seconds": wall,
            "rings_on_target": driver.rings_on_target()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rings", type=int, default=6)
    parser.add_argument("--json", default="out/robot_sim.json")
    args = parser.parse_args()
    result = {"step": bench_step(), "render": [bench_render(1280, 720), bench_render(640, 360)],
              "task": [bench_task(args.rings, handover=False), bench_task(args.rings, handover=True)]}
    print(json.dumps(result, indent=2))
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
