"""`SimDriver`: the patient-side cart simulated in MuJoCo, behind the `Driver`/`Arm` protocols.

This module builds the model (three arms, the peg board, six rings), steps the physics and runs the
slow checks and the grasp assist; each arm's servoing and CRTK states live in sim_arm.py (`SimArm`,
re-exported here).

Grasp assist (documented, on by default, `CartConfig.grasp_assist`): friction grasping of a
capsule ring by two thin box fingers works in this model (condim 4, elliptic cones, impratio 10,
1 ms step, friction 2, tuned jaw servo): the jaw lifts a ring and carries it several cm, but the
ring slips out when the tool decelerates at the end of a traverse (noslip iterations made it worse),
so placing rings on pegs was not reliable. So when the commanded jaw is closing and both fingers of one arm touch the same ring,
a weld equality between the wrist and that ring is switched on at their current relative pose; it is
switched off as soon as the jaw opens. Fingers still press on the ring, so contact forces are real.
"""

from __future__ import annotations

import mujoco
import numpy as np

from . import scene
from .config import CartConfig
from .kinematics import matrix_to_quat
from .model import build_mjcf
from .sim_arm import TRACKING_LIMIT, SimArm

__all__ = ["CHECK_EVERY", "JAW_GRASP_BELOW", "TRACKING_LIMIT", "SimArm", "SimDriver"]

JAW_GRASP_BELOW = 0.25  # rad: commanded jaw under this counts as "closing" for the grasp assist
CHECK_EVERY = 5  # steps between tracking-fault and grasp-assist checks


class SimDriver:
    """The simulated cart (`driver.Driver`): three arms, the peg board and six rings."""

    def __init__(self, config: CartConfig | None = None, seed: int = 0,
                 board: scene.PegBoard | None = None) -> None:
        self.config = config or CartConfig()
        self.board = board or scene.default_board()
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(self.config, self.board))
        self.data = mujoco.MjData(self.model)
        self._arms = {a.name: SimArm(a, self.model, self.data, self.config.tracking_fault_seconds)
                      for a in self.config.arms}
        rng = np.random.default_rng(seed)  # small placement jitter so runs differ by seed, not by accident
        for i in range(self.board.ring_count):
            adr = self.model.jnt_qposadr[self.model.joint(f"ring{i}").id]
            self.data.qpos[adr: adr + 2] += rng.uniform(-0.0008, 0.0008, size=2)
        self._ring_body = np.array([self.model.body(f"ring{i}").id for i in range(self.board.ring_count)])
        self._finger_geoms = {n: [self.model.geom(f"{n}_finger{i}").id for i in (1, 2)]
                              for n, a in self._arms.items() if a.has_jaw}
        self._ring_of_geom = np.full(self.model.ngeom, -1)
        for i, body in enumerate(self._ring_body):
            self._ring_of_geom[self.model.geom_bodyid == body] = i
        self._is_finger = np.zeros(self.model.ngeom, dtype=bool)
        for fingers in self._finger_geoms.values():
            self._is_finger[fingers] = True
        self._arm_list = list(self._arms.values())
        self._welds = {(n, i): self.model.equality(f"{n}_holds_ring{i}").id
                       for n in self._finger_geoms for i in range(self.board.ring_count)}
        self.held: dict[str, int | None] = dict.fromkeys(self._finger_geoms)
        self._substeps_per_second = 1.0 / self.model.opt.timestep
        self._steps = 0
        mujoco.mj_forward(self.model, self.data)

    def arms(self) -> dict[str, SimArm]:
        return dict(self._arms)

    @property
    def time(self) -> float:
        """Simulated time (s) since construction."""
        return float(self.data.time)

    def step(self, dt: float) -> None:
        """Advance the physics by `dt` (rounded to whole MuJoCo timesteps, at least one)."""
        if not 0.0 < dt < 1.0:
            raise ValueError(f"dt must be a servo period in seconds (0 < dt < 1), got {dt!r}")
        substeps = max(1, round(dt * self._substeps_per_second))
        for arm in self._arm_list:
            arm.advance(dt)
        if substeps == 1:
            mujoco.mj_step(self.model, self.data)
        else:
            mujoco.mj_step(self.model, self.data, nstep=substeps)
        self._steps += 1
        if self._steps % CHECK_EVERY == 0:  # slow checks at 200 Hz keep one 1 kHz step cheap
            for arm in self._arm_list:
                arm.check_tracking(dt * CHECK_EVERY)
            if self.config.grasp_assist:
                self._update_grasp_assist()

    def close(self) -> None:
        """Nothing to release (renderers are closed by their owner); kept for the protocol."""

    # -- task observation -------------------------------------------------------------------------
    def ring_positions(self) -> np.ndarray:
        """(n_rings, 3) ring centres in the base frame."""
        return self.data.xpos[self._ring_body].copy()

    def rings_on_target(self) -> int:
        """Rings resting (not held) around any target peg."""
        held = {i for i in self.held.values() if i is not None}
        targets = self.board.pegs[list(self.board.target_pegs)]
        return sum(1 for i, centre in enumerate(self.ring_positions())
                   if i not in held and any(scene.ring_on_peg(centre, peg) for peg in targets))

    def contact_force(self, arm: str) -> float:
        """Sum of contact normal forces (N) on the arm's jaw fingers; 0 for the endoscope."""
        fingers = set(self._finger_geoms.get(arm, ()))
        if arm not in self._arms:
            raise KeyError(f"no arm named {arm!r}; arms are {list(self._arms)}")
        total, wrench = 0.0, np.zeros(6)
        contacts = self.data.contact
        for i in range(self.data.ncon):
            if contacts.geom1[i] in fingers or contacts.geom2[i] in fingers:
                mujoco.mj_contactForce(self.model, self.data, i, wrench)
                total += abs(float(wrench[0]))
        return total

    # -- grasp assist -----------------------------------------------------------------------------
    def _rings_by_finger(self) -> dict[int, set[int]]:
        """Finger geom -> rings it touches now, from one vectorised pass over the contacts."""
        ncon = self.data.ncon
        if ncon == 0:
            return {}
        contact = self.data.contact
        g1, g2 = contact.geom1[:ncon], contact.geom2[:ncon]
        r1, r2 = self._ring_of_geom[g1], self._ring_of_geom[g2]
        m1 = self._is_finger[g1] & (r2 >= 0)
        m2 = self._is_finger[g2] & (r1 >= 0)
        touched: dict[int, set[int]] = {}
        for finger, ring in zip([*g1[m1].tolist(), *g2[m2].tolist()], [*r2[m1].tolist(), *r1[m2].tolist()],
                                strict=True):
            touched.setdefault(finger, set()).add(ring)
        return touched

    def _rings_touched_by_both_fingers(self, arm: str, by_finger: dict[int, set[int]] | None = None) -> set[int]:
        first, second = self._finger_geoms[arm]
        by_finger = self._rings_by_finger() if by_finger is None else by_finger
        return by_finger.get(first, set()) & by_finger.get(second, set())

    def _update_grasp_assist(self) -> None:
        by_finger: dict[int, set[int]] | None = None  # contacts do not change during this call
        for name, ring in self.held.items():
            closing = self._arms[name].jaw_goal() < JAW_GRASP_BELOW
            if ring is not None and not closing:
                self.data.eq_active[self._welds[(name, ring)]] = 0
                self.held[name] = None
            elif ring is None and closing:
                if by_finger is None:
                    by_finger = self._rings_by_finger()
                touched = sorted(self._rings_touched_by_both_fingers(name, by_finger))
                if touched:  # a ring another jaw holds may be taken too: that is a mid-air handover
                    self._weld(name, touched[0])

    def _weld(self, arm: str, ring: int) -> None:
        """Switch on the arm→ring weld at the current relative pose (body2 pose in body1's frame)."""
        eq = self._welds[(arm, ring)]
        b1, b2 = self.model.eq_obj1id[eq], self.model.eq_obj2id[eq]
        rot1 = self.data.xmat[b1].reshape(3, 3)
        relpos = rot1.T @ (self.data.xpos[b2] - self.data.xpos[b1])
        relquat = matrix_to_quat(rot1.T @ self.data.xmat[b2].reshape(3, 3))
        self.model.eq_data[eq, 0:3] = 0.0
        self.model.eq_data[eq, 3:6] = relpos
        self.model.eq_data[eq, 6:10] = relquat
        self.model.eq_data[eq, 10] = 1.0
        self.data.eq_active[eq] = 1
        self.held[arm] = ring
