"""Predictive overlay: our pinhole model of the endoscope lands on the pixels MuJoCo renders."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from telesurg.console.overlay import (
    COMMANDED_RGB,
    MEASURED_RGB,
    PredictiveOverlay,
    endoscope_home_pose,
    stereo_cameras,
)
from telesurg.robot.sim import SimDriver
from telesurg.robot.testing import enable_and_home

WIDTH, HEIGHT = 640, 360
MAX_ERROR_PX = 0.5


def ready_driver() -> SimDriver:
    return enable_and_home(SimDriver())


def marker_centroid(renderer: mujoco.Renderer, data: mujoco.MjData, camera: str, point: np.ndarray) -> np.ndarray:
    """Pixel centroid of a 1.5 mm sphere drawn at `point` by MuJoCo: the difference of two renders."""
    renderer.update_scene(data, camera=camera)
    plain = renderer.render().astype(int)
    renderer.update_scene(data, camera=camera)
    scene = renderer.scene
    mujoco.mjv_initGeom(scene.geoms[scene.ngeom], int(mujoco.mjtGeom.mjGEOM_SPHERE), np.array([0.0015, 0, 0]),
                        np.asarray(point, dtype=float), np.eye(3).ravel(), np.array([0.0, 1.0, 0.0, 1.0], "f4"))
    scene.ngeom += 1
    marked = renderer.render().astype(int)
    changed = np.abs(marked - plain).sum(axis=2) > 30
    rows, cols = np.nonzero(changed)
    assert rows.size > 10, f"marker at {point} not visible in {camera}"
    return np.array([cols.mean() + 0.5, rows.mean() + 0.5])  # pixel centres


def test_projection_matches_mujoco_rendering_within_half_a_pixel():
    driver = ready_driver()
    ecm = driver.arms()["ECM"].measured_cp()
    home_position, home_orientation = endoscope_home_pose()  # what a console computes without telemetry
    np.testing.assert_allclose(home_position, ecm.position, atol=1e-5)
    np.testing.assert_allclose(np.abs(home_orientation @ ecm.orientation), 1.0, atol=1e-6)
    left, right = stereo_cameras(ecm.position, ecm.orientation, WIDTH, HEIGHT)
    for eye, camera in (("ECM_left", left), ("ECM_right", right)):  # the camera model, exactly
        cam = driver.model.camera(eye).id
        np.testing.assert_allclose(camera.position, driver.data.cam_xpos[cam], atol=1e-9)
        np.testing.assert_allclose(camera.rotation, driver.data.cam_xmat[cam].reshape(3, 3), atol=1e-6)  # MJCF %.6g
    grid = [np.array([x, y, z]) for x in (-0.05, -0.02, 0.01, 0.04) for y in (-0.035, 0.0, 0.035)
            for z in (0.03, 0.045)]  # above the pegs (22 mm) so nothing hides the marker
    inside = [p for p in grid if all(20 < c.project(p)[0, 0] < WIDTH - 20 and 20 < c.project(p)[0, 1] < HEIGHT - 20
                                     for c in (left, right))]
    points = inside + [driver.board.peg_top(i) + np.array([0, 0, 0.002]) for i in (2, 8)]  # clear of the peg
    assert len(points) >= 10
    renderer = mujoco.Renderer(driver.model, height=HEIGHT, width=WIDTH)
    errors = []
    try:
        for eye, camera in (("ECM_left", left), ("ECM_right", right)):
            for point in points:
                rendered = marker_centroid(renderer, driver.data, eye, point)
                errors.append(float(np.linalg.norm(camera.project(point)[0] - rendered)))
    finally:
        renderer.close()
    print(f"overlay projection error vs MuJoCo render: mean {np.mean(errors):.3f} px, max {np.max(errors):.3f} px "
          f"over {len(errors)} points ({WIDTH}x{HEIGHT})")
    assert max(errors) < MAX_ERROR_PX
    # the two eyes disagree by the stereo parallax, so a swapped eye would fail above
    assert np.linalg.norm(left.project(points[0]) - right.project(points[0])) > 3.0


def test_overlay_draws_both_markers_on_both_eyes_and_skips_points_behind():
    driver = ready_driver()
    ecm = driver.arms()["ECM"].measured_cp()
    overlay = PredictiveOverlay(WIDTH, HEIGHT)
    blank = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    tool = driver.board.peg_top(2)  # mid-picture in both eyes (the tools at home sit at the picture's edges)
    behind = ecm.position + 0.5 * (ecm.position - tool)  # behind the endoscope: not drawn
    out_left, out_right = overlay.draw(blank, blank, ecm.position, ecm.orientation,
                                       commanded={1: tool + np.array([0.005, 0, 0]), 2: behind}, measured={1: tool})
    assert not blank.any()  # inputs untouched
    for image, camera in zip((out_left, out_right), stereo_cameras(ecm.position, ecm.orientation, WIDTH, HEIGHT),
                             strict=True):
        u, v = camera.project(tool)[0]
        cyan = np.all(image == COMMANDED_RGB, axis=2)
        amber = np.all(image == MEASURED_RGB, axis=2)
        assert cyan.sum() > 10 and amber.sum() > 10
        rows, cols = np.nonzero(amber)
        assert abs(cols.mean() + 0.5 - u) < 1.0 and abs(rows.mean() + 0.5 - v) < 1.0  # ring centred on the tool
        assert np.isnan(camera.project(behind)).all()
    with pytest.raises(ValueError, match="frame shape"):
        overlay.draw(blank[:10], blank, ecm.position, ecm.orientation, {}, {})
