"""`telesurg console --config console.toml [--script F]`: the surgeon site process.

The asyncio loop owns the link and the status display; a deadline thread ticks the sans-I/O
`ConsoleCore` at the command rate (1 kHz) and hands each period's commands to the loop in one
`call_soon_threadsafe`, so CONTROL datagrams leave at once without waiting behind the display.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from telesurg.apps.common import (
    DelayHistogram,
    PathRecorder,
    percentiles,
    security_rejections,
    wait_stop,
)
from telesurg.apps.console_room import ConsoleRoom
from telesurg.console.alarms import AlarmChange, AlarmEvaluator, RobotAlarmInput
from telesurg.console.core import ConsoleCore
from telesurg.console.haptics.bridge import HapticsBridge
from telesurg.console.haptics.feedback import ForceFeedbackCore
from telesurg.console.inputs import MasterInput, ScriptedTaskInput
from telesurg.console.overlay_feed import ToolMarkers
from telesurg.console.status import LiveStatus, render_text, snapshot_from
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
    FLAG_ENGAGED,
    FLAG_REENGAGE,
    ArmId,
    DecodeError,
    ForceFeedback,
    RoomStatus,
    ServoBundle,
    ServoCommand,
    Telemetry,
    decode,
)
from telesurg.realtime import (
    CONSOLE_LINK_PRIORITY,
    CONSOLE_TICKER_PRIORITY,
    request_realtime,
    settle_garbage_collector,
)
from telesurg.robot.safety_types import SupervisorState
from telesurg.robot.servo import DeadlineLoop
from telesurg.site_config import ConsoleSiteConfig
from telesurg.tap import Tap, Topic, site_record

log = logging.getLogger("telesurg.console")
SETTLE_S = 2.0  # after a scripted task ends, keep holding the last pose this long before stopping
DISENGAGE_S = 0.5  # at the end, send disengaged commands this long so the robot sees the surgeon let go
# While the ticker runs: the longest the link loop (decrypting video) keeps the GIL from the ticker,
# which gives it up in every sendto and must take it back. CPython's default is 5 ms.
TICKER_SWITCH_INTERVAL_S = 0.0001


class ConsoleSite:
    def __init__(self, config: ConsoleSiteConfig, master: MasterInput, *, video: bool | None = None,
                 record_dir: Path | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        # The site's clock: command stamps, the link's probes, telemetry ages. It may step (a wall clock
        # set); the robot's freshness check sees it only through the offset the link measures.
        self.clock = clock
        self.tap = Tap(config.site.name, clock=clock)  # every message and event of this process passes here once
        self.recorder: Any = None
        if record_dir is not None:  # subscribed before anything runs: the recording starts with the site
            from telesurg.record.recorder import Recorder

            self.recorder = Recorder(self.tap, record_dir, role="console")
        self.core = ConsoleCore(config.console, master)
        if "reconnect" not in config.link.model_fields_set:  # a console finds a restarted robot by itself
            config.link.reconnect = True
        self.endpoint = LinkEndpoint.from_config(config.link, is_client=True, on_message=self._on_message,
                                                 on_event=self._on_event, clock=clock)
        self.sessions: list[dict[str, Any]] = []  # each session with the robot: when it began and ended, why
        self.room = ConsoleRoom(self.core, self.endpoint)
        self.request_arms: list[ArmId] = []  # asked for as soon as the robot accepts this console
        self.alarms = AlarmEvaluator(config.console.alarms)
        self.alarm_log: list[AlarmChange] = []
        self.path_events: list[dict[str, Any]] = []
        self.paths = PathRecorder()
        self.one_way_ms: list[float] = []
        self.send_overhead_ms = DelayHistogram()
        self.want_video = config.video.enabled if video is None else video
        self.video: Any = None
        self._telemetry: collections.deque[Telemetry] = collections.deque(maxlen=4)
        self._overlay_commands: list[ServoCommand] = []  # the newest sent (ticker) and received (loop) for
        self._overlay_telemetry: Telemetry | None = None  # the overlay, read at the display rate on the loop
        haptics = config.console.haptics
        self.haptics = (HapticsBridge(ForceFeedbackCore(haptics, config.console.scale, config.console.registration_wxyz,
                                                        config.console.arms), master) if haptics.enabled else None)
        self._ticker = DeadlineLoop(1.0 / config.console.rate_hz, self._tick, spin_s=0.0, name="console-tick",
                                    realtime_priority=CONSOLE_TICKER_PRIORITY, clock=clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.started_at: float | None = None
        self.peer: str | None = None
        self.link_realtime = False
        self.malformed = 0
        self.send_failed = 0
        self.finishing = False
        self.stop_when_done = False  # a scripted task ends the session once performed (holds extend it)
        self.following_at: float | None = None
        self.following_file: Path | None = None  # touched when every arm first follows (demo scenarios)

    # -- link (asyncio thread) ---------------------------------------------------------------------
    def _on_message(self, event: MessageReceived) -> None:
        if event.msg_class is MessageClass.VIDEO:
            if self.video is not None:
                self.video.on_datagram(event.payload)
            if self.tap.active:
                self.tap.publish(Topic.VIDEO, event.at, (event.payload,))
            return
        try:
            message = decode(event.payload)
        except DecodeError:
            self.malformed += 1
            return
        if isinstance(message, Telemetry):
            self._telemetry.append(message)
            self._overlay_telemetry = message
            self.tap.publish(Topic.TELEMETRY, event.at, message)
        elif isinstance(message, RoomStatus):
            self.room.on_status(message.body)
            self.tap.publish(Topic.ROOM, event.at, message.body)
        elif isinstance(message, ForceFeedback) and self.haptics is not None:
            self.haptics.on_message(message)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, HandshakeComplete | SessionClosed | PeerRefused):
            self.tap.publish(Topic.SESSION, self.clock(), event)
        elif isinstance(event, PathStateChanged):
            self.tap.publish(Topic.PATH_EVENT, event.at, event)
        if isinstance(event, SessionClosed):
            self._note_session(event.sid, ended_at=event.at, reason=event.reason)
            if event.reason != "local_close":
                log.warning("session with the robot ended (%s); reconnecting", event.reason)
        if isinstance(event, HandshakeComplete):
            self.peer = event.peer_name
            self._note_session(event.sid, began_at=event.at)
            log.info("robot %s authenticated", event.peer_name)
            for arm in self.request_arms:
                self.room.request(arm)
        elif isinstance(event, SessionEventReceived):
            self.room.on_event(event.payload)
        elif isinstance(event, PathStateChanged):
            at = event.at - (self.started_at or event.at)
            self.path_events.append({"at_s": round(at, 3), "path": event.path, "old": str(event.old.value),
                                     "new": str(event.new.value)})

    def _note_session(self, sid: int, **fields: Any) -> None:
        for record in self.sessions:
            if record["sid"] == sid:
                record.update(fields)
                return
        if "began_at" in fields:  # a handshake that never completed is not a session
            self.sessions.append({"sid": sid, **fields})

    # -- command thread ----------------------------------------------------------------------------
    def _send(self, commands: list[ServoCommand]) -> None:
        if not self.endpoint.established:
            self.send_failed += len(commands)
            return
        if self.endpoint.send_from_thread(MessageClass.CONTROL, ServoBundle(tuple(commands)).encode()) is None:
            self.send_failed += len(commands)
            return
        # the console's share of the command delay: stamped on the ticker -> handed to the sockets
        self.send_overhead_ms.add(1000.0 * (self.clock() - commands[0].t_sent))
        if self.tap.active:  # after the send: the command never waits for its record
            self.tap.publish(Topic.COMMAND_SENT, commands[0].t_sent, tuple(commands))

    def _tick(self, now: float) -> None:
        while self._telemetry:
            telemetry = self._telemetry.popleft()
            self.core.receive_telemetry(telemetry, now)
            self.room.follow_robot_state(telemetry, now)
            self._note_following(telemetry)
        if not self.endpoint.established:
            return
        self.room.before_tick(now)
        commands = self.core.tick(now)
        if self.haptics is not None and self.core.last_master_state is not None:
            self.haptics.tick(now, self.core.last_master_state)
        if self.finishing:  # the surgeon lets go: the robot goes FOLLOWING -> READY, not to a watchdog hold
            commands = [replace(c, flags=c.flags & ~(FLAG_ENGAGED | FLAG_REENGAGE)) for c in commands]
        if commands:
            self._send(commands)  # sealed and sent on this thread: no hop through the event loop
            self._overlay_commands = commands

    def _note_following(self, telemetry: Telemetry) -> None:
        if self.following_at is None and telemetry.arms and all(
                a.supervisor_state == SupervisorState.FOLLOWING for a in telemetry.arms):
            self.following_at = self.clock()
            if self.following_file is not None:
                self.following_file.write_text(f"{self.following_at}\n")

    # -- lifecycle ---------------------------------------------------------------------------------
    async def run(self, duration: float | None, stop: asyncio.Event, *, live: bool,
                  connect_timeout: float = 15.0) -> dict[str, Any]:
        self._loop = asyncio.get_running_loop()
        if self.recorder is not None:
            self.recorder.start()
        self.link_realtime = request_realtime(CONSOLE_LINK_PRIORITY)  # this thread runs the link's loop
        await self.endpoint.start()
        try:
            await asyncio.wait_for(self.endpoint.wait_established(), connect_timeout)
        except TimeoutError:
            log.error("no authenticated robot within %.0f s (refused, or not running?)", connect_timeout)
            await self.endpoint.close()
            return self.report(established=False)
        if self.want_video:  # before the 1 kHz ticker: importing/initialising codecs holds the GIL for ~0.25 s
            self._start_video()
        previous_switch = sys.getswitchinterval()
        sys.setswitchinterval(TICKER_SWITCH_INTERVAL_S)
        self.started_at = self.clock()
        self.tap.publish(Topic.SITE, self.started_at, site_record("start", "console", self.config))
        self.room.bind(self._loop, self.started_at)
        settle_garbage_collector()  # no full collection of the start-up heap stalls the ticker later
        self._ticker.start()
        status = LiveStatus(refresh_per_second=2.0) if live else None  # ~13 ms of rendering each
        try:
            if status is not None:
                status.__enter__()
            deadline = None if duration is None else time.monotonic() + duration
            done_at: float | None = None
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                await wait_stop(stop, 0.25)
                self._observe(status)
                master = self.core.master
                script = getattr(master, "inner", master)  # a SimulatedHapticMaster wraps the script
                if self.stop_when_done and isinstance(script, ScriptedTaskInput) and script.done(self.clock()):
                    done_at = done_at or time.monotonic()
                    if time.monotonic() - done_at >= SETTLE_S:
                        break
            self.finishing = True
            await asyncio.sleep(DISENGAGE_S)
        finally:
            if status is not None:
                status.__exit__(None, None, None)
            self._ticker.stop()
            sys.setswitchinterval(previous_switch)
            if self.video is not None:
                self.video.close()
            await self.endpoint.close()
            self.tap.publish(Topic.SITE, self.clock(), {"event": "stop", "role": "console"})
        if not live:
            print(render_text(snapshot_from(self.core, self.clock(), self.endpoint.core.path_stats(),
                                            self.alarms.active(), self.endpoint.core.clock_offset(),
                                            self.room.status, self.room.me)))
        return self.report(established=True)

    def _start_video(self) -> None:
        try:
            from telesurg.apps.console_video import ConsoleVideo
        except ImportError as exc:
            log.warning("video disabled: %s", exc)
            return
        headless = os.environ.get("SDL_VIDEODRIVER") in ("dummy", "offscreen") or (
            sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")))
        # headless: nobody to show it to, so decode and measure only (composing pictures costs a core share)
        self.video = ConsoleVideo(self.config.video, self.endpoint, display=not headless,
                                  tool_markers=self._tool_markers)

    def _tool_markers(self) -> ToolMarkers:
        """The predictive overlay's input (asyncio loop, display rate): commanded now, last measured."""
        return ToolMarkers.from_messages(self._overlay_commands, self._overlay_telemetry)

    def _observe(self, status: LiveStatus | None) -> None:
        now = self.clock()
        core, link = self.core, self.endpoint.core
        offset = link.clock_offset()
        core.set_clock_offset(offset)
        stats = link.path_stats()
        self.paths.sample(stats)
        peer = self.peer or "robot"
        self.tap.peer_offsets[peer] = offset
        self.tap.publish(Topic.PATHS, now, {peer: stats})
        self.tap.publish(Topic.CLOCK, now, {peer: offset})
        one_way = core.one_way_delay_ms()
        if one_way is not None:
            self.one_way_ms.append(one_way)
        age = None if core.last_telemetry_at is None else now - core.last_telemetry_at
        arms = core.arm_status()
        robot = RobotAlarmInput(age, core.holds, {a.arm.name: a.supervisor_state for a in arms},
                                {a.arm.name: a.operating_state for a in arms})
        changes = self.alarms.update(now, stats, one_way, robot)
        for change in changes:
            self.alarm_log.append({"at_s": round(now - (self.started_at or now), 3), "key": change.key,
                                   "severity": change.severity.name, "message": change.message})
            self.tap.publish(Topic.ALARM, now, {"key": change.key, "severity": change.severity.name,
                                                "previous": change.previous.name, "message": change.message})
        if status is not None:
            status.update(snapshot_from(core, now, stats, self.alarms.active(), offset, self.room.status,
                                        self.room.me))

    def report(self, *, established: bool) -> dict[str, Any]:
        counters = self.core.counters
        report: dict[str, Any] = {
            "site": "console",
            "established": established,
            "duration_s": round(self.clock() - (self.started_at or self.clock()), 3),
            "commands": {"sent": sum(counters.sent.values()) - self.send_failed,
                         "sent_per_arm": {arm.name: n for arm, n in counters.sent.items()},
                         "not_sent": self.send_failed, "periods_skipped": counters.periods_skipped},
            "one_way_ms": percentiles(self.one_way_ms),
            "send_overhead_ms": self.send_overhead_ms.report(),
            "holds_seen": self.core.holds,
            "arms": [{"arm": a.arm.name, "mode": str(a.mode), "robot_state": a.supervisor_state}
                     for a in self.core.arm_status()],
            "paths": self.paths.report(),
            "path_events": self.path_events,
            "alarms": self.alarm_log,
            "security": {"rejected": security_rejections(self.endpoint.core.counters)},
            "link": {"counters": dict(self.endpoint.core.counters), "peer": self.peer,
                     "clock_offset_s": self.endpoint.core.clock_offset()},
            "ticker": {**self._ticker.stats.summary(), "realtime": self._ticker.realtime},
            "robot_sessions": [{k: round(v - (self.started_at or 0.0), 3) if k.endswith("_at") else v
                                for k, v in r.items() if k != "sid"} for r in self.sessions],
            **self.room.report(),
            "link_realtime": self.link_realtime,
            **({"haptics": self.haptics.report()} if self.haptics is not None else {}),
        }
        if self.video is not None:
            report["video"] = video = self.video.report()
            t0 = self.started_at or 0.0  # freeze times on the same clock as path_events and alarms
            video["freeze_intervals"] = [{"eye": f["eye"], "from_s": round(f["from"] - t0, 3),
                                          "to_s": round(f["to"] - t0, 3)} for f in video.get("freeze_intervals", [])]
        return report
