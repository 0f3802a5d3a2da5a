"""The console site's view of the operating room: who controls which arm, and its own handovers.

The robot tells each console, on the reliable event channel, the ownership snapshot (with this
console's own slot, which the core uses to read telemetry's owner byte) and, a few times a second on
the telemetry class, the room status (every console's link health and ghost). This console asks for
and gives up arms with handover messages (robot/ownership.py documents the protocol).

Two scripted behaviours for the demo and tests, driven from the ticker thread per telemetry:
- a lead's *planned handover* (`--hand-over PSM1@30`): at that task time the scripted surgeon stops,
  the console releases the arm and at once asks for it back, and the script goes on once the arm is
  its own again and following (after re-alignment);
- a consultant (`--script consult`) follows with an arm once given it, draws its loop, releases it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from telesurg.console.consult import ConsultantInput
from telesurg.console.core import ConsoleCore
from telesurg.console.inputs import ScriptedTaskInput
from telesurg.console.mapping import TeleopMode
from telesurg.messages import ArmId, Telemetry
from telesurg.robot.safety_types import SupervisorState

log = logging.getLogger("telesurg.console")
_HELD = (SupervisorState.HOLD, SupervisorState.LATCHED)


def parse_hand_over(value: str) -> tuple[ArmId, float]:
    """'PSM1@30' -> (PSM1, 30.0): release the arm at that task time (s) and ask for it back."""
    arm, sep, at = value.partition("@")
    try:
        return ArmId[arm.upper()], float(at) if sep else 0.0
    except (KeyError, ValueError):
        raise ValueError(f"--hand-over: expected ARM@SECONDS such as PSM1@30, got {value!r}") from None


class ConsoleRoom:
    """Ownership, room status and this console's handover actions."""

    def __init__(self, core: ConsoleCore, endpoint: Any) -> None:
        self.core = core
        self.endpoint = endpoint
        self.me: str | None = None
        self.ownership: dict[str, Any] | None = None
        self.status: dict[str, Any] | None = None
        self.peers_seen: dict[str, dict[str, Any]] = {}
        self.refused: list[dict[str, Any]] = []
        self.actions: list[dict[str, Any]] = []
        self.hand_over: tuple[ArmId, float] | None = None
        self._handover_stage: str | None = None  # None, "released" (asked), "away" (seen elsewhere)
        self._letting_go: set[ArmId] = set()  # a consultant's released arms, until the robot agrees
        self._loop: asyncio.AbstractEventLoop | None = None
        self.started_at: float | None = None

    def bind(self, loop: asyncio.AbstractEventLoop, started_at: float) -> None:
        self._loop, self.started_at = loop, started_at

    # -- link thread --------------------------------------------------------------------------------
    def on_event(self, payload: bytes) -> bool:
        """An ownership snapshot or a refusal from the robot; False if the payload is something else."""
        try:
            message = json.loads(payload)
        except ValueError:
            return False
        if not isinstance(message, dict):
            return False
        if message.get("type") == "ownership":
            you = message.get("you") or {}
            if isinstance(you.get("slot"), int):
                self.core.slot = you["slot"]  # one int store: the ticker reads it per telemetry
                self.me = you.get("identity")
            self.ownership = message
            return True
        if message.get("type") == "arm_refused":
            self.refused.append({**message, "at_s": self._t()})
            log.warning("robot refused %s for %s: %s", message.get("request"), message.get("arm"),
                        message.get("reason"))
            return True
        return False

    def on_status(self, body: dict[str, Any]) -> None:
        self.status = body
        peers = body.get("peers")
        for identity, info in peers.items() if isinstance(peers, dict) else ():
            if isinstance(info, dict) and "rtt_ms" in info:  # connected: keep its last health for the report
                self.peers_seen[str(identity)] = info

    def request(self, arm: ArmId) -> None:
        self._send({"type": "arm_request", "arm": arm.name})

    def release(self, arm: ArmId) -> None:
        self._send({"type": "arm_release", "arm": arm.name})

    def grant(self, arm: ArmId, to: str) -> None:
        self._send({"type": "arm_grant", "arm": arm.name, "to": to})

    def _send(self, message: dict[str, Any]) -> None:
        self.actions.append({**message, "at_s": self._t()})
        self.endpoint.send_event(json.dumps(message).encode())

    def _t(self) -> float:
        return round(time.monotonic() - (self.started_at or time.monotonic()), 3)

    def _from_ticker(self, *messages: dict[str, Any]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            for message in messages:
                loop.call_soon_threadsafe(self._send, message)

    # -- ticker thread ----------------------------------------------------------------------------
    def before_tick(self, now: float) -> None:
        """Handover keys of a person's master; a lead's planned handover: stop the script exactly at
        its task time, then let go."""
        master = self.core.master
        take = getattr(master, "take_handover_actions", None)
        if take is not None:
            for kind, which in take():
                self._from_ticker({"type": kind, "arm": which.name})
        if self.hand_over is None or not isinstance(master, ScriptedTaskInput) or master.held:
            return
        arm, at = self.hand_over
        if master.task_time(now) >= at and self.core.owns(arm):
            master.hold(now)
            self.hand_over = None
            self._handover_stage = "released"
            self._from_ticker({"type": "arm_release", "arm": arm.name}, {"type": "arm_request", "arm": arm.name})

    def follow_robot_state(self, telemetry: Telemetry, now: float) -> None:
        """Scripted masters stop while their arm holds or is another's, and go on once it follows."""
        master = self.core.master
        arms = [a for a in telemetry.arms if a.arm in self.core.config.arms]
        if isinstance(master, ConsultantInput):
            self._consult(master, arms, now)
            return
        if not isinstance(master, ScriptedTaskInput):
            return
        core = self.core
        mine = [core.owns(ArmId(a.arm)) for a in arms]
        if self._handover_stage == "released" and not all(mine):
            self._handover_stage = "away"
        elif self._handover_stage == "away" and all(mine):
            self._handover_stage = None
        holding = [a for a, own in zip(arms, mine, strict=True) if a.supervisor_state in _HELD or not own]
        if holding and not master.held:
            arm = ArmId(holding[0].arm)
            seq = core.last_applied_seq(arm)
            sent = core.t_sent_of(arm, seq) if seq else None
            master.hold(sent if sent is not None else now)
        elif master.held and self._handover_stage is None and all(mine) and all(
                a.supervisor_state == SupervisorState.FOLLOWING for a in arms):
            master.release(now)

    def _consult(self, master: ConsultantInput, arms: list[Any], now: float) -> None:
        for a in arms:
            arm = ArmId(a.arm)
            master.set_tool_jaw(arm, a.jaw)
            if not self.core.owns(arm):
                master.reset(arm)
                self._letting_go.discard(arm)
                continue
            if arm not in self._letting_go and self.core.teleop(arm).mode is TeleopMode.FOLLOWING:
                master.started(arm, now)
                if master.finished(arm, now):
                    self._letting_go.add(arm)
                    self._from_ticker({"type": "arm_release", "arm": arm.name})

    # -- report -----------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        own = self.ownership or {}
        return {"me": self.me, "slot": self.core.slot,
                "ownership": {k: v for k, v in own.items() if k not in ("type", "you")},
                "room": self.status, "peers_seen": self.peers_seen, "handover_actions": self.actions, "handover_refused": self.refused}
