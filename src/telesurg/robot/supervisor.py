"""Patient-side safety supervisor: the last word on every motion, independent of the link.

Sans-I/O: `submit()` takes a decoded command, its authenticated sender and `now` (robot monotonic
clock); `tick()` is called once per servo period with the measured state and returns the setpoints
to send to the driver, already stepped within the caps. It never reads a clock or touches the
driver, so every invariant in DESIGN.md §4 can be tested in virtual time.

Per-arm state machine (every transition logged with time and cause, invariant 7):

    DISABLED --enable--> HOMING --driver homed--> READY --aligned re-engage--> FOLLOWING
    FOLLOWING --watchdog / takeover / handover--> HOLD --aligned re-engage--> FOLLOWING
    FOLLOWING --surgeon disengages--> READY
    HOLD --fault time--> LATCHED --operator clear--> READY
    any --e-stop / driver fault--> FAULT --operator reset (e-stop released)--> DISABLED

Entering FOLLOWING, from READY or after any hold, needs a command carrying FLAG_REENGAGE and
FLAG_ENGAGED whose pose is within `align_position_m` and `align_orientation_deg` of the tool
(dVRK style, invariant 5); packets coming back never resume motion by themselves.

`submit` and `tick` run for every arm at 1 kHz on the servo thread: they work on float tuples and
hand out shared immutable `Decision`s, since numpy and allocations on 3-4 values cost more than
the checks themselves.

Split by job: this module is the state machine and the judging of each command; safety_arm.py holds
the per-arm record and the capped per-period step, safety_ledger.py the counters, logs and report.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import numpy as np

from telesurg.messages import ArmId, ServoCommand
from telesurg.robot.driver import ArmOperatingState, OperatingState, Pose
from telesurg.robot.safety_arm import SupervisedArm, as_quat, as_vec3, step_setpoint
from telesurg.robot.safety_config import SupervisorConfig
from telesurg.robot.safety_geometry import Quat, Vec3, distance, normalize, quat_angle, quat_norm
from telesurg.robot.safety_ledger import SupervisorLedger
from telesurg.robot.safety_types import (
    Decision,
    HandoverRecord,
    HoldRecord,
    Outcome,
    Setpoint,
    SupervisorState,
    Transition,
)

__all__ = ["LOCAL_SENDER", "Decision", "HandoverRecord", "HoldRecord", "Outcome", "SafetySupervisor", "Setpoint", "SupervisorState",
           "Transition"]

log = logging.getLogger(__name__)

LOCAL_SENDER = "local"  # identity of the patient-side console; outranks every network sender
_ARM_NAME = {arm.value: arm.name for arm in ArmId}
_APPLIED = Decision(Outcome.APPLIED)
_JAW_CLIPPED = Decision(Outcome.CLIPPED, "jaw_range")
# tick runs every servo period: enum members as module names (a class attribute look-up costs ~50 ns)
_HOMING, _READY, _FOLLOWING, _HOLD, _FAULT = (SupervisorState.HOMING, SupervisorState.READY,
                                              SupervisorState.FOLLOWING, SupervisorState.HOLD, SupervisorState.FAULT)
_OP_FAULT, _OP_ENABLED = OperatingState.FAULT, OperatingState.ENABLED


class SafetySupervisor(SupervisorLedger):
    """Validates commands and turns them into capped per-period setpoints; see the module docstring."""

    def __init__(self, config: SupervisorConfig, arm_names: Iterable[str]) -> None:
        self.config = config
        self._arms = {name: SupervisedArm(name) for name in arm_names}
        if not self._arms:
            raise ValueError("arm_names is empty: the supervisor needs at least one arm (e.g. 'PSM1')")
        super().__init__()
        self.estopped = False
        self._driver_commands: list[tuple[str, str]] = []

    # ----------------------------------------------------------------- queries
    @property
    def arm_names(self) -> list[str]:
        return list(self._arms)

    def state(self, arm: str) -> SupervisorState:
        return self._arms[arm].state

    def controller(self, arm: str) -> str | None:
        return self._arms[arm].controller

    def last_applied_seq(self, arm: str) -> int:
        return self._arms[arm].last_applied_seq

    def setpoint(self, arm: str) -> Pose | None:
        a = self._arms[arm]
        if a.setpoint_pos is None:
            return None
        return Pose(np.array(a.setpoint_pos), np.array(a.setpoint_quat))

    def needs_measured(self, arm: str) -> bool:
        """True when `tick` needs this arm's measured pose: while homing (to seed the setpoint) and
        while not following (re-engaging aligns the master with the tool where it really is)."""
        return self._arms[arm].state in (SupervisorState.HOMING, SupervisorState.READY, SupervisorState.HOLD)

    def drain_driver_commands(self) -> list[tuple[str, str]]:
        """CRTK `state_command`s ("enable", "home", "disable") the servo loop must send, in order."""
        out, self._driver_commands = self._driver_commands, []
        return out

    # -------------------------------------------------------- operator actions
    def enable(self, arm: str | None, now: float) -> None:
        """Power and home an arm (or all): DISABLED -> HOMING; READY follows when the driver reports homed."""
        if self.estopped:
            log.warning("enable refused: emergency stop engaged")
            return
        for a in self._select(arm):
            if a.state is SupervisorState.DISABLED:
                self._driver_commands += [(a.name, "enable"), (a.name, "home")]
                self._transition(a, SupervisorState.HOMING, now, "operator_enable")

    def disable(self, arm: str | None, now: float) -> None:
        for a in self._select(arm):
            self._driver_commands.append((a.name, "disable"))
            self._close_hold(a, "disable")
            if a.state is not SupervisorState.FAULT:
                self._transition(a, SupervisorState.DISABLED, now, "operator_disable")

    def clear_latch(self, arm: str | None, now: float) -> None:
        """Operator acknowledges a latched arm: LATCHED -> READY (following still needs a re-engage)."""
        for a in self._select(arm):
            if a.state is SupervisorState.LATCHED:
                a.last_heard_t = a.last_valid_t = None
                self._transition(a, SupervisorState.READY, now, "operator_clear_latch")

    def emergency_stop(self, now: float, cause: str = "estop") -> None:
        """Every arm to FAULT and disabled at once; stays so until `release_estop` and per-arm reset."""
        self.estopped = True
        for a in self._arms.values():
            self._driver_commands.append((a.name, "disable"))
            self._close_hold(a, "estop")
            a.target_pos = None
            if a.state is not SupervisorState.FAULT:
                self._transition(a, SupervisorState.FAULT, now, cause)

    def release_estop(self, now: float) -> None:
        """Local operator releases the e-stop; arms stay in FAULT until `reset_fault`."""
        if self.estopped:
            self.estopped = False
            log.warning("t=%.3f emergency stop released by local operator", now)

    def reset_fault(self, arm: str | None, now: float) -> None:
        """FAULT -> DISABLED (then `enable` to home again); refused while the e-stop is engaged."""
        if self.estopped:
            log.warning("reset_fault refused: emergency stop still engaged")
            return
        for a in self._select(arm):
            if a.state is SupervisorState.FAULT:
                self._transition(a, SupervisorState.DISABLED, now, "operator_reset")

    def assign(self, arm: str, sender: str | None, now: float = 0.0, *, local: bool = False,
               cause: str = "handover") -> bool:
        """Give control of `arm` to `sender` (None: nobody); a moving arm holds, so the new owner
        must align and re-engage before it follows, and no command of the old owner is applied after.

        Refused (False) for a network caller while the local console has taken the arm over."""
        a = self._arms[arm]
        if a.local_lock and not local:
            log.warning("t=%.3f assign %s to %s refused: local takeover", now, arm, sender)
            return False
        if a.controller == sender:
            return True
        previous, a.controller = a.controller, sender
        a.last_heard_t = None
        a.open_handover = None
        before = previous if previous is not None else a.released_by
        a.released_by = previous if sender is None else None
        if before is not None and sender is not None and before != sender:
            record = HandoverRecord(now, arm, before, sender, cause, a.last_valid_t)
            self.handovers.append(record)
            a.open_handover = record
        if a.state is SupervisorState.FOLLOWING:
            self._hold(a, now, cause)
        log.info("t=%.3f %s control %s -> %s (%s)", now, arm, previous, sender, cause)
        return True

    def owner(self, arm: str) -> str | None:
        """The one sender whose commands this arm may apply (None: nobody's)."""
        return self._arms[arm].controller

    def last_heard(self, arm: str) -> float | None:
        """When the owner last sent this arm a fresh, ordered command (None: not since it got it)."""
        return self._arms[arm].last_heard_t

    def set_local_lock(self, arm: str, locked: bool) -> None:
        self._arms[arm].local_lock = locked

    def reset_session(self, sender: str) -> None:
        """A sender started a new link session; its cmd_seq numbering restarts."""
        for a in self._arms.values():
            a.seen_seq.pop(sender, None)
            a.applied_seq.pop(sender, None)

    # ---------------------------------------------------------------- commands
    def submit(self, cmd: ServoCommand, sender: str, link_seq: int, clock_offset: float | None,
               now: float) -> Decision:
        """Judge one command. `clock_offset` = sender clock minus robot clock, the sign of
        `LinkCore.clock_offset()` on the robot side (None: not yet known, so freshness is unprovable).

        `link_seq` is the link's message number, kept for the record; ordering uses `cmd_seq`."""
        try:
            name = _ARM_NAME.get(cmd.arm)
        except TypeError:  # unhashable
            name = None
        a = self._arms.get(name) if name is not None else None
        if a is None:
            return self._reject("unknown_arm")
        if self.estopped:
            return self._reject("estop")
        if sender != a.controller:
            return self._reject("not_owner")
        last = a.seen_seq.get(sender)
        if last is not None and cmd.cmd_seq <= last:
            return self._reject("duplicate" if cmd.cmd_seq == last else "out_of_order")
        a.seen_seq[sender] = cmd.cmd_seq
        if clock_offset is None:
            return self._reject("no_clock_offset")
        age = now - (cmd.t_sent - clock_offset)
        if not math.isfinite(age) or age > self.config.freshness_s:
            return self._reject("stale")
        if age < -self.config.future_tolerance_s:
            return self._reject("future")
        pos, q = cmd.position, cmd.orientation
        isfinite = math.isfinite
        if not (all(map(isfinite, pos)) and all(map(isfinite, q)) and isfinite(cmd.jaw)):
            return self._reject("malformed")
        qn = quat_norm(q)
        if abs(qn - 1.0) > 0.01:
            return self._reject("bad_orientation")
        quat = (q[0] / qn, q[1] / qn, q[2] / qn, q[3] / qn)  # = normalize(q), without a second norm
        a.last_heard_t = now  # the controller is alive and in order: no latch while it keeps talking
        if not cmd.engaged:
            if a.state is SupervisorState.FOLLOWING:
                self._transition(a, SupervisorState.READY, now, "surgeon_disengaged")
            return self._reject("not_engaged")
        if a.state is SupervisorState.FOLLOWING:
            if cmd.clutch:  # the master moves, the tool must not
                return self._accept(a, cmd, sender, now, a.setpoint_pos, a.setpoint_quat, a.target_jaw)
        elif a.state in (SupervisorState.READY, SupervisorState.HOLD):
            if not cmd.reengage or cmd.clutch:
                return self._reject("not_following")
        else:
            return self._reject("not_following")
        assert a.setpoint_pos is not None  # READY/HOLD/FOLLOWING always have one
        if not self.config.workspace_for(name).contains(pos):
            return self._reject("workspace")
        if a.state is not SupervisorState.FOLLOWING:
            # dVRK style: the master must match the tool as measured (a tool held against tissue sits
            # short of its setpoint; the console, which sees only the measured pose, could never match
            # the setpoint then). Steps from the setpoint toward the new target stay capped.
            ref_pos = a.measured_pos if a.measured_pos is not None else a.setpoint_pos
            ref_quat = a.measured_quat if a.measured_pos is not None else a.setpoint_quat
            if (distance(pos, ref_pos) > self.config.align_position_m
                    or math.degrees(quat_angle(quat, ref_quat)) > self.config.align_orientation_deg):
                return self._reject("not_aligned")
        elif distance(pos, a.setpoint_pos) > self.config.jump_m or \
                quat_angle(quat, a.setpoint_quat) > self.config.jump_rad:
            return self._reject("jump")
        jaw = min(max(cmd.jaw, self.config.jaw_min_rad), self.config.jaw_max_rad)
        if a.state is not SupervisorState.FOLLOWING:
            resumed_from = a.state
            if a.open_handover is not None:  # the new owner's first applied command ends the handover
                self._close_handover(a, now)
            self._close_hold(a, "reengage")
            self._transition(a, SupervisorState.FOLLOWING, now, f"reengage_from_{resumed_from.name.lower()}")
            a.measured_pos = None  # refreshed at the next hold; never compared against a stale pose
        decision = self._accept(a, cmd, sender, now, pos, quat, jaw)
        if jaw != cmd.jaw:
            self.clipped += 1
            return _JAW_CLIPPED
        return decision

    # -------------------------------------------------------------------- tick
    def tick(self, now: float, measured: dict[str, Pose], jaw: dict[str, float] | None = None,
             operating: dict[str, ArmOperatingState] | None = None) -> dict[str, Setpoint]:
        """Advance timers and return this period's setpoints (arms absent from the result hold)."""
        out: dict[str, Setpoint] = {}
        for a in self._arms.values():
            dt = self.config.servo_period_s if a.last_tick_t is None else now - a.last_tick_t
            if not 0.0 <= dt <= self.config.fault_s:
                self._clock_jumped(a, now, dt)
                dt = 0.0
            a.last_tick_t = now
            op = operating.get(a.name) if operating else None
            if op is not None and op.state is _OP_FAULT and a.state is not _FAULT:
                self._driver_commands.append((a.name, "disable"))
                self._close_hold(a, "driver_fault")
                self._transition(a, SupervisorState.FAULT, now, "driver_fault")
                continue
            if a.state is _HOMING:
                m = measured.get(a.name)
                if (op is not None and op.state is _OP_ENABLED and op.is_homed and not op.is_busy
                        and m is not None):
                    a.setpoint_pos = as_vec3(m.position)
                    a.setpoint_quat = normalize(as_quat(m.orientation))
                    a.setpoint_jaw = float(jaw.get(a.name, 0.0)) if jaw else 0.0
                    a.target_pos = None
                    self._transition(a, SupervisorState.READY, now, "homed")
                continue
            if a.state is _READY or a.state is _HOLD:
                m = measured.get(a.name)
                if m is not None:
                    a.measured_pos = as_vec3(m.position)
                    a.measured_quat = normalize(as_quat(m.orientation))
            if a.state is _FOLLOWING:
                since = now - (a.last_valid_t if a.last_valid_t is not None else now)
                if since > self.config.watchdog_s:
                    self._hold(a, now, "watchdog")
                    continue
                out[a.name] = step_setpoint(a, self.config, dt, self._violation)
            elif a.state is _HOLD:
                heard = a.last_heard_t if a.last_heard_t is not None else a.last_valid_t
                if heard is None or now - heard > self.config.fault_s:
                    self._transition(a, SupervisorState.LATCHED, now, "fault_time")
        return out

    # ---------------------------------------------------------------- reports
    def report(self) -> dict[str, object]:
        return self._report(self.estopped, {name: a.state.name for name, a in self._arms.items()})

    # --------------------------------------------------------------- internals
    def _select(self, arm: str | None) -> list[SupervisedArm]:
        return list(self._arms.values()) if arm is None else [self._arms[arm]]

    def _accept(self, a: SupervisedArm, cmd: ServoCommand, sender: str, now: float, pos: Vec3 | None,
                quat: Quat, jaw: float) -> Decision:
        prev = a.applied_seq.get(sender)
        if prev is not None and cmd.cmd_seq <= prev:  # independent re-check of invariant 1
            if cmd.cmd_seq == prev:
                self.duplicates_applied += 1
            else:
                self.out_of_order_applied += 1
            self._violation(f"{a.name} seq {cmd.cmd_seq} applied after {prev}")
        a.applied_seq[sender] = cmd.cmd_seq
        a.last_applied_seq = cmd.cmd_seq
        a.target_pos, a.target_quat, a.target_jaw = pos, quat, jaw
        a.last_valid_t = now
        self.applied += 1
        return _APPLIED

    def _clock_jumped(self, a: SupervisedArm, now: float, dt: float) -> None:
        """Ticks come every servo period: a tick earlier than the last one means the robot's clock
        stepped back, one later than the fault time that it stepped forward (or this thread stalled).
        Back: the watchdog and the fault time count from now at the latest (else a 10 s step put them
        off for 10 s). Forward: the time not watched is not the controller's silence, so it does not
        latch the arm, but a following arm holds (cause "clock_jump"): no command was judged
        meanwhile, and resuming takes the surgeon's aligned re-engage, as after any hold."""
        if dt < 0.0:
            if a.last_valid_t is not None:
                a.last_valid_t = min(a.last_valid_t, now)
            if a.last_heard_t is not None:
                a.last_heard_t = min(a.last_heard_t, now)
            return
        if a.last_heard_t is not None:
            a.last_heard_t = now
        if a.state is SupervisorState.FOLLOWING:
            self._hold(a, now, "clock_jump")

    def _hold(self, a: SupervisedArm, now: float, cause: str) -> None:
        a.target_pos = None  # freeze where we are: no further interpolation
        reaction = (now - a.last_valid_t) * 1000.0 if a.last_valid_t is not None else 0.0
        record = HoldRecord(now, a.name, reaction, cause)
        self.holds.append(record)
        a.open_hold = record
        self._transition(a, SupervisorState.HOLD, now, cause)

    def _close_handover(self, a: SupervisedArm, now: float) -> None:
        record, a.open_handover = a.open_handover, None
        assert record is not None
        record.first_new_applied_s = now
        if a.measured_pos is not None and a.setpoint_pos is not None:  # the setpoint froze at the grant
            record.moved_m = distance(a.measured_pos, a.setpoint_pos)

    def _close_hold(self, a: SupervisedArm, resumed_by: str) -> None:
        if a.open_hold is not None:
            a.open_hold.resumed_by = resumed_by
            a.open_hold = None

    def _transition(self, a: SupervisedArm, to: SupervisorState, now: float, cause: str) -> None:
        if a.state is to:
            return
        record = Transition(now, a.name, a.state, to, cause)
        self.transitions.append(record)
        level = logging.WARNING if to in (SupervisorState.HOLD, SupervisorState.LATCHED,
                                          SupervisorState.FAULT) else logging.INFO
        log.log(level, "t=%.4f %s %s -> %s (%s)", now, a.name, a.state.name, to.name, cause)
        a.state = to
