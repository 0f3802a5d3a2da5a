"""Master → tool mapping for one arm: scaling, clutch, orientation alignment and re-engagement.

The tool frame is always anchored on something the robot really did: the measured tool pose from
telemetry (start, after a hold) or the last commanded pose (after a clutch). So the first command
after (re)anchoring equals where the tool is — no jump — and then

    tool position    = tool_anchor + scale · R (master − master_anchor)
    tool orientation = offset ⊗ R ⊗ master,   offset = tool_anchor_q ⊗ (R ⊗ master_anchor_q)⁻¹

R is the master→robot registration. The orientation is absolute (dVRK style), so following may only
start when the master is aligned with the tool within the tolerance (5°); `offset` removes the small
residual so even that does not jump. While not aligned the arm asks the master to align
(`wanted_alignment`), which a motorised or virtual master does and a human does by hand.

Modes:
- WAITING: no telemetry for this arm yet → no command (we do not know where the tool is).
- IDLE: the robot is not following (start, hold, latched) or the operator is absent. Commands carry
  the measured pose (flags 0, or ENGAGED if present). Following resumes only when the operator
  presses resume *while idle* (a fresh, explicit action, DESIGN.md invariant 5) and the master is
  aligned; if the robot never held (operator just stepped away) being present and aligned suffices.
- REENGAGING: commands carry REENGAGE until telemetry shows the robot following and having applied
  one of them; after `reengage_timeout_s` without that, back to IDLE (ask again).
- FOLLOWING: commands carry ENGAGED and the mapped pose.
- CLUTCHED: commands carry ENGAGED|CLUTCH and the frozen pose; on release, once aligned, re-anchor.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from telesurg.console import quat
from telesurg.console.inputs import ArmMasterState
from telesurg.console.quat import Quat, Vec3
from telesurg.messages import FLAG_CLUTCH, FLAG_ENGAGED, FLAG_REENGAGE


class TeleopMode(enum.Enum):
    WAITING = "waiting"
    IDLE = "idle"
    REENGAGING = "reengaging"
    FOLLOWING = "following"
    CLUTCHED = "clutched"


@dataclass(frozen=True, slots=True)
class RobotArmView:
    """What the console knows of one robot arm from the newest telemetry."""

    position: Vec3
    orientation: Quat
    jaw: float
    following: bool  # supervisor is following console commands
    last_applied_seq: int


@dataclass(frozen=True, slots=True)
class ToolCommand:
    position: Vec3
    orientation: Quat
    jaw: float
    flags: int


class ArmTeleop:
    """Sans-I/O teleoperation state machine of one arm; `step` is called once per command period."""

    def __init__(self, scale: float, registration: Quat = quat.IDENTITY, align_tolerance_rad: float = 0.0873,
                 jaw_limits: tuple[float, float] = (0.0, 1.2), reengage_timeout_s: float = 2.0) -> None:
        if scale <= 0:
            raise ValueError("scale must be > 0")
        self.scale = scale
        self._reg = quat.normalize(registration)
        self._tol = align_tolerance_rad
        self._jaw_lo, self._jaw_hi = jaw_limits
        self._reengage_timeout = reengage_timeout_s
        self.mode = TeleopMode.WAITING
        self._tool_anchor: Vec3 = (0.0, 0.0, 0.0)
        self._master_anchor: Vec3 = (0.0, 0.0, 0.0)
        self._offset: Quat = quat.IDENTITY
        self._last: ToolCommand | None = None
        self._prev_button = False
        self._request = False
        self._robot_held = True  # until the robot says it follows, a resume needs an explicit request
        self._reengage_since = 0.0
        self._reengage_first_seq: int | None = None
        self.wanted_alignment: Quat | None = None  # master-frame orientation the master should take
        self.alignment_error_rad: float | None = None
        self.reengage_requests = 0
        self.reengages_sent = 0

    # -- helpers -------------------------------------------------------------------------------
    def _master_in_robot(self, m: ArmMasterState) -> Quat:
        return quat.multiply(self._reg, m.orientation)

    def _aligned(self, m: ArmMasterState, tool_q: Quat) -> bool:
        self.alignment_error_rad = quat.angle_between(self._master_in_robot(m), tool_q)
        ok = self.alignment_error_rad <= self._tol
        self.wanted_alignment = None if ok else quat.multiply(quat.conjugate(self._reg), tool_q)
        return ok

    def _anchor(self, m: ArmMasterState, tool_pos: Vec3, tool_q: Quat) -> None:
        self._tool_anchor = tool_pos
        self._master_anchor = m.position
        self._offset = quat.multiply(tool_q, quat.conjugate(self._master_in_robot(m)))

    def _mapped(self, m: ArmMasterState) -> tuple[Vec3, Quat, float]:
        d = (m.position[0] - self._master_anchor[0], m.position[1] - self._master_anchor[1],
             m.position[2] - self._master_anchor[2])
        r = quat.rotate(self._reg, d)
        s = self.scale
        a = self._tool_anchor
        pos = (a[0] + s * r[0], a[1] + s * r[1], a[2] + s * r[2])
        q = quat.normalize(quat.multiply(self._offset, self._master_in_robot(m)))
        return pos, q, min(self._jaw_hi, max(self._jaw_lo, m.jaw))

    # -- the step --------------------------------------------------------------------------------
    def step(self, now: float, master: ArmMasterState | None, robot: RobotArmView | None,
             next_seq: int) -> ToolCommand | None:
        """Advance one period. `next_seq` is the seq the returned command will carry (to confirm resumes)."""
        pressed = master is not None and master.reengage and not self._prev_button
        self._prev_button = master is not None and master.reengage
        if robot is None:
            return None
        if self.mode is TeleopMode.WAITING:
            self.mode = TeleopMode.IDLE
        if not robot.following:
            self._robot_held = True
        if master is None or not master.engaged:
            return self._to_idle(robot, present=False)
        if self.mode in (TeleopMode.FOLLOWING, TeleopMode.CLUTCHED) and not robot.following:
            self._robot_held = True
            return self._to_idle(robot, present=True)
        if self.mode is TeleopMode.IDLE:
            return self._idle(now, master, robot, pressed, next_seq)
        if self.mode is TeleopMode.REENGAGING:
            return self._reengaging(now, master, robot)
        if self.mode is TeleopMode.CLUTCHED:
            return self._clutched(master)
        return self._following(master)

    def _to_idle(self, robot: RobotArmView, present: bool) -> ToolCommand:
        if self.mode is not TeleopMode.IDLE:
            self._request = False
        if not present:
            self._robot_held = True  # a disengaged command drops the supervisor to READY: resume is explicit
        self.mode = TeleopMode.IDLE
        self.wanted_alignment = None
        if robot.following and self._last is not None:
            # the robot still follows us: keep the last pose rather than chase a lagging measurement
            cmd = ToolCommand(self._last.position, self._last.orientation, self._last.jaw, 0)
        else:
            cmd = ToolCommand(robot.position, robot.orientation, robot.jaw, 0)
        cmd = ToolCommand(cmd.position, cmd.orientation, cmd.jaw, FLAG_ENGAGED if present else 0)
        self._last = cmd
        return cmd

    def _idle(self, now: float, m: ArmMasterState, robot: RobotArmView, pressed: bool,
              next_seq: int) -> ToolCommand:
        if pressed:
            self._request = True
            self.reengage_requests += 1
        cmd = self._to_idle(robot, present=True)
        wants = self._request or not self._robot_held
        if not wants or m.clutch or not self._aligned(m, cmd.orientation):
            if not wants:
                self.wanted_alignment = None
            return cmd
        self._anchor(m, cmd.position, cmd.orientation)
        self._request = False
        if robot.following and not self._robot_held:
            self.mode = TeleopMode.FOLLOWING
            return self._following(m)
        self.mode = TeleopMode.REENGAGING
        self._reengage_since = now
        self._reengage_first_seq = next_seq
        return self._reengaging(now, m, robot)

    def _reengaging(self, now: float, m: ArmMasterState, robot: RobotArmView) -> ToolCommand:
        first = self._reengage_first_seq
        if robot.following and first is not None and robot.last_applied_seq >= first:
            self._robot_held = False
            self.mode = TeleopMode.FOLLOWING
            return self._following(m)
        if now - self._reengage_since > self._reengage_timeout:
            return self._to_idle(robot, present=True)
        if m.clutch:
            return self._clutch_press()
        pos, q, jaw = self._mapped(m)
        self._last = ToolCommand(pos, q, jaw, FLAG_ENGAGED | FLAG_REENGAGE)
        self.reengages_sent += 1
        return self._last

    def _following(self, m: ArmMasterState) -> ToolCommand:
        if m.clutch:
            return self._clutch_press()
        pos, q, jaw = self._mapped(m)
        self._last = ToolCommand(pos, q, jaw, FLAG_ENGAGED)
        return self._last

    def _clutch_press(self) -> ToolCommand:
        assert self._last is not None
        self.mode = TeleopMode.CLUTCHED
        self._last = ToolCommand(self._last.position, self._last.orientation, self._last.jaw,
                                 FLAG_ENGAGED | FLAG_CLUTCH)
        return self._last

    def _clutched(self, m: ArmMasterState) -> ToolCommand:
        assert self._last is not None
        frozen = self._last
        if not m.clutch and self._aligned(m, frozen.orientation):
            self._anchor(m, frozen.position, frozen.orientation)
            self.mode = TeleopMode.FOLLOWING
            return self._following(m)
        if m.clutch:
            self.wanted_alignment = None
        return frozen
