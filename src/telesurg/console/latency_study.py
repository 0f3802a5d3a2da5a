"""A virtual-clock model of a surgeon touching peg tops through a delayed link, to estimate what the
predictive overlay and force feedback are worth at 100–300 ms RTT (issue #16; bench/latency_benefit.py).

The human is a MODEL, and every figure it produces measures the model, not surgeons. It encodes the
assumptions of the telesurgery literature: under delay operators adopt move-and-wait (Ferrell 1965:
an open-loop move, then wait until the delayed picture shows the tool at rest, then correct), and a
predictive display lets them correct as soon as they see their own command (Bejczy et al. 1990).
Its pieces, each a stated assumption, all in `HumanModel`:
- submovements are minimum-jerk, their duration from Fitts' law (MT = a + b·log2(D/W + 1)), their end
  point off by signal-dependent noise (σ = k·D + c per axis, Harris & Wolpert 1998);
- the surgeon sees the tool in the video: the robot's measured position at 30 frames/s, back over the
  link, plus 41 ms of codec and display (Edge MP1000, Int J Surg 2025); visual reaction 0.2 s;
- with the overlay the surgeon corrects from the commanded cross (no network delay), so waits only
  the visual reaction; it shows the command, not the contact, so it does not reveal touching a peg;
- touch-down: from 5 mm above the peg the surgeon descends at 10 mm/s until contact is perceived:
  from the picture (tool stopped on the peg top, delayed) or, with force feedback, from the force
  (haptic reaction 0.15 s, faster than visual), then lifts. Force feedback matters only there: in
  free-space reaching nothing touches anything, so it changes nothing, by construction.
The rest is the product's: commands cross the link as `ServoCommand` bytes, pictures as `Telemetry`
and forces as `ForceFeedback`, each through a netem `DirectionEmulator` (RTT/2 each way, 2 ms jitter,
1 % loss); the robot applies the newest command only. The tool follows its goal with a 15 ms lag and
the 0.1 m/s cap, stops on a peg top and pushes with the servo stiffness (4 N/mm) on the goal below it.
One fixed step, seeded, no clock, no sockets.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from telesurg.messages import ArmForce, ArmId, ArmTelemetry, ForceFeedback, ServoCommand, Telemetry, decode
from telesurg.netem.core import DirectionEmulator, Impairment
from telesurg.netem.path import derive_seed
from telesurg.robot import scene
from telesurg.robot.config import CartConfig
from telesurg.robot.kinematics import ArmKinematics

ARM = ArmId.PSM1
IDENTITY = (1.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class HumanModel:
    """The assumed surgeon (SI units, tool space)."""

    fitts_a_s: float = 0.1
    fitts_b_s: float = 0.1  # per bit
    noise_gain: float = 0.05  # σ per axis, fraction of the move
    noise_floor_m: float = 0.0002
    visual_reaction_s: float = 0.2
    haptic_reaction_s: float = 0.15
    settle_window_s: float = 0.15  # the picture must be still this long before it is trusted
    still_m: float = 0.0001  # "still": moved less than this over the window
    tolerance_m: float = 0.0015  # close enough to the point above the peg
    hover_m: float = 0.005  # the point above the peg top the touch-down starts from
    descend_m_per_s: float = 0.01
    contact_force_n: float = 0.3  # felt with feedback
    contact_seen_m: float = 0.0003  # the picture shows the tool this close to the peg top
    lift_s: float = 0.3


@dataclass(frozen=True)
class StudySetup:
    rtt_ms: float = 200.0
    overlay: bool = False
    feedback: bool = False
    strategy: str = "auto"  # auto: continuous with the overlay, move-and-wait without; or force one
    seed: int = 0
    rings: int = 3  # each ring: touch its start peg, then its target peg
    dt: float = 0.002
    jitter_ms: float = 2.0
    loss: float = 0.01
    video_latency_s: float = 0.041
    frame_hz: float = 30.0
    tool_lag_s: float = 0.015
    tool_max_speed: float = 0.1
    servo_stiffness_n_per_m: float = 4000.0
    max_task_s: float = 120.0
    human: HumanModel = field(default_factory=HumanModel)

    @property
    def resolved_strategy(self) -> str:
        if self.strategy != "auto":
            return self.strategy
        return "continuous" if self.overlay else "move-and-wait"


@dataclass(frozen=True)
class StudyResult:
    task_s: float  # until the tool leaves the last peg (robot clock)
    path_mm: float  # length of the tool's path
    peak_force_n: float  # largest push on a peg top
    mean_touch_force_n: float  # mean over touches of each touch's peak
    submovements: int
    completed: bool


def peg_targets(rings: int) -> list[np.ndarray]:
    """Peg tops in task order: ring i's start peg, then its target peg (default board)."""
    board = scene.default_board()
    return [board.peg_top(peg) for i in range(rings) for peg in (board.start_pegs[i], board.target_pegs[i])]


def tool_home() -> np.ndarray:
    arm = CartConfig().arm(ARM.name)
    return np.asarray(ArmKinematics(arm).forward_quat(np.array(arm.home, dtype=float))[0], dtype=float)


def _min_jerk(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s ** 3 * (10 - 15 * s + 6 * s * s)


class _Tool:
    """The patient side: newest command wins; the tool lags its goal, stops on peg tops, pushes on them."""

    def __init__(self, setup: StudySetup, start: np.ndarray, pegs: np.ndarray) -> None:
        self.setup = setup
        self.x = start.copy()
        self.goal = start.copy()
        self.newest = -1
        self.pegs = pegs
        self.force = 0.0
        self.path_m = 0.0

    def step(self, dt: float) -> None:
        s = self.setup
        velocity = (self.goal - self.x) / s.tool_lag_s
        speed = float(np.linalg.norm(velocity))
        if speed > s.tool_max_speed:
            velocity *= s.tool_max_speed / speed
        new = self.x + velocity * dt
        self.force = 0.0
        near = np.hypot(*(self.pegs[:, :2] - new[:2]).T) < 3 * scene.PEG_RADIUS
        if near.any() and new[2] <= scene.PEG_HEIGHT:
            new[2] = scene.PEG_HEIGHT
            self.force = s.servo_stiffness_n_per_m * max(0.0, scene.PEG_HEIGHT - float(self.goal[2]))
        self.path_m += float(np.linalg.norm(new - self.x))
        self.x = new


class _Surgeon:
    """The console side: the hand (= commanded tool position) and what the surgeon sees and feels."""

    def __init__(self, setup: StudySetup, start: np.ndarray, targets: list[np.ndarray], rng: np.random.Generator):
        self.s, self.h, self.rng = setup, setup.human, rng
        self.hand = start.copy()
        self.targets = targets
        self.index = 0
        self.phase = "decide"
        self.at = 0.0  # when the current phase's next thing happens
        self.move: tuple[float, float, np.ndarray, np.ndarray] | None = None  # t0, duration, from, to
        self.frames: deque[tuple[float, np.ndarray]] = deque()  # (visible from, seen tool position)
        self.seen: deque[tuple[float, np.ndarray]] = deque()  # the picture over the settle window
        self.seen_moved = False
        self.felt_force = 0.0
        self.noticed_at: float | None = None  # when the surgeon reacts to a contact they perceived
        self.touching = False  # lifting off the current target's peg
        self.submovements = 0

    # -- perception ------------------------------------------------------------------------------
    def picture(self, now: float) -> np.ndarray | None:
        while self.frames and self.frames[0][0] <= now:
            shown = self.frames.popleft()[1]
            if self.seen and np.linalg.norm(shown - self.seen[-1][1]) > self.h.still_m:
                self.seen_moved = True
            self.seen.append((now, shown))
        while len(self.seen) > 1 and self.seen[1][0] <= now - self.h.settle_window_s:
            self.seen.popleft()
        return self.seen[-1][1] if self.seen else None

    def picture_settled(self, now: float) -> bool:
        if not self.seen or self.seen[0][0] > now - self.h.settle_window_s:
            return False
        newest = self.seen[-1][1]
        return all(np.linalg.norm(p - newest) <= self.h.still_m for _, p in self.seen)

    # -- action ------------------------------------------------------------------------------------
    def _start_move(self, now: float, to: np.ndarray, duration: float) -> None:
        self.move = (now, duration, self.hand.copy(), to)
        self.phase = "move"
        self.seen_moved = False
        self.submovements += 1

    def _aim(self) -> np.ndarray:
        return self.targets[self.index] + np.array([0.0, 0.0, self.h.hover_m])

    def _estimate(self, now: float) -> np.ndarray:
        """Where the surgeon believes the tool is: the cross when correcting from the overlay, else the
        (delayed) picture."""
        seen = self.picture(now)
        if self.s.resolved_strategy == "continuous" and self.s.overlay:
            return self.hand.copy()  # the cross: where the tool is commanded to be, now
        return seen if seen is not None else self.hand.copy()

    def tick(self, now: float, dt: float) -> bool:
        """Advance the hand; returns False once every target is done."""
        h = self.h
        seen = self.picture(now)
        if self.phase == "move":
            t0, duration, start, end = self.move  # type: ignore[misc]
            self.hand = start + (end - start) * _min_jerk((now - t0) / duration)
            if now >= t0 + duration:
                self.phase, self.at = ("lifted" if self.touching else "moved"), now
        elif self.phase in ("moved", "lifted"):
            waits = self.s.resolved_strategy == "move-and-wait"  # for the picture to show the move, then settle
            if waits and not (self.seen_moved and self.picture_settled(now)):
                return True
            self.phase, self.at = "decide", now + h.visual_reaction_s
            if self.touching:
                self.touching = False
                self.index += 1
                if self.index == len(self.targets):
                    return False
        elif self.phase == "decide" and now >= self.at:
            error = self._aim() - self._estimate(now)
            distance = float(np.linalg.norm(error))
            if distance <= h.tolerance_m:
                self.phase, self.noticed_at = "descend", None
                return True
            sigma = h.noise_gain * distance + h.noise_floor_m
            duration = h.fitts_a_s + h.fitts_b_s * math.log2(distance / h.tolerance_m + 1)
            self._start_move(now, self.hand + error + self.rng.normal(0.0, sigma, 3), duration)
        elif self.phase == "descend":
            self.hand = self.hand - np.array([0.0, 0.0, h.descend_m_per_s * dt])
            if self.noticed_at is None:
                felt = self.s.feedback and self.felt_force > h.contact_force_n
                saw = seen is not None and seen[2] <= scene.PEG_HEIGHT + h.contact_seen_m
                if felt or saw:
                    self.noticed_at = now + (h.haptic_reaction_s if felt else h.visual_reaction_s)
            if self.noticed_at is not None and now >= self.noticed_at:
                self.touching = True
                self._start_move(now, self._aim(), h.lift_s)
        return True


def run_study(setup: StudySetup) -> StudyResult:
    """One session: touch every target peg once, in order; figures measured on the robot side."""
    imp = Impairment(delay_ms=setup.rtt_ms / 2, jitter_ms=setup.jitter_ms, loss=setup.loss)
    forward = DirectionEmulator(imp, derive_seed(setup.seed, "latency-study", "forward"))
    reverse = DirectionEmulator(imp, derive_seed(setup.seed, "latency-study", "reverse"))
    targets = peg_targets(setup.rings)
    start = tool_home()
    board = scene.default_board()
    tool = _Tool(setup, start, np.column_stack([board.pegs, np.zeros(len(board.pegs))]))
    surgeon = _Surgeon(setup, start, targets, np.random.default_rng(derive_seed(setup.seed, "latency-study", "hand")))
    frame_every = max(1, round(1.0 / (setup.frame_hz * setup.dt)))
    peaks = [0.0] * len(targets)  # the hardest push while the surgeon works on each target
    last_release = float("nan")
    done_at: float | None = None
    k = 0
    while (now := k * setup.dt) <= setup.max_task_s:
        # console: what came back, the hand, the command
        for payload in reverse.pop_due(now):
            message = decode(payload)
            if isinstance(message, Telemetry):
                surgeon.frames.append((now + setup.video_latency_s, np.asarray(message.arms[0].position)))
            elif isinstance(message, ForceFeedback):
                surgeon.felt_force = float(np.linalg.norm(message.arms[0].force))
        if done_at is None:
            if not surgeon.tick(now, setup.dt):
                done_at = now
            forward.submit(ServoCommand(ARM, k, now, tuple(map(float, surgeon.hand)), IDENTITY, 0.0).encode(), now)
        elif now > done_at + setup.rtt_ms / 1000 + 0.5:  # the robot has long done what was asked
            break
        # robot: newest command wins; the tool moves; pictures and forces go back
        for payload in forward.pop_due(now):
            message = decode(payload)
            if isinstance(message, ServoCommand) and message.cmd_seq > tool.newest:
                tool.newest, tool.goal = message.cmd_seq, message.position_array()
        was_touching = tool.force > 0.0
        tool.step(setup.dt)
        if tool.force > 0.0:
            index = min(surgeon.index, len(targets) - 1)
            peaks[index] = max(peaks[index], tool.force)
        elif was_touching:
            last_release = now
        if k % frame_every == 0:
            reverse.submit(Telemetry(now, 0, (ArmTelemetry(ARM, 0, 0, max(tool.newest, 0), tuple(map(float, tool.x)),
                                                           IDENTITY, 0.0),)).encode(), now)
        if setup.feedback:
            reverse.submit(ForceFeedback(now, (ArmForce(ARM, (0.0, 0.0, tool.force), IDENTITY),)).encode(), now)
        k += 1
    completed = done_at is not None
    return StudyResult(task_s=last_release if completed else float("nan"), path_mm=1000.0 * tool.path_m,
                       peak_force_n=max(peaks), mean_touch_force_n=float(np.mean(peaks)),
                       submovements=surgeon.submovements, completed=completed)


@dataclass(frozen=True)
class ScriptedResult:
    task_s: float  # until the tool is within 0.2 mm of where it ends, for good (robot clock)
    plan_s: float  # until the script's last motion (console clock)
    path_mm: float


def run_scripted(rtt_ms: float, seed: int = 0, rings: int = 3, dt: float = 0.002) -> ScriptedResult:
    """The demo's scripted surgeon (robot/peg_transfer.py, PSM1) over the same link and tool: open loop,
    it never looks at the picture nor feels a force, so only its start is delayed; the baseline."""
    from telesurg.robot.peg_transfer import peg_transfer_plan

    setup = StudySetup(rtt_ms=rtt_ms, seed=seed, dt=dt)
    plan = peg_transfer_plan(scene.default_board(), rings=rings).only([ARM.name])
    forward = DirectionEmulator(Impairment(delay_ms=rtt_ms / 2, jitter_ms=setup.jitter_ms, loss=setup.loss),
                                derive_seed(seed, "latency-study", "scripted"))
    start = np.array(plan.sample_floats(0.0)[ARM.name][0])
    board = scene.default_board()
    tool = _Tool(setup, start, np.column_stack([board.pegs, np.zeros(len(board.pegs))]))
    previous, commanded_until, trail = start, 0.0, []
    k = 0
    while (now := k * dt) <= plan.duration + 1.0:
        position = np.array(plan.sample_floats(now)[ARM.name][0])
        if np.linalg.norm(position - previous) > 1e-7:
            commanded_until, previous = now, position
        forward.submit(ServoCommand(ARM, k, now, tuple(position), IDENTITY, 0.0).encode(), now)
        for payload in forward.pop_due(now):
            message = decode(payload)
            if isinstance(message, ServoCommand) and message.cmd_seq > tool.newest:
                tool.newest, tool.goal = message.cmd_seq, message.position_array()
        tool.step(dt)
        trail.append(tool.x)
        k += 1
    away = np.linalg.norm(np.asarray(trail) - tool.x, axis=1) > 0.0002  # from where the tool ends, 0.2 mm
    return ScriptedResult(task_s=dt * (int(np.nonzero(away)[0][-1]) + 1), plan_s=commanded_until, path_mm=1000.0 * tool.path_m)
