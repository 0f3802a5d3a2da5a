"""Time-domain passivity observer and controller for the master port of a delayed teleoperator.

Why: a position-forward / force-back teleoperator over a delayed channel generates energy (the force
that comes back was caused by motion that happened a round trip ago), and against a stiff contact it
oscillates at 100 ms. The time-domain passivity approach (Hannaford & Ryu 2002, Ryu, Kwon & Hannaford
2004) watches the energy that actually flows through a port and dissipates only the excess with a
variable damper, so it costs nothing while the system behaves. With delay, the channel two-port is
split into two one-ports and each side receives the other's energy flow (Ryu, Artigas & Preusche
2010, Artigas et al. 2010): here the robot observes the work the environment does on the tool
(robot/force_feedback.py, `energy_from_env_j`, cumulative, sent with every force message) and the
console enforces, at every tick,

    E_out_master(t) <= gain * E_from_env(t - T)

i.e. the master never receives more energy than the environment really returned, delayed, in master
units (`gain` = force_scale / motion_scale). The damper is `f' = f - alpha * v`, alpha chosen so the
energy delivered this tick brings the observer back to zero, capped for the device's stability (a
1 kHz explicit damper on a light handle goes unstable above ~2m/dt). Measured trade-off (teleop_sim):
letting alpha grow without cap (or cancelling the force's whole component along the motion) keeps the
observer exactly at zero but makes the PC chatter at the sample rate once the master rests against
a contact; with the cap the force stays smooth and the observer dips by a bounded few mJ at contact
onset (bench/haptics.py prints the bound per delay).
This is the master half of the two-port TDPA; the slave half (an admittance-type PC at the robot
limiting the energy the delayed position command may inject to the console's `energy_in_j`, sent with
the commands, Artigas et al. 2011) is future robot-side work: it needs a field in the command stream
and a change in the supervisor's setpoint path.
Sans-I/O, per axis-free vectors (3D), numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PortEnergy:
    """Cumulative energy through one port, J: `energy_in_j` entered the channel, `energy_out_j` left it."""

    energy_in_j: float = 0.0
    energy_out_j: float = 0.0

    def add_power(self, power_out_w: float, dt: float) -> None:
        """Power leaving the channel into the device (W, negative = entering the channel) for `dt` s."""
        if power_out_w > 0.0:
            self.energy_out_j += power_out_w * dt
        else:
            self.energy_in_j -= power_out_w * dt


class MasterPassivityController:
    """Observer + variable damper on the force rendered to the master (impedance-type PC)."""

    def __init__(self, max_damping_ns_per_m: float, min_speed_m_per_s: float, enabled: bool = True) -> None:
        self.enabled = enabled
        self.max_damping = max_damping_ns_per_m
        self.min_speed = min_speed_m_per_s
        self.port = PortEnergy()
        self.remote_energy_j = 0.0  # newest gain * E_from_env received (master units)
        self.dissipated_j = 0.0
        self.last_damping = 0.0
        self.min_observed_j = 0.0  # most negative observer value after control (0 if always passive)

    @property
    def observed_j(self) -> float:
        """The passivity observer W = E_remote_in - E_out: >= 0 means the port has been passive."""
        return self.remote_energy_j - self.port.energy_out_j

    def receive_remote_energy(self, energy_j: float) -> None:
        """Newest cumulative energy returned by the environment, already in master units (J)."""
        if energy_j > self.remote_energy_j:  # cumulative: an older (reordered) value never lowers it
            self.remote_energy_j = energy_j

    def apply(self, force: np.ndarray, velocity: np.ndarray, dt: float) -> np.ndarray:
        """The force to render this tick (N): `force` minus the damping needed to stay passive."""
        damping = 0.0
        power = float(np.dot(force, velocity))
        if self.enabled:
            excess = self.port.energy_out_j + max(power, 0.0) * dt - self.remote_energy_j
            speed2 = float(np.dot(velocity, velocity))
            # only while a force is rendered: with none the port delivers nothing this tick, and a faded
            # (held) or bounded feedback must leave the handle free, not turn into a drag
            rendering = bool(np.any(force))
            if rendering and excess > 0.0 and speed2 > self.min_speed * self.min_speed:
                damping = min(excess / (speed2 * dt), self.max_damping)
                force = force - damping * velocity
                power -= damping * speed2
                self.dissipated_j += damping * speed2 * dt
        self.last_damping = damping
        self.port.add_power(power, dt)
        self.min_observed_j = min(self.min_observed_j, self.observed_j)
        return force

