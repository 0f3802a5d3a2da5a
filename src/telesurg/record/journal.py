"""The robot's safety supervisor with its inputs journaled into the tap, for a faithful replay.

`CommandJudged` records say what `submit` was given and answered, but the supervisor's decisions
also depend on everything else it is told: each servo period's `tick` (the watchdog, the setpoint
that limits a jump, the measured pose a re-engage must align with, the driver's operating state that
ends homing or raises a fault), the local console's actions (enable, takeover, e-stop...) and the
ownership desk's `assign`. `JournaledSupervisor` publishes each of those calls, with its arguments,
on `Topic.SUPERVISOR_INPUT` before running it, on the servo thread, so their order relative to the
`CommandJudged` records (published from the same thread) is the order the supervisor saw.

Cost on the servo thread: one tuple and one deque append per call (the dicts handed to `tick` are
built fresh each period by the servo loop and never changed after, so they are published as they
are); turning them into JSON happens on the recorder's thread. Nothing is published when no one
listens (`Tap.active`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from telesurg.robot.driver import ArmOperatingState, Pose
from telesurg.robot.safety_config import SupervisorConfig
from telesurg.robot.supervisor import SafetySupervisor, Setpoint
from telesurg.tap import Tap, Topic

# the supervisor's methods that change its state, other than submit (journaled as CommandJudged) and tick
JOURNALED_CALLS = ("enable", "disable", "clear_latch", "emergency_stop", "release_estop", "reset_fault",
                   "assign", "set_local_lock", "reset_session")


class JournaledSupervisor(SafetySupervisor):
    """A `SafetySupervisor` that publishes every input besides `submit` into `tap` (see the module doc)."""

    def __init__(self, config: SupervisorConfig, arm_names: Iterable[str], tap: Tap) -> None:
        super().__init__(config, arm_names)
        self._tap = tap
        self._last_now = 0.0

    def tick(self, now: float, measured: dict[str, Pose], jaw: dict[str, float] | None = None,
             operating: dict[str, ArmOperatingState] | None = None) -> dict[str, Setpoint]:
        self._last_now = now
        if self._tap.active:
            self._tap.publish(Topic.SUPERVISOR_INPUT, now, ("tick", measured, jaw, operating))
        return super().tick(now, measured, jaw, operating)

    def _journal(self, name: str, now: float | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._tap.active:
            self._tap.publish(Topic.SUPERVISOR_INPUT, self._last_now if now is None else now, (name, args, kwargs))

    def enable(self, arm: str | None, now: float) -> None:
        self._journal("enable", now, (arm, now), {})
        super().enable(arm, now)

    def disable(self, arm: str | None, now: float) -> None:
        self._journal("disable", now, (arm, now), {})
        super().disable(arm, now)

    def clear_latch(self, arm: str | None, now: float) -> None:
        self._journal("clear_latch", now, (arm, now), {})
        super().clear_latch(arm, now)

    def emergency_stop(self, now: float, cause: str = "estop") -> None:
        self._journal("emergency_stop", now, (now, cause), {})
        super().emergency_stop(now, cause)

    def release_estop(self, now: float) -> None:
        self._journal("release_estop", now, (now,), {})
        super().release_estop(now)

    def reset_fault(self, arm: str | None, now: float) -> None:
        self._journal("reset_fault", now, (arm, now), {})
        super().reset_fault(arm, now)

    def assign(self, arm: str, sender: str | None, now: float = 0.0, *, local: bool = False,
               cause: str = "handover") -> bool:
        self._journal("assign", now, (arm, sender, now), {"local": local, "cause": cause})
        return super().assign(arm, sender, now, local=local, cause=cause)

    def set_local_lock(self, arm: str, locked: bool) -> None:
        self._journal("set_local_lock", None, (arm, locked), {})
        super().set_local_lock(arm, locked)

    def reset_session(self, sender: str) -> None:
        self._journal("reset_session", None, (sender,), {})
        super().reset_session(sender)
