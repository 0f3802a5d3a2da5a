"""A virtual-clock teleoperation loop to test force feedback under delay (tests, bench/haptics.py).

master (mass–damper + human arm) → `ServoCommand` bytes → netem `DirectionEmulator` (delay, jitter,
loss) → slave (a position-controlled tool: PD servo on a small mass) pushing on a stiff wall →
`ForceFeedback` bytes at 500 Hz with the robot's tool-port energies (robot/force_feedback.py
`ToolPortObserver`) → reverse `DirectionEmulator` → `ForceFeedbackCore` → `servo_cf` on the master.
Everything real but the two physical models: the wire encoding, the netem core, the feedback core and
the passivity controller are the product classes. One fixed step of 1 ms, seeded, no clock, no sockets.

The surgeon's hand moves the master `approach_m` in +x over `reach_s` (minimum jerk), which brings
the tool into the wall after `contact_at_m` of master travel, then holds that intention; optionally
lets go of the handle at `release_at_s` (hand stiffness 0). `link_cut_at_s` cuts the robot→console
direction (a link hold) to test the fade.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from telesurg.console.haptics.config import HapticsConfig
from telesurg.console.haptics.device import HumanArm, SimulatedMaster
from telesurg.console.haptics.feedback import ForceFeedbackCore
from telesurg.messages import ArmForce, ArmId, ForceFeedback, ServoCommand, decode
from telesurg.netem.core import DirectionEmulator, Impairment
from telesurg.netem.path import derive_seed
from telesurg.robot.force_feedback import ToolPortObserver

DT = 0.001
X = np.array([1.0, 0.0, 0.0])
ARM = ArmId.PSM1


@dataclass(frozen=True)
class LoopSetup:
    """Physical and network parameters of one run (SI units)."""

    one_way_delay_ms: float = 100.0
    jitter_ms: float = 2.0
    loss: float = 0.01
    seconds: float = 5.0
    seed: int = 0
    motion_scale: float = 0.2
    contact_at_m: float = 0.03  # master travel at which the tool touches the wall
    approach_m: float = 0.045  # the hand's intended master travel
    reach_s: float = 1.0
    start_s: float = 0.2
    hand_stiffness_n_per_m: float = 300.0
    hand_damping_ns_per_m: float = 5.0
    master_mass_kg: float = 0.3
    master_damping_ns_per_m: float = 2.0
    slave_mass_kg: float = 0.05
    slave_kp_n_per_m: float = 4000.0
    slave_kd_ns_per_m: float = 40.0
    wall_stiffness_n_per_m: float = 10000.0
    wall_damping_ns_per_m: float = 2.0
    force_hz: float = 500.0
    release_at_s: float | None = None
    link_cut_at_s: float | None = None


@dataclass
class LoopTrace:
    """Per-millisecond samples of one run."""

    t: list[float] = field(default_factory=list)
    master_x: list[float] = field(default_factory=list)
    master_v: list[float] = field(default_factory=list)
    rendered_n: list[float] = field(default_factory=list)  # |force rendered on the master|
    env_force_n: list[float] = field(default_factory=list)  # |wall force on the tool|
    energy_out_j: list[float] = field(default_factory=list)  # energy delivered to the master by feedback
    energy_remote_j: list[float] = field(default_factory=list)  # env energy returned, master units, delayed
    dissipated_j: list[float] = field(default_factory=list)
    fade: list[float] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.__dict__.items()}


def _min_jerk(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s ** 3 * (10 - 15 * s + 6 * s * s)


def run_loop(setup: LoopSetup, haptics: HapticsConfig) -> LoopTrace:
    """Run one teleoperation session under the virtual clock and return its trace."""
    imp = Impairment(delay_ms=setup.one_way_delay_ms, jitter_ms=setup.jitter_ms, loss=setup.loss)
    forward = DirectionEmulator(imp, derive_seed(setup.seed, "haptics", "forward"))
    reverse = DirectionEmulator(imp, derive_seed(setup.seed, "haptics", "reverse"))

    def hand_target(t: float) -> np.ndarray:
        return X * setup.approach_m * _min_jerk((t - setup.start_s) / setup.reach_s)

    human = HumanArm(hand_target, setup.hand_stiffness_n_per_m, setup.hand_damping_ns_per_m)
    master = SimulatedMaster(setup.master_mass_kg, setup.master_damping_ns_per_m, human)
    core = ForceFeedbackCore(haptics, setup.motion_scale, arms=(ARM,))
    wall_x = setup.motion_scale * setup.contact_at_m
    slave_x, slave_v, slave_goal = np.zeros(3), np.zeros(3), np.zeros(3)
    newest_seq = -1
    observer = ToolPortObserver()
    force_every = max(1, round(1.0 / (setup.force_hz * DT)))
    trace = LoopTrace()
    steps = round(setup.seconds / DT)
    for k in range(steps):
        t = k * DT
        if setup.release_at_s is not None and t >= setup.release_at_s:
            human.stiffness = 0.0
        if setup.link_cut_at_s is not None and t >= setup.link_cut_at_s and not reverse.is_down:
            reverse.down(t)
        # console: newest forces in, force out, master moves, command out
        for payload in reverse.pop_due(t):
            message = decode(payload)
            if isinstance(message, ForceFeedback):
                core.receive(message, t)
        force = core.tick(ARM, t, master.measured_cp())
        master.servo_cf(force)
        master.step(t, DT)
        command = ServoCommand(ARM, k, t, tuple(setup.motion_scale * master.position), (1.0, 0.0, 0.0, 0.0), 0.0)
        forward.submit(command.encode(), t)
        # robot: newest command wins (the supervisor never applies an older one)
        for payload in forward.pop_due(t):
            message = decode(payload)
            if isinstance(message, ServoCommand) and message.cmd_seq > newest_seq:
                newest_seq, slave_goal = message.cmd_seq, message.position_array()
        penetration = slave_x[0] - wall_x
        env = np.zeros(3)
        if penetration > 0.0:
            env[0] = -max(0.0, setup.wall_stiffness_n_per_m * penetration + setup.wall_damping_ns_per_m * slave_v[0])
        control = setup.slave_kp_n_per_m * (slave_goal - slave_x) - setup.slave_kd_ns_per_m * slave_v
        slave_v = slave_v + (control + env) / setup.slave_mass_kg * DT
        slave_x = slave_x + slave_v * DT
        if k % force_every == 0:
            observer.observe(env, slave_x)
            message = ForceFeedback(t, (ArmForce(ARM, tuple(env), (1.0, 0.0, 0.0, 0.0), observer.energy_from_env_j,
                                                 observer.energy_to_env_j),))
            reverse.submit(message.encode(), t)
        pc = core.passivity[ARM]
        trace.t.append(t)
        trace.master_x.append(float(master.position[0]))
        trace.master_v.append(float(master.velocity[0]))
        trace.rendered_n.append(float(np.linalg.norm(force)))
        trace.env_force_n.append(float(np.linalg.norm(env)))
        trace.energy_out_j.append(pc.port.energy_out_j)
        trace.energy_remote_j.append(pc.remote_energy_j)
        trace.dissipated_j.append(pc.dissipated_j)
        trace.fade.append(core.arms[ARM].fade)
    return trace


@dataclass(frozen=True)
class LoopFigures:
    """What the tests assert and the bench prints, over the hold window (after the reach + settling)."""

    speed_rms_m_per_s: float
    speed_zero_crossings: int
    peak_rendered_n: float
    peak_env_n: float
    energy_out_j: float  # delivered to the master by the feedback over the run
    energy_excess_j: float  # max over time of energy_out - remote energy in (generated by the loop)
    dissipated_j: float


def figures(trace: LoopTrace, window_from_s: float, deadband_m_per_s: float = 0.002) -> LoopFigures:
    a = trace.arrays()
    hold = a["t"] >= window_from_s
    v = a["master_v"][hold]
    signs = np.sign(v[np.abs(v) > deadband_m_per_s])  # crossings of a deadband, not numerical noise
    crossings = int(np.count_nonzero(np.diff(signs) != 0)) if signs.size else 0
    return LoopFigures(
        speed_rms_m_per_s=float(np.sqrt(np.mean(v * v))) if v.size else 0.0,
        speed_zero_crossings=crossings,
        peak_rendered_n=float(a["rendered_n"].max()),
        peak_env_n=float(a["env_force_n"].max()),
        energy_out_j=float(a["energy_out_j"][-1]),
        energy_excess_j=float(max(0.0, (a["energy_out_j"] - a["energy_remote_j"]).max())),
        dissipated_j=float(a["dissipated_j"][-1]),
    )
