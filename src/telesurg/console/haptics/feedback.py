"""`ForceFeedbackCore`: robot force messages in, the force to render on each master out (sans-I/O).

Per arm, every console tick (1 kHz), in this order:
1. the newest `messages.ArmForce`: tool-frame force rotated into the robot base frame with the tool
   orientation sent in the same message, then into the master frame (inverse registration), times
   `force_scale`;
2. saturation at `max_force_n` (direction kept);
3. fade on a link hold: a force older than `stale_after_s` (console clock of arrival) fades linearly to
   zero over `fade_s`, inside the robot's watchdog; it does not come back until a fresh message arrives;
4. travel bound: from the master position where contact started, the feedback may push the master at
   most `max_feedback_travel_m` along its own direction; over the last `travel_ramp_m` it fades out and a
   damper (`travel_brake_ns_per_m`, dissipative only) stops the handle coasting on. A
   surgeon who lets go while the delayed force still pushes is not moved further than that by it. The
   contact (and its anchor) ends only after the force stayed off for `anchor_reset_s`;
5. time-domain passivity controller (passivity.py) on what remains, with the robot's cumulative
   environment energy in master units (`force_scale / motion_scale`).
The master velocity is estimated from consecutive positions (`tick` is given the master position).
It never reads a clock: `receive(message, now)` and `tick(arm, now, position)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from telesurg.console.core import superseded
from telesurg.console.haptics.config import HapticsConfig
from telesurg.console.haptics.passivity import MasterPassivityController
from telesurg.messages import ArmForce, ArmId, ForceFeedback


def _rotation(quat: tuple[float, float, float, float] | np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(quat, dtype=float) / max(float(np.linalg.norm(quat)), 1e-12)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


@dataclass
class ArmFeedbackState:
    """What the core remembers about one arm; public for the console display and the tests."""

    force_master: np.ndarray  # N, master frame, after scaling and saturation (before fade, travel, PC)
    received_at: float | None = None  # console time of the newest force message
    t_robot: float = float("-inf")
    anchor: np.ndarray | None = None  # master position where the current contact started
    off_since: float | None = None  # console time the force went below the contact threshold
    last_position: np.ndarray | None = None
    last_now: float | None = None
    velocity: np.ndarray | None = None
    rendered: np.ndarray | None = None  # the last force handed to the device
    fade: float = 0.0  # 1 = fresh, 0 = faded out (stale)
    travel_scale: float = 1.0
    saturated: int = 0  # force messages whose force was clipped at max_force_n


class ForceFeedbackCore:
    """Sans-I/O force feedback for several arms; see the module docstring for the pipeline."""

    def __init__(self, config: HapticsConfig, motion_scale: float,
                 registration_wxyz: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0),
                 arms: tuple[ArmId, ...] = (ArmId.PSM1, ArmId.PSM2)) -> None:
        if not motion_scale > 0.0:
            raise ValueError(f"motion_scale must be > 0 (console scale), got {motion_scale!r}")
        self.config = config
        self.energy_gain = config.force_scale / motion_scale  # slave joules -> master joules
        self._base_to_master = _rotation(registration_wxyz).T  # registration maps master -> base
        pc = config.passivity
        self.arms = {arm: ArmFeedbackState(np.zeros(3)) for arm in arms}
        self.passivity = {arm: MasterPassivityController(pc.max_damping_ns_per_m, pc.min_speed_m_per_s, pc.enabled)
                          for arm in arms}
        self.stale_dropped = 0

    # -- input ------------------------------------------------------------------------------------
    def receive(self, message: ForceFeedback, now: float) -> None:
        """Take one force message; older than the newest already seen (reordered) is dropped."""
        for arm_force in message.arms:
            state = self.arms.get(arm_force.arm)  # ArmId is an IntEnum: the wire's int finds it
            if state is None:  # an arm this console does not render (the decoder checked the range)
                continue
            if superseded(message.t_robot, state.t_robot):
                self.stale_dropped += 1
                continue
            state.t_robot = message.t_robot
            state.received_at = now
            state.force_master = self._to_master(arm_force, state)
            self.passivity[ArmId(arm_force.arm)].receive_remote_energy(self.energy_gain * arm_force.energy_from_env_j)

    def _to_master(self, arm_force: ArmForce, state: ArmFeedbackState) -> np.ndarray:
        base = _rotation(arm_force.orientation) @ np.asarray(arm_force.force, dtype=float)
        force = self.config.force_scale * (self._base_to_master @ base)
        magnitude = float(np.linalg.norm(force))
        if magnitude > self.config.max_force_n:
            state.saturated += 1
            force *= self.config.max_force_n / magnitude
        return force

    # -- output -----------------------------------------------------------------------------------
    def tick(self, arm: ArmId, now: float, master_position: np.ndarray) -> np.ndarray:
        """The force (N, master frame) to command on `arm`'s master now (`servo_cf`)."""
        cfg, state = self.config, self.arms[arm]
        position = np.array(master_position, dtype=float)
        dt = 0.0 if state.last_now is None else now - state.last_now
        if state.last_position is not None and dt > 0.0:
            state.velocity = (position - state.last_position) / dt
        state.last_position, state.last_now = position, now
        velocity = state.velocity if state.velocity is not None else np.zeros(3)

        state.fade = self._fade(state, now)
        force = state.force_master * state.fade
        magnitude = float(np.linalg.norm(force))
        if magnitude <= cfg.contact_threshold_n:
            if state.off_since is None:
                state.off_since = now
            if now - state.off_since >= cfg.anchor_reset_s:
                state.anchor = None
            force = np.zeros(3)
            state.travel_scale = 1.0
        else:
            state.off_since = None
            if state.anchor is None:
                state.anchor = position
            direction = force / magnitude
            travel = float(np.dot(position - state.anchor, direction))
            state.travel_scale = float(np.clip((cfg.max_feedback_travel_m - travel) / cfg.travel_ramp_m, 0.0, 1.0))
            along = float(np.dot(velocity, direction))
            push = magnitude * state.travel_scale
            if state.travel_scale < 1.0 and along > 0.0:  # being pushed away past the ramp start: brake,
                push = max(push - cfg.travel_brake_ns_per_m * along, -cfg.max_force_n)  # within saturation
            force = push * direction
        if dt > 0.0:
            force = self.passivity[arm].apply(force, velocity, dt)
        state.rendered = force
        return force

    def _fade(self, state: ArmFeedbackState, now: float) -> float:
        if state.received_at is None:
            return 0.0
        age = now - state.received_at
        if age <= self.config.stale_after_s:
            return 1.0
        return max(0.0, 1.0 - (age - self.config.stale_after_s) / self.config.fade_s)

    def status(self, arm: ArmId) -> dict[str, float]:
        """Figures for the console display / report: observer, dissipated energy, fade, travel scale."""
        pc, state = self.passivity[arm], self.arms[arm]
        return {"observer_j": pc.observed_j, "dissipated_j": pc.dissipated_j, "damping_ns_per_m": pc.last_damping,
                "fade": state.fade, "travel_scale": state.travel_scale}
