"""Layout of the FLS peg-transfer board: 12 pegs in two groups of six, six rings.

Plain constants (metres, base frame, board surface at z = 0) shared by the MJCF generator, the
scripted task and the tests, so "the ring is on the target peg" means the same thing everywhere.
Rings are a little larger than FLS rubber triangles so a simulated jaw fits between ring and peg.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PEG_RADIUS = 0.002
PEG_HEIGHT = 0.022
RING_MAJOR_RADIUS = 0.008  # centre of the ring tube to the ring axis
RING_TUBE_RADIUS = 0.0015
RING_SEGMENTS = 10  # capsules approximating the torus (MuJoCo has no torus primitive)
RING_MASS = 0.002  # kg
BOARD_HALF_SIZE = (0.075, 0.05, 0.004)  # box half extents; its top face is z = 0

_GROUP_OFFSETS = np.array([(dx, dy) for dy in (-0.012, 0.012) for dx in (-0.022, 0.0, 0.022)])
LEFT_GROUP_CENTRE = np.array([-0.038, 0.0])
RIGHT_GROUP_CENTRE = np.array([0.038, 0.0])


@dataclass(frozen=True, slots=True)
class PegBoard:
    """Peg positions (x, y at the board surface) and which pegs hold rings at start / at the goal."""

    pegs: np.ndarray  # (12, 2)
    start_pegs: tuple[int, ...]  # ring i starts on pegs[start_pegs[i]]
    target_pegs: tuple[int, ...]  # ring i belongs on pegs[target_pegs[i]]

    @property
    def ring_count(self) -> int:
        return len(self.start_pegs)

    def ring_start_position(self, ring: int) -> np.ndarray:
        """Centre of ring `ring` resting flat on the board around its start peg."""
        x, y = self.pegs[self.start_pegs[ring]]
        return np.array([x, y, RING_TUBE_RADIUS])

    def peg_top(self, peg: int) -> np.ndarray:
        x, y = self.pegs[peg]
        return np.array([x, y, PEG_HEIGHT])


def default_board() -> PegBoard:
    """Left group (pegs 0–5) holds the six rings; they go to the right group (pegs 6–11)."""
    pegs = np.vstack([LEFT_GROUP_CENTRE + _GROUP_OFFSETS, RIGHT_GROUP_CENTRE + _GROUP_OFFSETS])
    return PegBoard(pegs=pegs, start_pegs=tuple(range(6)), target_pegs=tuple(range(6, 12)))


def ring_on_peg(ring_centre: np.ndarray, peg_xy: np.ndarray) -> bool:
    """True if a ring centred at `ring_centre` encircles the peg and sits below its top."""
    horizontal = float(np.linalg.norm(np.asarray(ring_centre[:2]) - peg_xy))
    clearance = RING_MAJOR_RADIUS - RING_TUBE_RADIUS - PEG_RADIUS
    return horizontal <= clearance + 1e-4 and -0.002 < float(ring_centre[2]) < PEG_HEIGHT
