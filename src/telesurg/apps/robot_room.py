"""The robot site's operating room: the consoles connected at once, and the bridge to arm ownership.

The link thread sees sessions come and go (one per console, `LinkHub`), handover messages arrive on
their reliable event channels, and per-session figures accumulate here; the ownership desk
(robot/ownership.py) runs on the servo thread, where the supervisor is, through
`ServoLoop.operator`. What the desk decides comes back to the link thread with
`call_soon_threadsafe` and goes to every console: the ownership snapshot on the reliable channel
when it changes, and a `RoomStatus` (owners, pending requests, each console's link health and
last commanded tool positions as ghosts) a few times a second on the telemetry class.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from telesurg.apps.common import DelayHistogram, PathRecorder
from telesurg.link import wire
from telesurg.link.events import HandshakeComplete, MessageClass, SessionClosed
from telesurg.messages import ArmId, RoomStatus
from telesurg.robot.local_console import LocalConsole
from telesurg.robot.ownership import OwnershipDesk, OwnershipNotice, session_key
from telesurg.robot.servo import ServoLoop

log = logging.getLogger("telesurg.robot")
HANDOVER_TYPES = frozenset({"arm_request", "arm_release", "arm_grant"})
_ARM_NAMES = {a.value: a.name for a in ArmId}


@dataclass(slots=True)
class SessionView:
    """One console's session as the robot's link thread sees it."""

    sid: int
    identity: str
    key: str  # the supervisor's sender for this session's commands
    link: Any  # its LinkCore: clock offset, path statistics
    role: str
    started_at: float
    ended_at: float | None = None
    end_reason: str | None = None
    delivered: int = 0
    applied: int = 0
    latency_ms: DelayHistogram = field(default_factory=DelayHistogram)
    paths: PathRecorder = field(default_factory=PathRecorder)
    ghost: dict[int, tuple[float, float, float]] = field(default_factory=dict)  # arm -> last commanded position

    def report(self, t0: float) -> dict[str, Any]:
        return {"sid": f"{self.sid:x}", "role": self.role, "started_at_s": round(self.started_at - t0, 3),
                "ended_at_s": None if self.ended_at is None else round(self.ended_at - t0, 3),
                "end_reason": self.end_reason,
                "commands": {"delivered": self.delivered, "applied": self.applied,
                             "latency_ms": self.latency_ms.report()},
                "paths": self.paths.report()}


class RobotRoom:
    """Sessions by sid and by sender key; the desk's operator actions and their publication."""

    def __init__(self, desk: OwnershipDesk, servo: ServoLoop, endpoint: Any) -> None:
        self.desk = desk
        self.servo = servo
        self.endpoint = endpoint
        self.by_sid: dict[int, SessionView] = {}  # live sessions (link thread writes, servo thread reads)
        self.by_key: dict[str, SessionView] = {}
        self.ended: list[SessionView] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._snapshot: dict[str, Any] = {}  # the last ownership snapshot published (link thread)
        self.status_too_large = 0
        servo.owner_slots = desk.slots  # telemetry's owner byte; the desk changes it on the servo thread

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def view(self, sid: int) -> SessionView | None:
        return self.by_sid.get(sid)

    # -- link thread: sessions and their events ------------------------------------------------------
    def on_handshake(self, event: HandshakeComplete, now: float) -> None:
        link = self.endpoint.core.core_of(event.sid)
        identity = event.peer_name
        view = SessionView(event.sid, identity, session_key(identity, event.sid), link,
                           self.desk.roster.role(identity).value, now)
        self.by_sid[event.sid] = view
        self.by_key[view.key] = view
        log.info("console %s joined as %s (session %x)", identity, view.role, event.sid)
        self._on_servo(lambda desk, now: desk.join(identity, event.sid, now))

    def on_closed(self, event: SessionClosed, now: float) -> None:
        view = self.by_sid.pop(event.sid, None)
        if view is None:
            return
        view.ended_at, view.end_reason = now, event.reason
        self.ended.append(view)
        log.warning("console %s left (%s)", view.identity, event.reason)
        self._on_servo(lambda desk, now: desk.leave(view.key, now))

    def on_handover_message(self, sid: int, message: dict[str, Any]) -> None:
        view = self.by_sid.get(sid)
        if view is not None:
            self._on_servo(lambda desk, now: desk.handle(view.key, message, now))

    def tick(self) -> None:
        """Periodic (link thread): let the desk grant what waited on a silent owner."""
        self._on_servo(lambda desk, now: desk.tick(now))

    def sample_paths(self) -> None:
        for view in self.by_sid.values():
            view.paths.sample(view.link.path_stats())

    def note_commands(self, view: SessionView, commands: tuple[Any, ...]) -> None:
        ghost = view.ghost
        for c in commands:
            ghost[c.arm] = c.position

    def publish_status(self, t_robot: float) -> dict[str, Any] | None:
        """The room, on the telemetry class, to every console (unreliable and frequent by design);
        returns what was sent (None when nobody is connected)."""
        if not self.endpoint.established:
            return None
        body = {"t_robot": t_robot, **self._snapshot, "peers": {}}
        peers = body["peers"]
        for identity, info in self._snapshot.get("peers", {}).items():
            peers[identity] = dict(info)
        for view in self.by_sid.values():
            stats = view.link.path_stats()
            peers.setdefault(view.identity, {"role": view.role}).update(
                rtt_ms={p: None if s.rtt_ms is None else round(float(s.rtt_ms), 2) for p, s in stats.items()},
                path_state={p: str(getattr(s.state, "value", s.state)) for p, s in stats.items()},
                ghost={_ARM_NAMES.get(a, str(a)): [round(v, 5) for v in pos] for a, pos in view.ghost.items()})
        payload = RoomStatus(body).encode()
        if len(payload) <= wire.MAX_PAYLOAD:
            self.endpoint.send(MessageClass.TELEMETRY, payload)
        else:  # many consoles: the room no longer fits one datagram (counted, never a crash)
            self.status_too_large += 1
        return body

    # -- servo thread -> link thread --------------------------------------------------------------
    def _on_servo(self, action: Any) -> None:
        desk = self.desk

        def run(_console: LocalConsole, now: float) -> None:
            action(desk, now)
            self.after_desk()

        self.servo.operator(run)

    def after_desk(self) -> None:
        """On the servo thread, after anything that may change ownership (desk or local console)."""
        desk = self.desk
        if not desk.changed and not desk.outbox:
            return
        snapshot = desk.snapshot() if desk.changed else None
        desk.changed = False
        notices, desk.outbox = desk.outbox, []
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._publish, snapshot, notices)

    def _publish(self, snapshot: dict[str, Any] | None, notices: list[OwnershipNotice]) -> None:
        if snapshot is not None:
            self._snapshot = {k: v for k, v in snapshot.items() if k != "type"}
            for view in list(self.by_sid.values()):
                # the slot the desk gave (on the servo thread): never assign one from this thread
                slot = snapshot["peers"].get(view.identity, {}).get("slot")
                you = {"identity": view.identity, "role": view.role, "slot": slot}
                self.endpoint.send_event_to(view.sid, json.dumps({**snapshot, "you": you}).encode())
        for key, message in notices:
            target = self.by_key.get(key) if key is not None else None
            if target is not None and target.sid in self.by_sid:
                self.endpoint.send_event_to(target.sid, json.dumps(message).encode())

    # -- report -----------------------------------------------------------------------------------
    def report(self, t0: float) -> dict[str, Any]:
        sessions: dict[str, Any] = {}
        for view in [*self.ended, *self.by_sid.values()]:
            entry = view.report(t0)
            if view.identity in sessions:  # a console that reconnected: one entry per session
                sessions.setdefault(f"{view.identity}#{entry['sid']}", entry)
            else:
                sessions[view.identity] = entry
        return {"sessions": sessions, "handovers": self.desk.handover_report(t0),
                "ownership": {k: v for k, v in self.desk.snapshot().items() if k != "type"},
                "handover_refused": dict(self.desk.refused), "room_status_too_large": self.status_too_large}


def handover_message(payload: bytes) -> dict[str, Any] | None:
    """The JSON handover message in an event payload, or None if it is something else."""
    try:
        message = json.loads(payload)
    except ValueError:
        return None
    if isinstance(message, dict) and message.get("type") in HANDOVER_TYPES:
        return message
    return None
