"""`ConsoleCore`: the sans-I/O surgeon console — master input in, CRTK `servo_cp` commands out.

Per produced period: sample the master once, tremor-filter each arm's position, run each arm's
teleoperation state machine (console/mapping.py) against the newest telemetry, and emit one
`ServoCommand` per configured arm with a strictly increasing `cmd_seq` and `t_sent = now`.
The core never reads a clock: the driver calls `tick(now, telemetry)` and may sleep until
`next_deadline()`. If the driver falls behind by more than a period, missed periods are skipped (a
late burst of stale poses would be worse than a gap) and counted.

It also estimates the one-way command delay: telemetry reports the last applied `cmd_seq` at robot
time `t_robot`; with the link's clock offset (robot clock − console clock) the delay is
`t_robot − offset − t_sent(seq)`, an upper bound tight to about one servo period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from telesurg.console.config import ConsoleConfig
from telesurg.console.inputs import ArmMasterState, HapticMaster, MasterInput, MasterState
from telesurg.console.mapping import ArmTeleop, RobotArmView, TeleopMode
from telesurg.console.tremor import TremorFilter
from telesurg.messages import ArmId, ArmTelemetry, ServoCommand, Telemetry

_MASTER_NOT_MAPPED = frozenset((TeleopMode.WAITING, TeleopMode.IDLE, TeleopMode.CLUTCHED))
_SEQ_RING = 8192  # remembers t_sent of the last ~8 s of commands per arm at 1 kHz
# Robot messages reordered across the paths differ by the paths' delay difference, far below this; a
# message older than the newest by more than this means the robot's clock stepped back.
ROBOT_CLOCK_STEP_BACK_S = 2.0


def superseded(t_robot: float, newest_t_robot: float) -> bool:
    """A robot message no newer than the newest one taken (a copy reordered across the paths): drop
    it. One older by more than ROBOT_CLOCK_STEP_BACK_S is not superseded: the robot's clock stepped
    back, and dropping it would lose the robot for as long as the step."""
    return newest_t_robot - ROBOT_CLOCK_STEP_BACK_S < t_robot <= newest_t_robot


_STATE_NAMES: dict[int, str] = {}  # memo of supervisor_state_name: telemetry asks it per arm at 100 Hz


def supervisor_state_name(value: int) -> str:
    """Name of a `robot.supervisor.SupervisorState` value; the raw number if that module is absent."""
    name = _STATE_NAMES.get(value)
    if name is not None:
        return name
    try:
        from telesurg.robot.supervisor import SupervisorState  # type: ignore[import-not-found]

        name = _STATE_NAMES[value] = SupervisorState(value).name
        return name
    except (ImportError, AttributeError, ValueError):
        return str(value)


def operating_state_name(value: int) -> str:
    from telesurg.robot.driver import OperatingState

    try:
        return OperatingState(value).name
    except ValueError:
        return str(value)


@dataclass(slots=True)
class ArmStatus:
    """Per-arm figures for the status display and reports."""

    arm: ArmId
    mode: TeleopMode = TeleopMode.WAITING
    sent: int = 0
    last_seq: int = 0
    alignment_error_deg: float | None = None
    supervisor_state: str = "?"
    operating_state: str = "?"
    last_applied_seq: int = 0
    command_delay_ms: float | None = None
    reengage_requests: int = 0


@dataclass(slots=True)
class ConsoleCounters:
    ticks: int = 0
    periods_skipped: int = 0
    telemetry_received: int = 0
    telemetry_stale_dropped: int = 0
    telemetry_malformed: int = 0
    sent: dict[ArmId, int] = field(default_factory=dict)


class ConsoleCore:
    """Sans-I/O console: `tick(now, telemetry) -> list[ServoCommand]`."""

    def __init__(self, config: ConsoleConfig, master: MasterInput, first_seq: int = 1) -> None:
        self.config = config
        self.master = master
        self._haptic = master if isinstance(master, HapticMaster) else None
        self.period = 1.0 / config.rate_hz
        self._teleop = {arm: ArmTeleop(config.scale, config.registration_wxyz,
                                       math.radians(config.align_tolerance_deg),
                                       (config.jaw_min_rad, config.jaw_max_rad), config.reengage_timeout_s)
                        for arm in config.arms}
        self._filters = {arm: TremorFilter(config.tremor_filter, config.rate_hz) for arm in config.arms}
        self._per_arm = [(arm, self._teleop[arm], self._filters[arm], int(arm)) for arm in config.arms]
        self._next_seq = dict.fromkeys(config.arms, first_seq)
        # plain lists, not numpy: two item writes per arm per 1 kHz tick, a third of the cost
        self._t_sent = {arm: [math.nan] * _SEQ_RING for arm in config.arms}
        self._seq_at = {arm: [-1] * _SEQ_RING for arm in config.arms}
        self._robot: dict[ArmId, RobotArmView] = {}
        self._robot_raw: dict[ArmId, ArmTelemetry] = {}
        self._last_telemetry: Telemetry | None = None
        self.last_telemetry_at: float | None = None  # console time of the newest telemetry
        self._next_due: float | None = None
        self._clock_offset: float | None = None
        self._command_delay: dict[ArmId, float] = {}
        self._delay_seq: dict[ArmId, int] = {}  # the applied seq each delay was measured with
        self.counters = ConsoleCounters(sent=dict.fromkeys(config.arms, 0))
        # This console's owner slot at the robot (several consoles, robot/ownership.py): commands go
        # only for arms whose telemetry names it. None: the robot has not said, so every arm is ours
        # to command (a robot serving one console); the supervisor judges ownership either way.
        self.slot: int | None = None
        self._owned: dict[ArmId, bool] = dict.fromkeys(config.arms, True)
        self.last_master_state: MasterState | None = None

    # -- inputs from the driver ----------------------------------------------------------------------
    def set_clock_offset(self, offset_s: float | None) -> None:
        """Link estimate of robot clock − console clock (seconds), for one-way delay figures."""
        self._clock_offset = offset_s

    def next_deadline(self) -> float | None:
        return self._next_due

    def receive_telemetry(self, telemetry: Telemetry, now: float) -> None:
        """Take telemetry; older than the newest already seen (reordered across paths) is dropped,
        unless it is so much older that the robot's clock stepped back: dropped, the console would
        not have seen the robot for as long as the step, nor a hold, so it never re-engaged."""
        last = self._last_telemetry
        if not math.isfinite(telemetry.t_robot):
            self.counters.telemetry_malformed += 1
            return
        if last is not None and superseded(telemetry.t_robot, last.t_robot):
            self.counters.telemetry_stale_dropped += 1
            return
        self.counters.telemetry_received += 1
        self._last_telemetry = telemetry
        self.last_telemetry_at = now
        for a in telemetry.arms:
            try:
                arm = ArmId(a.arm)
            except ValueError:
                self.counters.telemetry_malformed += 1
                continue
            if not all(math.isfinite(v) for v in (*a.position, *a.orientation, a.jaw)) or \
                    sum(c * c for c in a.orientation) < 0.5:
                self.counters.telemetry_malformed += 1  # never anchor a command on a broken pose
                continue
            name = supervisor_state_name(a.supervisor_state)
            owned = self.slot is None or a.owner == self.slot
            self._robot_raw[arm] = a
            previous = self._robot.get(arm)
            # another console's cmd_seq means nothing here: keep our own last applied one
            applied = a.last_applied_seq if owned else (previous.last_applied_seq if previous else 0)
            self._robot[arm] = RobotArmView(a.position, a.orientation, a.jaw,
                                            owned and name in self.config.following_states, applied)
            if arm in self._owned:
                self._owned[arm] = owned
            # only a newly applied command measures the delay: while none is (clutch, hold, task done)
            # the same seq would give its age, growing, not the path's delay
            if owned and arm in self._t_sent and self._clock_offset is not None \
                    and a.last_applied_seq != self._delay_seq.get(arm):
                slot = a.last_applied_seq % _SEQ_RING
                if self._seq_at[arm][slot] == a.last_applied_seq:
                    delay = telemetry.t_robot - self._clock_offset - self._t_sent[arm][slot]
                    self._command_delay[arm] = float(delay)
                    self._delay_seq[arm] = a.last_applied_seq

    def tick(self, now: float, telemetry: Telemetry | None = None) -> list[ServoCommand]:
        """Advance to `now`; return this period's commands (empty if no period is due)."""
        self.counters.ticks += 1
        if telemetry is not None:
            self.receive_telemetry(telemetry, now)
        if self._next_due is None:
            self._next_due = now
        # A tick up to half a period early is this period's: the grid starts at the first tick's wake
        # time, so a driver's wake-up jitter made every tick that woke less late than the first one
        # "early" and dropped it (~20 % of periods on a busy VM). A tick a whole period or more late
        # skips the periods it missed, as before, instead of bursting to catch up.
        offset = (now - self._next_due) / self.period
        if offset < -0.5:
            if offset > -2.0:
                return []
            # The grid runs at most 1.5 periods ahead of the last tick, so this tick is earlier than
            # any tick before it: the console's clock stepped back. Restart the grid here; kept, it
            # would have sent nothing for as long as the step.
            offset = 0.0
            self._next_due = now
        behind = max(0, int(offset))
        if behind > 0:
            self.counters.periods_skipped += behind
        self._next_due += (behind + 1) * self.period
        return self._produce(now)

    # -- one command period ---------------------------------------------------------------------------
    def _produce(self, now: float) -> list[ServoCommand]:
        state = self.master.sample(now)
        self.last_master_state = state  # force feedback (console/haptics/bridge.py) renders on this sample
        commands: list[ServoCommand] = []
        owned = self._owned
        for arm, teleop, tremor, arm_id in self._per_arm:
            if not owned[arm]:  # another console (or the local one) has this arm: nothing to send
                tremor.restart()
                continue
            master = state.arms.get(arm)
            if master is not None:  # same as dataclasses.replace(position=...), at a fraction of the cost
                if teleop.mode in _MASTER_NOT_MAPPED:
                    # The tool does not follow the master now, and may be re-anchored to it this very
                    # period: filter from where the master is, so a jump of the master meanwhile (a
                    # scripted surgeon rewound after a hold, a hand moved while clutched) does not ring
                    # on into the anchored motion. It moved the tool 10 mm after a resume, unbidden.
                    tremor.restart()
                x, y, z = tremor.step_floats(master.position)
                master = ArmMasterState((x, y, z), master.orientation, master.jaw, master.clutch, master.engaged,
                                        master.reengage)
            seq = self._next_seq[arm]
            cmd = teleop.step(now, master, self._robot.get(arm), seq)
            if teleop.wanted_alignment is not None and self._haptic is not None:
                self._haptic.align_to(arm, teleop.wanted_alignment, now)
            if cmd is None:
                continue
            commands.append(ServoCommand(arm_id, seq, now, cmd.position, cmd.orientation, cmd.jaw, cmd.flags))
            self._next_seq[arm] = seq + 1
            slot = seq % _SEQ_RING
            self._t_sent[arm][slot] = now
            self._seq_at[arm][slot] = seq
            self.counters.sent[arm] += 1
        return commands

    # -- status --------------------------------------------------------------------------------------
    @property
    def holds(self) -> int:
        return self._last_telemetry.holds if self._last_telemetry is not None else 0

    def one_way_delay_ms(self) -> float | None:
        """Worst per-arm command delay estimate (ms), None without offset or telemetry."""
        if not self._command_delay:
            return None
        return 1000.0 * max(self._command_delay.values())

    def arm_status(self) -> list[ArmStatus]:
        out = []
        for arm, teleop in self._teleop.items():
            raw = self._robot_raw.get(arm)
            err = teleop.alignment_error_rad
            delay = self._command_delay.get(arm)
            out.append(ArmStatus(
                arm, teleop.mode, self.counters.sent[arm], self._next_seq[arm] - 1,
                None if err is None else math.degrees(err),
                supervisor_state_name(raw.supervisor_state) if raw else "?",
                operating_state_name(raw.operating_state) if raw else "?",
                raw.last_applied_seq if raw else 0,
                None if delay is None else 1000.0 * delay, teleop.reengage_requests))
        return out

    def owns(self, arm: ArmId) -> bool:
        """Whether the newest telemetry says this console controls `arm`."""
        return self._owned.get(arm, False)

    def last_applied_seq(self, arm: ArmId) -> int | None:
        """The newest of *our* commands the robot applied to `arm` (None before any telemetry)."""
        view = self._robot.get(arm)
        return None if view is None else view.last_applied_seq

    def t_sent_of(self, arm: ArmId, seq: int) -> float | None:
        """Console time at which command `seq` of `arm` was sent (None once out of the ring)."""
        if arm not in self._seq_at:
            return None
        slot = seq % _SEQ_RING
        return float(self._t_sent[arm][slot]) if self._seq_at[arm][slot] == seq else None

    def teleop(self, arm: ArmId) -> ArmTeleop:
        return self._teleop[arm]
