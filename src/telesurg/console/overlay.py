"""Predictive overlay: where the tool is commanded to be (now) and where it was last seen, drawn on the
endoscope picture, so under 100–300 ms of delay the surgeon sees the effect of a motion before the
video shows it (the "ghost" of predictive displays, Bejczy et al. 1990).

The endoscope is modelled as the simulated one (robot/model.py): two pinhole cameras on the ECM tip,
`STEREO_BASELINE` apart along the tip body's x (left eye at +x), looking along the shaft (+z of the
tip body) with image-up along its +y, vertical field of view `fovy` (50°), square pixels and the
principal point at the image centre, as MuJoCo renders them. In MuJoCo's camera frame the camera looks
along -z, x is image-right and y image-up, so a point p projects to

    p_cam = R_camᵀ (p − c),   u = cx + f·x/(−z),   v = cy − f·y/(−z),   f = (h/2) / tan(fovy/2)

(u to the right, v down, pixel centres at integer + 0.5 with MuJoCo's OpenGL convention handled by
cx = w/2, cy = h/2). A real endoscope replaces this with its calibrated intrinsics (OpenCV style K and
distortion) and the hand–eye transform; `PinholeCamera` takes any position/rotation/focal length.
numpy only; it draws into RGB uint8 frames (H×W×3) and never touches the video pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from telesurg.robot.config import CartConfig
from telesurg.robot.kinematics import ArmKinematics, quat_to_matrix
from telesurg.robot.model import STEREO_BASELINE

ENDOSCOPE_FOVY_DEG = 50.0  # robot/model.py camera fovy
COMMANDED_RGB = (0, 230, 255)  # cyan cross: where the console has asked the tool to be now
MEASURED_RGB = (255, 200, 0)  # amber ring: where the robot last reported the tool
# the cameras' rotation relative to the ECM tip body: quat "0 0 1 0" in model.py (180° about y)
_EYE_IN_TIP = np.diag([-1.0, 1.0, -1.0])


@dataclass(frozen=True)
class PinholeCamera:
    """One eye: `position` (m, base frame), `rotation` whose columns are the camera's x (image right),
    y (image up) and z (backwards) axes in the base frame, vertical field of view and resolution."""

    position: np.ndarray
    rotation: np.ndarray
    fovy_deg: float
    width: int
    height: int

    @property
    def focal_px(self) -> float:
        return (self.height / 2) / math.tan(math.radians(self.fovy_deg) / 2)

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) base-frame points -> (N, 2) pixel coordinates (u right, v down); NaN behind the camera."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        cam = (points - self.position) @ self.rotation  # rows: p_cam = Rᵀ (p − c)
        depth = -cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.width / 2 + self.focal_px * cam[:, 0] / depth
            v = self.height / 2 - self.focal_px * cam[:, 1] / depth
        pixels = np.stack([u, v], axis=1)
        pixels[depth <= 1e-6] = np.nan
        return pixels


def stereo_cameras(ecm_position: np.ndarray, ecm_orientation_wxyz: np.ndarray, width: int, height: int,
                   fovy_deg: float = ENDOSCOPE_FOVY_DEG, baseline_m: float = STEREO_BASELINE
                   ) -> tuple[PinholeCamera, PinholeCamera]:
    """(left, right) eyes of the endoscope whose tip pose (ECM `measured_cp`, base frame) is given."""
    tip = quat_to_matrix(np.asarray(ecm_orientation_wxyz, dtype=float))
    rotation = tip @ _EYE_IN_TIP
    half = tip[:, 0] * baseline_m / 2
    centre = np.asarray(ecm_position, dtype=float)
    return (PinholeCamera(centre + half, rotation, fovy_deg, width, height),
            PinholeCamera(centre - half, rotation, fovy_deg, width, height))


def endoscope_home_pose(config: CartConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(position, orientation wxyz) of the ECM tip at its home joints, from the cart configuration: the
    endoscope pose while the ECM is not moved (telemetry carries only the instrument arms today)."""
    arm = next(a for a in (config or CartConfig()).arms if a.kind == "ecm")
    position, orientation = ArmKinematics(arm).forward_quat(np.array(arm.home, dtype=float))
    return np.asarray(position, dtype=float), np.asarray(orientation, dtype=float)


def draw_cross(image: np.ndarray, u: float, v: float, colour: tuple[int, int, int], size: int = 7,
               thickness: int = 1) -> None:
    """A '+' centred on pixel (u, v), clipped to the image; in place."""
    if not (math.isfinite(u) and math.isfinite(v)):
        return
    h, w = image.shape[:2]
    cu, cv = int(math.floor(u)), int(math.floor(v))
    rows = slice(max(cv - thickness, 0), max(min(cv + thickness + 1, h), 0))
    cols = slice(max(cu - thickness, 0), max(min(cu + thickness + 1, w), 0))
    image[rows, max(cu - size, 0):max(min(cu + size + 1, w), 0)] = colour
    image[max(cv - size, 0):max(min(cv + size + 1, h), 0), cols] = colour


def draw_ring(image: np.ndarray, u: float, v: float, colour: tuple[int, int, int], radius: float = 6.0,
              thickness: float = 1.5) -> None:
    """A circle of `radius` px around (u, v), clipped to the image; in place."""
    if not (math.isfinite(u) and math.isfinite(v)):
        return
    h, w = image.shape[:2]
    r = int(radius + thickness) + 1
    v0, v1 = max(int(v) - r, 0), min(int(v) + r + 1, h)
    u0, u1 = max(int(u) - r, 0), min(int(u) + r + 1, w)
    if v0 >= v1 or u0 >= u1:
        return
    vv, uu = np.mgrid[v0:v1, u0:u1]
    distance = np.hypot(uu + 0.5 - u, vv + 0.5 - v)
    image[v0:v1, u0:u1][np.abs(distance - radius) <= thickness / 2 + 0.5] = colour


class PredictiveOverlay:
    """Draws, per instrument, the commanded tool tip (cross) and the last measured one (ring) on both eyes."""

    def __init__(self, width: int, height: int, fovy_deg: float = ENDOSCOPE_FOVY_DEG,
                 baseline_m: float = STEREO_BASELINE) -> None:
        self.width, self.height = width, height
        self.fovy_deg, self.baseline_m = fovy_deg, baseline_m

    def draw(self, left: np.ndarray, right: np.ndarray, ecm_position: np.ndarray, ecm_orientation: np.ndarray,
             commanded: Mapping[object, np.ndarray], measured: Mapping[object, np.ndarray]
             ) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the two RGB frames with the markers; tool positions in the base frame (m)."""
        for frame in (left, right):
            if frame.shape != (self.height, self.width, 3):
                raise ValueError(f"overlay: frame shape {frame.shape} != ({self.height}, {self.width}, 3)")
        cameras = stereo_cameras(ecm_position, ecm_orientation, self.width, self.height, self.fovy_deg,
                                 self.baseline_m)
        out = (left.copy(), right.copy())
        for image, camera in zip(out, cameras, strict=True):
            for position in measured.values():
                draw_ring(image, *camera.project(position)[0], MEASURED_RGB)
            for position in commanded.values():
                draw_cross(image, *camera.project(position)[0], COMMANDED_RGB)
        return out
