"""`StereoRenderer`: the simulated stereo endoscope's two off-screen cameras (MuJoCo, CPU or GPU GL)."""

from __future__ import annotations

import mujoco
import numpy as np

from telesurg.robot.sim import SimDriver


class StereoRenderer:
    """Two off-screen cameras on the endoscope tip (5 mm baseline) looking at the board.

    With osmesa this is CPU rendering: render small (640x360) or at a lower rate than the servo loop.
    `fast` (default) turns off multisample anti-aliasing, shadows and reflections, which the CPU
    rasteriser pays for dearly: a 640x360 stereo pair took 120 ms with them and 42 ms without
    (1280x720: 159 ms -> 58 ms), measured here. It also tessellates the round shapes (pegs, rings,
    tools) with 12x6 instead of 28x16 facets, which halves the remaining cost (640x360: 39 -> 18 ms
    per pair) with no difference visible at endoscope distance. It changes the driver's model's visual quality, so
    give the renderer a driver of its own (the robot's video process does).
    Call `close()` explicitly; MuJoCo's renderer finaliser complains at interpreter shutdown.
    """

    def __init__(self, driver: SimDriver, width: int = 640, height: int = 360, arm: str = "ECM",
                 *, fast: bool = True) -> None:
        if not (0 < width <= 1280 and 0 < height <= 720):
            raise ValueError(f"width x height must be within 1280x720 (the model's offscreen buffer), got "
                             f"{width}x{height}")
        self._driver = driver
        if fast:
            driver.model.vis.quality.offsamples = 0
            driver.model.vis.quality.numslices = 12
            driver.model.vis.quality.numstacks = 6
        self._renderer = mujoco.Renderer(driver.model, height=height, width=width)
        if fast:
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                         mujoco.mjtRndFlag.mjRND_SKYBOX):
                self._renderer.scene.flags[flag] = False
        self._cameras = (f"{arm}_left", f"{arm}_right")

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) RGB uint8 images, HxWx3."""
        images = []
        for camera in self._cameras:
            self._renderer.update_scene(self._driver.data, camera=camera)
            images.append(self._renderer.render().copy())
        return images[0], images[1]

    def close(self) -> None:
        self._renderer.close()
