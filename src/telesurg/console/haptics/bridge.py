"""Glue between the console site and force feedback: a thread-safe inbox for force messages and one
call per console tick; plus `SimulatedHapticMaster`, which gives any scripted or keyboard master a
simulated motorised handle so `telesurg demo --haptics` exercises the whole loop without hardware.

`HapticsBridge.on_message(message)` is called on the link's asyncio thread (it only appends to a
deque); `HapticsBridge.tick(now, master_state)` on the console's ticker thread, right after
`ConsoleCore.tick`, with the master state that tick sampled: it hands the newest forces to
`ForceFeedbackCore` and the rendered force of each arm to the master (`HapticMaster.set_force`).
"""

from __future__ import annotations

import collections

import numpy as np

from telesurg.console.haptics.device import HumanArm, SimulatedMaster
from telesurg.console.haptics.feedback import ForceFeedbackCore
from telesurg.console.inputs import ArmMasterState, HapticMaster, MasterInput, MasterState
from telesurg.console.quat import Quat, Vec3
from telesurg.messages import ArmId, ForceFeedback

MAX_SUBSTEP_S = 0.001


class HapticsBridge:
    """Force messages in (any thread), forces out to the master (ticker thread)."""

    def __init__(self, core: ForceFeedbackCore, master: MasterInput) -> None:
        self.core = core
        self.master = master if isinstance(master, HapticMaster) else None
        self._inbox: collections.deque[ForceFeedback] = collections.deque(maxlen=64)
        self.received = 0
        self.peak_force_n = dict.fromkeys(core.arms, 0.0)

    def on_message(self, message: ForceFeedback) -> None:
        self._inbox.append(message)  # deque.append is atomic: safe from the link thread

    def tick(self, now: float, state: MasterState) -> dict[ArmId, np.ndarray]:
        """Newest forces in, one rendered force per arm out (and to the master if it has motors)."""
        while self._inbox:
            self.core.receive(self._inbox.popleft(), now)
            self.received += 1
        forces = {}
        for arm in self.core.arms:
            arm_state = state.arms.get(arm)
            if arm_state is None:
                continue
            force = self.core.tick(arm, now, np.asarray(arm_state.position, dtype=float))
            forces[arm] = force
            self.peak_force_n[arm] = max(self.peak_force_n[arm], float(np.linalg.norm(force)))
            if self.master is not None:
                self.master.set_force(arm, (float(force[0]), float(force[1]), float(force[2])), now)
        return forces

    def report(self) -> dict[str, object]:
        """For the console's JSON report: messages, and per arm the peak force and passivity figures."""
        arms = {}
        for arm, state in self.core.arms.items():
            pc = self.core.passivity[arm]
            arms[arm.name] = {"peak_force_n": round(self.peak_force_n[arm], 4), "saturated": state.saturated,
                              "energy_out_j": round(pc.port.energy_out_j, 6),
                              "energy_remote_j": round(pc.remote_energy_j, 6),
                              "dissipated_j": round(pc.dissipated_j, 6),
                              "observer_min_j": round(pc.min_observed_j, 6)}
        return {"force_messages": self.received, "stale_dropped": self.core.stale_dropped, "arms": arms}


class SimulatedHapticMaster:
    """`HapticMaster` around any `MasterInput`: the inner input is where the surgeon's hand *wants* the
    handle; each arm's handle is a `SimulatedMaster` pulled there by a `HumanArm` and pushed by the
    rendered force. Orientation, jaw, clutch and buttons pass through unchanged."""

    def __init__(self, inner: MasterInput, hand_stiffness_n_per_m: float = 300.0,
                 hand_damping_ns_per_m: float = 5.0, mass_kg: float = 0.3, damping_ns_per_m: float = 2.0) -> None:
        self.inner = inner
        self._params = (hand_stiffness_n_per_m, hand_damping_ns_per_m, mass_kg, damping_ns_per_m)
        self._handles: dict[ArmId, SimulatedMaster] = {}
        self._wanted: dict[ArmId, np.ndarray] = {}
        self._last: float | None = None

    def _handle(self, arm: ArmId, wanted: np.ndarray) -> SimulatedMaster:
        handle = self._handles.get(arm)
        if handle is None:
            stiffness, hand_damping, mass, damping = self._params
            human = HumanArm(lambda _t, arm=arm: self._wanted[arm], stiffness, hand_damping)
            handle = self._handles[arm] = SimulatedMaster(mass, damping, human, position=wanted)
        return handle

    def sample(self, now: float) -> MasterState:
        state = self.inner.sample(now)
        for arm, arm_state in state.arms.items():
            self._wanted[arm] = np.asarray(arm_state.position, dtype=float)
        elapsed = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        steps = int(np.ceil(elapsed / MAX_SUBSTEP_S)) if elapsed > 0 else 0
        arms = {}
        for arm, arm_state in state.arms.items():
            handle = self._handle(arm, self._wanted[arm])
            for k in range(steps):
                handle.step(now - elapsed + k * elapsed / steps, elapsed / steps)
            x, y, z = (float(v) for v in handle.position)
            arms[arm] = ArmMasterState((x, y, z), arm_state.orientation, arm_state.jaw, arm_state.clutch,
                                       arm_state.engaged, arm_state.reengage)
        return MasterState(state.t, arms)

    def set_force(self, arm: ArmId, force_xyz: Vec3, now: float) -> None:
        handle = self._handles.get(arm)
        if handle is not None:
            handle.servo_cf(np.asarray(force_xyz, dtype=float))

    def align_to(self, arm: ArmId, orientation: Quat, now: float) -> None:
        if isinstance(self.inner, HapticMaster):
            self.inner.align_to(arm, orientation, now)

    def close(self) -> None:
        if isinstance(self.inner, HapticMaster):
            self.inner.close()

    def __getattr__(self, name: str) -> object:
        """Anything else (a script's `done`, `duration`) is the inner input's."""
        return getattr(self.inner, name)
