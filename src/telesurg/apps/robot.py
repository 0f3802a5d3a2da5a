"""`telesurg robot --config robot.toml`: the patient-side site process.

Threads: the asyncio loop owns the link (UDP, AEAD, probes); the servo loop (robot/servo.py) runs the
safety supervisor and the MuJoCo cart at 1 kHz on its own thread with a short GIL switch interval.
Commands cross from the link to the servo thread through the loop's thread-safe inbox; telemetry
crosses back with `call_soon_threadsafe`. The supervisor, not the link, decides what is applied.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from telesurg.apps.common import (
    DelayHistogram,
    PathRecorder,
    wait_stop,
)
from telesurg.apps.robot_audit import RobotAuditFeed
from telesurg.apps.robot_report import site_report
from telesurg.apps.robot_room import RobotRoom, handover_message
from telesurg.apps.robot_safety_feed import SafetyEventFeed
from telesurg.interop.igtl import IgtlServer
from telesurg.interop.shared_picture import SharedPicture
from telesurg.link.driver import LinkEndpoint
from telesurg.link.events import (
    Event,
    HandshakeComplete,
    MessageClass,
    MessageReceived,
    PathStateChanged,
    PeerRefused,
    SessionClosed,
    SessionEventReceived,
)
from telesurg.messages import (
    DecodeError,
    ForceFeedback,
    MessageType,
    ServoBundle,
    ServoCommand,
    Telemetry,
    decode,
)
from telesurg.realtime import ROBOT_LINK_PRIORITY, request_realtime, settle_garbage_collector
from telesurg.robot.driver import open_driver
from telesurg.robot.ownership import OwnershipDesk
from telesurg.robot.roles import INSTRUMENT_ARMS, Roster
from telesurg.robot.servo import ServoConfig, ServoLoop
from telesurg.robot.supervisor import Decision, SafetySupervisor
from telesurg.site_config import RobotSiteConfig
from telesurg.tap import CommandJudged, CommandReceived, Tap, Topic, site_record

log = logging.getLogger("telesurg.robot")
RECEIVED_KEPT = 10_000
ROOM_TICK_S = 0.05  # ownership desk tick and room status to the consoles (20 Hz)
_QUALIFY = bytes([MessageType.QUALIFY])


class RobotSite:
    """One patient-side cart on the network: link endpoint + supervisor + servo loop + simulation.

    The link hosts one session per console (`LinkHub`); who controls which arm is the supervisor's
    state, changed only by the ownership desk (robot/ownership.py, bridged by apps/robot_room.py)
    and the local console."""

    def __init__(self, config: RobotSiteConfig, *, seed: int = 0, video: bool | None = None,
                 audit_dir: Path | None = None, driver: str = "mujoco", igtl: IgtlServer | None = None,
                 record_dir: Path | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.seed = seed
        # The site's clock: the supervisor's `now`, the link's probes, arrival times. It may step (a wall
        # clock set); commands are judged against it through the clock offset the link measures.
        self.clock = clock
        self.tap = Tap(config.site.name, clock=clock)  # every message and event of this process passes here once
        self.sim: Any = open_driver(driver, seed)  # SimDriver or KinematicDriver (robot/driver.py)
        self.igtl = igtl  # read-only OpenIGTLink server (interop/igtl.py), bound by the caller
        self.recorder: Any = None
        if record_dir is not None:  # subscribed before anything runs: the recording starts with the site
            from telesurg.record.journal import JournaledSupervisor
            from telesurg.record.recorder import Recorder

            self.recorder = Recorder(self.tap, record_dir, role="robot")
            self.supervisor: SafetySupervisor = JournaledSupervisor(config.safety, INSTRUMENT_ARMS, self.tap)
        else:
            self.supervisor = SafetySupervisor(config.safety, INSTRUMENT_ARMS)
        self.servo = ServoLoop(self.supervisor, self.sim,
                               ServoConfig(rate_hz=config.robot.servo_hz, telemetry_hz=config.robot.telemetry_hz,
                                           force_hz=config.robot.force_hz),
                               on_telemetry=self._on_telemetry, on_decision=self._on_decision,
                               on_force=self._on_force, clock=clock)
        self.endpoint = LinkEndpoint.from_config(config.link, is_client=False, multi_session=True,
                                                 on_message=self._on_message, on_event=self._on_event,
                                                 stamp_arrivals=True, clock=clock)
        roster = (Roster(config.robot.consoles, INSTRUMENT_ARMS) if config.robot.consoles
                  else Roster.single_lead(config.robot.controller, INSTRUMENT_ARMS))
        self.room = RobotRoom(OwnershipDesk(self.supervisor, roster), self.servo, self.endpoint)
        self.safety_feed = SafetyEventFeed(self.tap, self.supervisor, self.servo.local_console)
        self.want_video = config.video.enabled if video is None else video
        if driver != "mujoco" and self.want_video:
            log.warning("video off: the %s driver has no scene to render", driver)
            self.want_video = False
        self.video: Any = None
        self.picture: SharedPicture | None = None  # endoscope thumbnail for OpenIGTLink, from the video process
        if igtl is not None and self.want_video and igtl.config.image_hz > 0:
            self.picture = SharedPicture.create()
            igtl.picture_source = self.picture.read
        self.paths = PathRecorder()
        self.delivered = 0
        self.malformed = Counter[str]()
        self.latency_ms = DelayHistogram()
        self.apply_overhead_ms = DelayHistogram()
        self._received_at: dict[tuple[str, int, int], float] = {}
        self.started_at: float | None = None
        self.rings_moved = 0
        self.rings_time_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.link_realtime = False
        self.audit: RobotAuditFeed | None = None
        self.ready_file: Path | None = None
        if audit_dir is not None:
            self.audit = RobotAuditFeed(audit_dir, self.tap, config, self.endpoint.core.identity)

    @property
    def peer(self) -> str | None:
        """The most recently joined console, connected or not (single-console callers and reports)."""
        views = [*self.room.ended, *self.room.by_sid.values()]
        return max(views, key=lambda v: v.started_at).identity if views else None

    # -- link thread -----------------------------------------------------------------------------
    def _on_message(self, event: MessageReceived) -> None:
        view = self.room.by_sid.get(event.sid)
        if view is None:
            return
        if event.payload[:1] == _QUALIFY:
            self._on_qualify(event)
            return
        if event.msg_class is not MessageClass.CONTROL:
            return
        try:
            message = decode(event.payload)
        except DecodeError as exc:
            self.malformed[str(exc)] += 1
            return
        if isinstance(message, ServoCommand):
            commands: tuple[ServoCommand, ...] = (message,)
        elif isinstance(message, ServoBundle):
            commands = message.commands
        else:
            self.malformed["unexpected_type"] += 1
            return
        offset = view.link.freshness_offset()  # the supervisor judges age on the safe side of the estimate
        received_at = self.endpoint.arrived_at  # when the kernel had it: socket queueing and decryption count
        if len(self._received_at) > RECEIVED_KEPT:  # commands never judged (session ended): forget them
            self._received_at.clear()
        key = view.key
        view.delivered += len(commands)
        self.room.note_commands(view, commands)
        tap = self.tap if self.tap.active else None
        for command in commands:
            self.delivered += 1
            self._received_at[(key, command.arm, command.cmd_seq)] = received_at
            self.servo.submit(command, key, event.seq, offset)
            if tap is not None:  # after the hand-over: the servo thread need not wait for this
                tap.publish(Topic.COMMAND_RECEIVED, received_at,
                            CommandReceived(command, key, event.seq, event.path, received_at, offset))

    def _on_event(self, event: Event) -> None:
        if isinstance(event, HandshakeComplete | SessionClosed | PeerRefused):
            self.tap.publish(Topic.SESSION, self.clock(), event)
        elif isinstance(event, PathStateChanged):
            self.tap.publish(Topic.PATH_EVENT, event.at, event)
        if isinstance(event, HandshakeComplete):
            log.info("console %s authenticated (%s…)", event.peer_name, event.peer_fingerprint[:16])
            self.room.on_handshake(event, self.clock())
        elif isinstance(event, SessionClosed):
            self.room.on_closed(event, self.clock())
        elif isinstance(event, SessionEventReceived):
            self._on_session_event(event)

    def _on_session_event(self, event: SessionEventReceived) -> None:
        payload = event.payload
        if self.video is not None and self.video.handle_event(payload):
            return
        handover = handover_message(payload)
        if handover is not None:
            self.room.on_handover_message(event.sid, handover)
            return
        try:
            message = json.loads(payload)
        except ValueError:
            self.malformed["event"] += 1
            return
        if not isinstance(message, dict):
            self.malformed["event"] += 1
            return
        if message.get("type") == "qualify":
            asyncio.get_running_loop().create_task(self._qualify_check(message, event.sid))

    def _on_qualify(self, event: MessageReceived) -> None:
        """Echo qualification probes (timestamped) on the class they came on; nothing moves."""
        from telesurg.apps.robot_checks import echo_probe

        reply = echo_probe(event.payload, self.clock())
        if reply is not None and event.sid in self.room.by_sid:
            self.endpoint.send_to(event.sid, event.msg_class, reply)

    async def _qualify_check(self, message: dict[str, Any], sid: int) -> None:
        """A robot check asked by `telesurg qualify` (homing, sweep, watchdog, e-stop, video)."""
        from telesurg.apps.robot_checks import run_robot_check

        result = await run_robot_check(self, message)
        if sid in self.room.by_sid:
            self.endpoint.send_event_to(sid, json.dumps(result).encode())

    # -- servo thread ----------------------------------------------------------------------------
    def _on_decision(self, cmd: ServoCommand, decision: Decision, now: float, offset: float | None,
                     sender: str, link_seq: int) -> None:
        received_at = self._received_at.pop((sender, cmd.arm, cmd.cmd_seq), None)
        if self.tap.active:
            self.tap.publish(Topic.COMMAND_DECISION, now, CommandJudged(cmd, sender, link_seq, offset,
                                                                        decision.outcome.value, decision.reason))
        if not decision.accepted:
            return
        view = self.room.by_key.get(sender)
        # the reported one-way delay uses the best estimate, not the safe-side offset the supervisor used
        estimate = offset if view is None else view.link.clock_offset()
        if estimate is not None:
            latency = 1000.0 * (now - (cmd.t_sent - estimate))
            self.latency_ms.add(latency)
            if view is not None:
                view.applied += 1
                view.latency_ms.add(latency)
            if received_at is not None:  # the robot's share: in its kernel -> judged and applied
                self.apply_overhead_ms.add(1000.0 * (now - received_at))

    def _on_telemetry(self, telemetry: Telemetry) -> None:
        self.tap.publish(Topic.TELEMETRY, telemetry.t_robot, telemetry)
        if self.igtl is not None:
            self.igtl.offer_telemetry(telemetry)  # keeps only the latest: never waits
        if self.video is not None:
            self.video.publish_state()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._send_telemetry, telemetry.encode())

    def _on_force(self, forces: ForceFeedback) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._send_telemetry, forces.encode())

    def _send_telemetry(self, payload: bytes) -> None:
        if self.endpoint.established:
            self.endpoint.send(MessageClass.TELEMETRY, payload)

    # -- lifecycle -------------------------------------------------------------------------------
    async def run(self, duration: float | None, stop: asyncio.Event) -> dict[str, Any]:
        self._loop = asyncio.get_running_loop()
        self.room.bind(self._loop)
        if self.recorder is not None:
            self.recorder.start()
        self.link_realtime = request_realtime(ROBOT_LINK_PRIORITY)  # this thread runs the link's loop
        await self.endpoint.start()
        if self.want_video:  # before the servo thread, so its imports never stall a servo period
            self._start_video()
        self.servo.operator(lambda console, now: console.enable(now))
        if self.igtl is not None:
            self.igtl.start()
        settle_garbage_collector()  # no full collection of the start-up heap stalls the servo loop later
        self.servo.start()
        self.started_at = self.clock()
        self.tap.publish(Topic.SITE, self.started_at, site_record("start", "robot", self.config))
        if self.ready_file is not None:  # listening, servo running: a launcher may start consoles now
            self.ready_file.write_text(f"{self.started_at}\n")
        try:
            deadline = None if duration is None else time.monotonic() + duration
            ticks = 0
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                await wait_stop(stop, ROOM_TICK_S)
                self.room.tick()  # grants waiting on a silent owner; publishes ownership changes
                now = self.clock()
                room = self.room.publish_status(now)
                if room is not None:
                    self.tap.publish(Topic.ROOM, now, room)
                self.safety_feed.poll()
                ticks += 1
                if ticks % 5:
                    continue
                self.paths.sample(self.endpoint.core.path_stats())
                self.room.sample_paths()
                self._publish_link_figures(now)
                if self.audit is not None:
                    self.audit.poll()
                self._observe_task()
                if self.servo.error is not None:
                    log.error("servo loop stopped: %r", self.servo.error)
                    break
        finally:
            self.servo.stop()
            self.safety_feed.poll()
            if self.video is not None:
                self.video.close()
            await self.endpoint.close()
            self.sim.close()
            if self.igtl is not None:
                self.igtl.stop()
            if self.picture is not None:
                self.picture.close()
            self.tap.publish(Topic.SITE, self.clock(), {"event": "stop", "role": "robot"})
        report = self.report()
        if self.recorder is not None:
            report["record"] = await asyncio.to_thread(self.recorder.close)
        return report

    def _publish_link_figures(self, now: float) -> None:
        """Each console's per-path figures and clock offset into the tap (4 Hz)."""
        views = list(self.room.by_sid.values())
        self.tap.publish(Topic.PATHS, now, {v.identity: v.link.path_stats() for v in views})
        offsets = {v.identity: v.link.clock_offset() for v in views}
        self.tap.peer_offsets.update(offsets)
        self.tap.publish(Topic.CLOCK, now, offsets)

    def _start_video(self) -> None:
        try:
            from telesurg.apps.robot_video import RobotVideo
        except ImportError as exc:  # video is optional for the control path
            log.warning("video disabled: %s", exc)
            return
        self.video = RobotVideo(self.sim, self.config.video, self.endpoint, self._loop, seed=self.seed,
                                tap=self.tap, picture=self.picture)
        self.video.start()

    def _observe_task(self) -> None:
        if not hasattr(self.sim, "rings_on_target"):  # the kinematic driver has no rings
            return
        moved = self.sim.rings_on_target()
        if moved != self.rings_moved and self.started_at is not None:
            self.rings_moved = moved
            self.rings_time_s = self.clock() - self.started_at

    def report(self) -> dict[str, Any]:
        return site_report(self)
