"""A scripted FLS peg transfer in tool space, the stand-in for a surgeon in tests and the demo.

PSM1 picks each ring at the side of its tube nearest the arms (jaw pointing down, fingers opening
radially so one finger goes inside the ring), lifts it over the pegs, lowers it around a target
peg, opens and moves on; the other arms hold their home poses. With `handover=True` PSM1 instead
brings the ring to a point between the groups, PSM2 takes it at its +x side, PSM1 lets go, and
PSM2 places it, as in the FLS task; the two tracks wait for each other at the handover. Between keyframes motion follows a
minimum-jerk profile (zero velocity and acceleration at each keyframe), positions interpolate
linearly and orientations by slerp, so `sample(t)` is smooth and starts exactly at the home poses.
Segment durations are set from a peak speed of 0.05 m/s, half the supervisor's 0.1 mm/ms cap.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

from . import scene
from .config import CartConfig
from .kinematics import ArmKinematics, matrix_to_quat, quat_to_matrix

PEAK_SPEED = 0.05  # m/s
PEAK_ANGULAR_SPEED = 1.0  # rad/s
MIN_JERK_PEAK_FACTOR = 1.875  # peak / mean speed of a minimum-jerk move
JAW_OPEN, JAW_SQUEEZE = 0.8, -0.2  # rad; a negative command keeps gripping force on the ring
CARRY_HEIGHT = 0.036  # tool tip z while carrying: ring bottom clears the peg tops
GRASP_HEIGHT = 0.0008  # tool tip z when pinching a ring lying on the board
RELEASE_HEIGHT = 0.004
JAW_DWELL = 0.5  # s to close or open the jaw and let contacts settle
# tool frame for grasping: z down, x along -y (radial at the grasp point), so fingers open radially
GRASP_ORIENTATION = matrix_to_quat(np.column_stack([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]))


# position (x, y, z), orientation (w, x, y, z), jaw: a ToolTarget on plain floats
FloatTarget = tuple[tuple[float, float, float], tuple[float, float, float, float], float]


@dataclass(frozen=True, slots=True)
class ToolTarget:
    """Where one arm's tool should be: position (m, base frame), quaternion (w, x, y, z), jaw (rad)."""

    position: np.ndarray
    orientation: np.ndarray
    jaw: float


def _slerp(q0: tuple[float, ...], q1: tuple[float, ...], s: float) -> tuple[float, float, float, float]:
    """Shortest-arc interpolation, unrolled on plain floats: the console samples the plan at 1 kHz,
    and numpy's per-call overhead on 4-element arrays cost more than the arithmetic."""
    w0, x0, y0, z0 = q0
    w1, x1, y1, z1 = q1
    dot = w0 * w1 + x0 * x1 + y0 * y1 + z0 * z1
    if dot < 0.0:
        w1, x1, y1, z1, dot = -w1, -x1, -y1, -z1, -dot
    if dot > 0.9995:
        w, x, y, z = w0 + s * (w1 - w0), x0 + s * (x1 - x0), y0 + s * (y1 - y0), z0 + s * (z1 - z0)
        norm = math.sqrt(w * w + x * x + y * y + z * z)
        return w / norm, x / norm, y / norm, z / norm
    theta = math.acos(dot)
    sin_theta = math.sin(theta)
    k0, k1 = math.sin((1 - s) * theta) / sin_theta, math.sin(s * theta) / sin_theta
    return k0 * w0 + k1 * w1, k0 * x0 + k1 * x1, k0 * y0 + k1 * y1, k0 * z0 + k1 * z1


def _angle_between(q0: np.ndarray, q1: np.ndarray) -> float:
    return 2.0 * math.acos(min(1.0, abs(float(q0 @ q1))))


def min_jerk(s: float) -> float:
    """Minimum-jerk time scaling: 0→1 with zero velocity and acceleration at both ends."""
    s = min(1.0, max(0.0, s))
    return s * s * s * (10.0 - 15.0 * s + 6.0 * s * s)


@dataclass
class _Track:
    """Keyframes of one arm: times (s, increasing) and targets."""

    times: list[float] = field(default_factory=list)
    targets: list[ToolTarget] = field(default_factory=list)
    _floats: list[FloatTarget] = field(default_factory=list)

    def add(self, target: ToolTarget, duration: float | None = None) -> None:
        if not self.times:
            self.times.append(0.0)
        else:
            previous = self.targets[-1]
            if duration is None:
                distance = float(np.linalg.norm(target.position - previous.position))
                turn = _angle_between(previous.orientation, target.orientation)
                duration = max(0.3, MIN_JERK_PEAK_FACTOR * max(distance / PEAK_SPEED, turn / PEAK_ANGULAR_SPEED))
            self.times.append(self.times[-1] + duration)
        self.targets.append(target)
        x, y, z = map(float, target.position)
        w, qx, qy, qz = map(float, target.orientation)
        self._floats.append(((x, y, z), (w, qx, qy, qz), float(target.jaw)))

    def sample(self, t: float) -> ToolTarget:
        position, orientation, jaw = self.sample_floats(t)
        return ToolTarget(np.array(position), np.array(orientation), jaw)

    def sample_floats(self, t: float) -> FloatTarget:
        """`sample` as plain floats ((x, y, z), (w, x, y, z), jaw): what the 1 kHz console consumes,
        without building arrays it would only take apart again."""
        k = bisect.bisect_right(self.times, t)
        if k == 0:
            return self._floats[0]
        if k >= len(self.times):
            return self._floats[-1]
        (p0, q0, jaw0), (p1, q1, jaw1) = self._floats[k - 1], self._floats[k]
        s = min_jerk((t - self.times[k - 1]) / (self.times[k] - self.times[k - 1]))
        x0, y0, z0 = p0
        x1, y1, z1 = p1
        return (x0 + s * (x1 - x0), y0 + s * (y1 - y0), z0 + s * (z1 - z0)), _slerp(q0, q1, s), \
            jaw0 + s * (jaw1 - jaw0)


class PegTransferPlan:
    """Tool targets for every arm as a function of task time; `duration` is the task length (s)."""

    def __init__(self, tracks: dict[str, _Track], rings: list[int], target_pegs: list[int]) -> None:
        self._tracks = tracks
        self.rings = rings
        self.target_pegs = target_pegs
        self.duration = max(track.times[-1] for track in tracks.values())

    def sample(self, t: float) -> dict[str, ToolTarget]:
        return {name: track.sample(t) for name, track in self._tracks.items()}

    def sample_floats(self, t: float) -> dict[str, FloatTarget]:
        """`sample` as plain float tuples per arm (see `_Track.sample_floats`)."""
        return {name: track.sample_floats(t) for name, track in self._tracks.items()}

    def only(self, names: list[str]) -> PegTransferPlan:
        """The same plan for just these arms (a console driving the PSMs need not sample the ECM 1000
        times a second); the task keeps its full duration."""
        missing = sorted(set(names) - set(self._tracks))
        if missing:
            raise KeyError(f"the plan has no track for {missing}; it has {sorted(self._tracks)}")
        subset = PegTransferPlan({name: self._tracks[name] for name in names}, self.rings, self.target_pegs)
        subset.duration = self.duration
        return subset


def _at(xy: np.ndarray, z: float) -> np.ndarray:
    return np.array([xy[0], xy[1], z])


def _pick(track: _Track, grasp: np.ndarray, orientation: np.ndarray) -> None:
    """Open above the grasp point, descend, squeeze, lift to carry height."""
    for z, jaw, duration in ((CARRY_HEIGHT, JAW_OPEN, None), (GRASP_HEIGHT, JAW_OPEN, None),
                             (GRASP_HEIGHT, JAW_SQUEEZE, JAW_DWELL), (CARRY_HEIGHT, JAW_SQUEEZE, None)):
        track.add(ToolTarget(_at(grasp, z), orientation, jaw), duration)


def _place(track: _Track, place: np.ndarray, orientation: np.ndarray) -> None:
    """Carry over the peg, lower the ring around it, open, rise."""
    for z, jaw, duration in ((CARRY_HEIGHT, JAW_SQUEEZE, None), (RELEASE_HEIGHT, JAW_SQUEEZE, None),
                             (RELEASE_HEIGHT, JAW_OPEN, JAW_DWELL), (CARRY_HEIGHT, JAW_OPEN, None)):
        track.add(ToolTarget(_at(place, z), orientation, jaw), duration)


def _hold_until(track: _Track, t: float) -> None:
    """Keep the last target until time `t`, so two arms' tracks stay in step."""
    if t > track.times[-1]:
        track.add(track.targets[-1], t - track.times[-1])


def peg_transfer_plan(driver_or_scene: object, rings: int = 6, config: CartConfig | None = None,
                      arm: str = "PSM1", handover: bool = False) -> PegTransferPlan:
    """Plan moving `rings` rings from their start pegs to the target pegs.

    `driver_or_scene` is a `SimDriver` (uses its config and the rings' actual positions) or a
    `scene.PegBoard` (uses the nominal start positions and `config`, default `CartConfig()`).
    With `handover=False`, `arm` does everything; with `handover=True`, PSM1 picks each ring and
    passes it mid-air to PSM2, which places it (the FLS way).
    """
    if isinstance(driver_or_scene, scene.PegBoard):
        board, config = driver_or_scene, config or CartConfig()
        ring_centres = np.array([board.ring_start_position(i) for i in range(board.ring_count)])
    elif hasattr(driver_or_scene, "ring_positions") and hasattr(driver_or_scene, "board"):
        board, config = driver_or_scene.board, config or driver_or_scene.config
        ring_centres = driver_or_scene.ring_positions()
    else:
        raise TypeError(f"driver_or_scene must be a SimDriver or a PegBoard, got {type(driver_or_scene).__name__}")
    if not 1 <= rings <= board.ring_count:
        raise ValueError(f"rings must be between 1 and {board.ring_count}, got {rings}")
    pickers = ("PSM1", "PSM2") if handover else (arm,)
    for name in pickers:
        if config.arm(name).kind != "psm":
            raise ValueError(f"arm: {name!r} has no jaw; pick an instrument arm (PSM)")

    tracks: dict[str, _Track] = {}
    for arm_config in config.arms:
        position, quat = ArmKinematics(arm_config).forward_quat(np.array(arm_config.home))
        tracks[arm_config.name] = _Track()
        tracks[arm_config.name].add(ToolTarget(position, quat, 0.0))
    down = GRASP_ORIENTATION
    radial = quat_to_matrix(down)[:, 0] * scene.RING_MAJOR_RADIUS  # tool x points from ring centre to grasp
    order = list(range(rings))
    targets = [board.target_pegs[i] for i in order]
    for ring, peg in zip(order, targets, strict=True):
        place = np.array([*board.pegs[peg], 0.0])
        if handover:
            _handover_one(tracks["PSM1"], tracks["PSM2"], ring_centres[ring], place)
        else:
            _pick(tracks[arm], ring_centres[ring] + radial, down)
            _place(tracks[arm], place + radial, down)
    end = 0.0
    for name in pickers:  # back home, jaw closed
        home = tracks[name].targets[0]
        tracks[name].add(ToolTarget(home.position, home.orientation, 0.0))
        end = max(end, tracks[name].times[-1])
    for track in tracks.values():
        _hold_until(track, end)
    return PegTransferPlan(tracks, order, targets)


HANDOVER_CENTRE = np.array([0.0, -0.004, CARRY_HEIGHT + 0.006])  # ring centre while it changes hands
# PSM2 takes the ring at its +x side: tool z down, x along +x (radial there), fingers open along x
HANDOVER_ORIENTATION = matrix_to_quat(np.column_stack([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]))


def _handover_one(giver: _Track, taker: _Track, ring_centre: np.ndarray, peg: np.ndarray) -> None:
    give_radial = quat_to_matrix(GRASP_ORIENTATION)[:, 0] * scene.RING_MAJOR_RADIUS
    take_radial = quat_to_matrix(HANDOVER_ORIENTATION)[:, 0] * scene.RING_MAJOR_RADIUS
    _pick(giver, ring_centre + give_radial, GRASP_ORIENTATION)
    give_at = HANDOVER_CENTRE + give_radial
    giver.add(ToolTarget(give_at, GRASP_ORIENTATION, JAW_SQUEEZE))
    _hold_until(taker, giver.times[-1] - 2.0)  # taker sets off while the giver is still on its way
    take_at = HANDOVER_CENTRE + take_radial
    taker.add(ToolTarget(take_at + [0.0, 0.0, 0.015], HANDOVER_ORIENTATION, JAW_OPEN))
    _hold_until(taker, giver.times[-1])
    taker.add(ToolTarget(take_at, HANDOVER_ORIENTATION, JAW_OPEN))
    taker.add(ToolTarget(take_at, HANDOVER_ORIENTATION, JAW_SQUEEZE), JAW_DWELL)
    _hold_until(giver, taker.times[-1])
    giver.add(ToolTarget(give_at, GRASP_ORIENTATION, JAW_OPEN), JAW_DWELL)  # let go
    giver.add(ToolTarget(give_at + [0.0, -0.01, 0.01], GRASP_ORIENTATION, JAW_OPEN))  # back off
    _hold_until(taker, giver.times[-1])
    _place(taker, peg + take_radial, HANDOVER_ORIENTATION)


def handover_moment(plan: PegTransferPlan, arm: str = "PSM1", between: tuple[float, float] = (0.35, 0.65),
                    step_s: float = 0.05) -> float:
    """A task time, within `between` (fractions of the task), for handing `arm` to another surgeon
    and back: where the tool is highest over the board (carrying, clear of the pegs), nearest the
    middle of that window among equally high moments (within 0.5 mm)."""
    lo, hi = between[0] * plan.duration, between[1] * plan.duration
    times = np.arange(lo, hi, step_s)
    heights = np.array([plan.sample_floats(float(t))[arm][0][2] for t in times])
    high = times[heights >= heights.max() - 0.0005]
    middle = (lo + hi) / 2.0
    return float(high[np.argmin(np.abs(high - middle))])
