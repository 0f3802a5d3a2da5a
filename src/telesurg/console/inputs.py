"""Master input devices behind one interface: `MasterInput.sample(now) -> MasterState`.

A master is whatever the surgeon moves: a haptic device (dVRK MTM, Touch, Sigma.7), a keyboard or
gamepad (console/human_input.py), or a script (below). The console core only ever calls `sample`, so
adding a device means writing one class. Positions are in the master's own frame (metres); the
mapping (console/mapping.py) applies registration, scaling, clutch and alignment.

Scripted inputs:
- `ScriptedSurgeonInput` replays a trajectory file of master poses (format in console/script_file.py).
- `ScriptedTaskInput` turns a tool-space trajectory (e.g. the peg-transfer plan) into master motion:
  master = origin + (tool − tool₀) / scale, so that the mapping reproduces the tool targets exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from telesurg.console import quat
from telesurg.console.quat import Quat, Vec3
from telesurg.console.script_file import ScriptSample, TrajectoryScript, read_script
from telesurg.messages import ArmId


@dataclass(frozen=True, slots=True)
class ArmMasterState:
    """One master arm at one instant, as the surgeon holds it."""

    position: Vec3  # metres, master frame
    orientation: Quat = quat.IDENTITY  # unit quaternion w, x, y, z, master frame
    jaw: float = 0.0  # radians, 0 = closed (gripper opening)
    clutch: bool = False  # clutch pedal pressed: the master may move, the tool must not
    engaged: bool = True  # operator present (head in console / pedal): wants this arm to follow
    reengage: bool = False  # resume button currently pressed (a press = explicit operator action)


@dataclass(frozen=True, slots=True)
class MasterState:
    t: float
    arms: Mapping[ArmId, ArmMasterState]


@runtime_checkable
class MasterInput(Protocol):
    """Anything that can say where the surgeon's hands are now. Must not block (called at 1 kHz)."""

    def sample(self, now: float) -> MasterState: ...


@runtime_checkable
class HapticMaster(MasterInput, Protocol):
    """A master with motors (dVRK MTM style). Implement this for real haptic hardware.

    - `sample(now)` returns the latest encoder pose without blocking: read the device in its own
      thread or process at ≥ 1 kHz and hand over the newest sample (never queue old ones).
    - `align_to(arm, orientation, now)` is called by the console, repeatedly, while it waits for the
      master orientation to match the tool (after start, a clutch or a hold). A motorised master
      should servo its wrist to `orientation` (master frame) gently; a passive or virtual master may
      snap to it. The console starts following only once the error is under the tolerance (5°).
    - `set_force(arm, force_xyz, now)` is reserved for force feedback (not used yet; may do nothing).
    - `close()` releases the hardware (brakes on, amplifiers off).
    """

    def align_to(self, arm: ArmId, orientation: Quat, now: float) -> None: ...
    def set_force(self, arm: ArmId, force_xyz: Vec3, now: float) -> None: ...
    def close(self) -> None: ...


def arm_from_key(key: object) -> ArmId:
    """Accept ArmId, int or a name like "psm1"/"PSM1" as an arm key (trajectory sources vary)."""
    if isinstance(key, ArmId):
        return key
    if isinstance(key, int):
        return ArmId(key)
    if isinstance(key, str) and key.upper() in ArmId.__members__:
        return ArmId[key.upper()]
    raise ValueError(f"unknown arm {key!r}; use one of {', '.join(ArmId.__members__)}")


class ToolTargetLike(Protocol):
    """What a tool-space trajectory yields per arm (robot.peg_transfer.ToolTarget fits this)."""

    @property
    def position(self) -> object: ...  # 3 floats, metres, robot base frame
    @property
    def orientation(self) -> object: ...  # 4 floats, w x y z
    @property
    def jaw(self) -> float: ...


class ToolTrajectory(Protocol):
    """A tool-space trajectory source, e.g. `peg_transfer_plan(...)`: a duration and a sampler."""

    @property
    def duration(self) -> float: ...
    def sample(self, t: float) -> Mapping[object, ToolTargetLike]: ...


def _vec3(values: object) -> Vec3:
    x, y, z = values  # type: ignore[misc]
    return (float(x), float(y), float(z))


def _quat(values: object) -> Quat:
    w, x, y, z = values  # type: ignore[misc]
    return quat.normalize((float(w), float(x), float(y), float(z)))


class ScriptedTaskInput:
    """A perfect scripted surgeon performing a tool-space task through the master.

    master position = master_origin + R⁻¹ (tool − tool₀) / scale and master orientation = R⁻¹ · tool,
    with R the console's master→robot registration and tool₀ the first target, so once the console
    anchors (tool at tool₀, master at master_origin) its commands equal the targets. The clock starts
    at `start_time` (the first `sample` call if None); the first target is held for `lead_in_s` so the
    console can align and engage before the task moves, then the task runs; after `duration` the last
    target is held. The operator presses resume for `press_s` at the end of every `press_period_s`
    (a persistent, explicit request) so a scripted run resumes after a hold once re-aligned.

    It behaves as a motorised master (`HapticMaster`): when the console asks it to align (the task
    went on turning while the tool was held), it turns its wrist onto the tool and keeps that
    correction, so later motion is reproduced relative to where the tool really is.
    """

    def __init__(self, trajectory: ToolTrajectory, scale: float,
                 registration: Quat = quat.IDENTITY, master_origin: Vec3 = (0.0, 0.0, 0.0),
                 start_time: float | None = None, lead_in_s: float = 1.5, press_period_s: float = 0.5,
                 press_s: float = 0.05, loop: bool = False) -> None:
        if scale <= 0:
            raise ValueError("scale must be > 0")
        self._trajectory = trajectory
        self._scale = scale
        self._reg_inv = quat.conjugate(quat.normalize(registration))
        self._origin = master_origin
        self._start = start_time
        self._lead_in = lead_in_s
        self._press_period = press_period_s
        self._press = press_s
        self._loop = loop
        first = trajectory.sample(0.0)
        self._tool0 = {arm_from_key(k): _vec3(v.position) for k, v in first.items()}
        self._arm_of: dict[object, ArmId] = {}  # trajectory key -> arm, resolved once per key
        self._sample_fast = getattr(trajectory, "sample_floats", None)  # the peg-transfer plan has one
        self._correction: dict[ArmId, Quat] = {}
        self._last_plan_q: dict[ArmId, Quat] = {}
        self._held_at: float | None = None  # task time frozen while the robot holds

    @property
    def held(self) -> bool:
        return self._held_at is not None

    def hold(self, sent_at: float) -> None:
        """The robot holds: stop where the last *applied* command was (sent at console time `sent_at`).

        A surgeon stops when the video shows the robot holding; freezing the task there keeps the
        master aligned with the tool, so the re-engage is accepted and the task continues on plan."""
        if self._held_at is None:
            self._held_at = self.task_time(sent_at)

    def release(self, now: float) -> None:
        """Following again: the task resumes from where it was frozen."""
        if self._held_at is not None and self._start is not None:
            self._start = now - self._lead_in - self._held_at
            self._held_at = None

    def done(self, now: float) -> bool:
        """The whole task has been performed (time spent holding does not count)."""
        return self._start is not None and self._held_at is None and not self._loop and \
            self.task_time(now) >= self._trajectory.duration

    def task_time(self, now: float) -> float:
        if self._start is None:
            self._start = now
        if self._held_at is not None:
            return self._held_at
        t = max(0.0, now - self._start - self._lead_in)
        duration = self._trajectory.duration
        if self._loop and duration > 0:
            return t % duration
        return min(t, duration)

    def sample(self, now: float) -> MasterState:
        t = self.task_time(now)
        pressed = (now - (self._start or 0.0)) % self._press_period >= self._press_period - self._press
        arms: dict[ArmId, ArmMasterState] = {}
        for key, (tool_position, tool_orientation, jaw) in self._sample_floats(t):
            arm = self._arm_of.get(key)
            if arm is None:
                arm = self._arm_of[key] = arm_from_key(key)
            tool0 = self._tool0[arm]
            x, y, z = tool_position
            delta = ((x - tool0[0]) / self._scale, (y - tool0[1]) / self._scale, (z - tool0[2]) / self._scale)
            d = quat.rotate(self._reg_inv, delta)
            position = (self._origin[0] + d[0], self._origin[1] + d[1], self._origin[2] + d[2])
            plan_q = quat.multiply(self._reg_inv, _quat(tool_orientation))
            self._last_plan_q[arm] = plan_q
            orientation = quat.multiply(self._correction.get(arm, quat.IDENTITY), plan_q)
            arms[arm] = ArmMasterState(position, orientation, float(jaw), reengage=pressed)
        return MasterState(now, arms)

    def _sample_floats(self, t: float) -> Iterable[tuple[object, tuple[Vec3, object, float]]]:
        """The trajectory at task time `t` as (arm key, (position, orientation, jaw)), the position on
        plain floats: through its `sample_floats` when it has one (the peg-transfer plan: no arrays
        built and taken apart at 1 kHz). The orientation is normalised by the caller."""
        if self._sample_fast is not None:
            return self._sample_fast(t).items()
        return ((key, (_vec3(target.position), target.orientation, float(target.jaw)))
                for key, target in self._trajectory.sample(t).items())

    def align_to(self, arm: ArmId, orientation: Quat, now: float) -> None:
        plan_q = self._last_plan_q.get(arm)
        if plan_q is not None:
            self._correction[arm] = quat.normalize(quat.multiply(orientation, quat.conjugate(plan_q)))

    def set_force(self, arm: ArmId, force_xyz: Vec3, now: float) -> None:
        """A script feels nothing."""

    def close(self) -> None:
        pass


class ScriptedSurgeonInput:
    """Replays a master trajectory file (console/script_file.py); time starts at the first `sample`."""

    def __init__(self, script: TrajectoryScript | str | Path, start_time: float | None = None,
                 loop: bool = False) -> None:
        self._script = script if isinstance(script, TrajectoryScript) else read_script(script)
        self._start = start_time
        self._loop = loop

    @property
    def duration(self) -> float:
        return self._script.duration

    def sample(self, now: float) -> MasterState:
        if self._start is None:
            self._start = now
        t = now - self._start
        if self._loop and self._script.duration > 0:
            t %= self._script.duration
        arms: dict[ArmId, ArmMasterState] = {}
        for arm, s in self._script.at(t).items():
            arms[arm] = _to_master(s)
        return MasterState(now, arms)


def _to_master(s: ScriptSample) -> ArmMasterState:
    return ArmMasterState(s.position, s.orientation, s.jaw, s.clutch, s.engaged, s.reengage)
