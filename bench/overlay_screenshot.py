"""A screenshot of the console's endoscope window with the predictive overlay, for the README.

    MUJOCO_GL=osmesa python bench/overlay_screenshot.py [--png docs/img/overlay-console.png]

The simulated robot puts PSM1's tool 8 mm above a peg; MuJoCo renders the stereo endoscope (640x360
per eye); the console's display code (`with_tools`, `StereoDisplay`, headless SDL) draws the amber ring
where the robot reports the tool and the cyan cross where the console is assumed to have commanded it
already (13 mm further), side by side as on a 3D monitor. Prints the ring's pixel and the tool tip's.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ["SDL_VIDEODRIVER"] = "dummy"

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from telesurg.apps.console_video import with_tools  # noqa: E402
from telesurg.console.overlay import stereo_cameras  # noqa: E402
from telesurg.console.overlay_feed import ToolMarkers, ToolOverlayPainter  # noqa: E402
from telesurg.messages import ArmId  # noqa: E402
from telesurg.robot.driver import Pose  # noqa: E402
from telesurg.robot.render import StereoRenderer  # noqa: E402
from telesurg.robot.scene import default_board  # noqa: E402
from telesurg.robot.sim import SimDriver  # noqa: E402
from telesurg.video.display import StereoDisplay  # noqa: E402

WIDTH, HEIGHT = 640, 360


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png", type=Path, default=Path("overlay-console.png"))
    args = parser.parse_args(argv)
    driver = SimDriver()
    for arm in driver.arms().values():
        arm.state_command("enable")
        arm.state_command("home")
    psm = driver.arms()["PSM1"]
    goal = default_board().peg_top(2) + np.array([0.0, 0.0, 0.008])
    orientation = psm.measured_cp().orientation
    for _ in range(3000):
        psm.servo_cp(Pose(goal, orientation))
        driver.step(0.001)
    measured = psm.measured_cp().position
    commanded = measured + np.array([0.012, 0.006, 0.0])
    renderer = StereoRenderer(driver, WIDTH, HEIGHT)
    try:
        left, right = renderer.render()
    finally:
        renderer.close()
    ecm = driver.arms()["ECM"].measured_cp()
    for eye, camera in zip(("left", "right"), stereo_cameras(ecm.position, ecm.orientation, WIDTH, HEIGHT),
                           strict=True):
        print(f"{eye} eye: tool tip at pixel {np.round(camera.project(measured)[0], 1)}, commanded at "
              f"{np.round(camera.project(commanded)[0], 1)}")
    painter = ToolOverlayPainter(WIDTH, HEIGHT)
    painter.receive(ToolMarkers({ArmId.PSM1: tuple(commanded)}, {ArmId.PSM1: tuple(measured)}).encode())
    window = StereoDisplay(2 * WIDTH, HEIGHT)
    try:
        window.show(*with_tools(painter, True, left, right, []))
        plt.imsave(args.png, window.pixels())
    finally:
        window.close()
    print(f"screenshot: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
