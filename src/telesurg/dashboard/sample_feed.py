"""A scripted robot site that publishes real records into a `Tap`: for the dashboard's tests, its
screenshot (bench/dashboard_screenshot.py) and for trying the page without a robot.

Every record is the real type a robot site publishes (link.paths.PathStats, messages.Telemetry,
tap.CommandJudged of real ServoCommands, safety dicts, H.264 VIDEO payloads from the real
VideoSender on a test pattern); only the numbers are scripted: two intercontinental paths around
the Shanghai-Casablanca figures (DESIGN.md §3), path B degrading for a while, and one watchdog hold.
"""

from __future__ import annotations

import math
import random
import threading
from typing import Any

from telesurg.link.events import HandshakeComplete, PathStateChanged
from telesurg.link.paths import PathState, PathStats
from telesurg.messages import ArmTelemetry, ServoCommand, Telemetry
from telesurg.robot.driver import OperatingState
from telesurg.robot.safety_types import SupervisorState
from telesurg.tap import CommandJudged, Tap, Topic

CONSOLE = "console-shanghai"
ARMS = ("PSM1", "PSM2")


class SampleRobotSite:
    """`step(now)` publishes what is due up to `now`; `start()`/`close()` run it on a thread in real time."""

    def __init__(self, tap: Tap, *, video: bool = True, seed: int = 0, command_hz: float = 2000.0,
                 video_fps: float = 15.0, video_replay_s: float | None = None) -> None:
        self.tap = tap
        self.rng = random.Random(seed)
        self.command_hz = command_hz
        self.t0 = tap.clock()
        self.offset = -0.0427  # console clock - robot clock
        self.seq = 0
        self.probes = 0
        self.holds = 0
        self.rtt_override: dict[str, float] = {}  # tests set a path's RTT (ms) to watch the page follow
        self.state_override: dict[str, PathState] = {}
        self._due = {"paths": self.t0, "telemetry": self.t0, "commands": self.t0, "room": self.t0, "video": self.t0}
        self._last_state: dict[str, PathState] = {}
        self._arm_state = dict.fromkeys(ARMS, SupervisorState.FOLLOWING)
        self._held_at: float | None = None
        self._video_period = 1.0 / video_fps
        self.video = self._make_video(video_fps) if video else None
        self._replay: list[list[tuple[bytes, ...]]] = []  # per frame: one batch per eye
        self._replay_index = 0
        if self.video is not None and video_replay_s is not None:
            self._record_replay(round(video_replay_s * video_fps))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sample-site", daemon=True)
        tap.publish(Topic.SITE, self.t0, {"event": "start", "role": "robot", "software": "telesurg sample feed"})
        tap.publish(Topic.SESSION, self.t0, HandshakeComplete(CONSOLE, "ab" * 32, self.t0, 1))

    def _make_video(self, fps: float) -> Any:
        from telesurg.video.codec import EncoderConfig
        from telesurg.video.pipeline import VideoSender
        from telesurg.video.sources import TestPatternSource

        outbox: list[bytes] = []

        def flush() -> None:
            self.tap.publish(Topic.VIDEO, self.tap.clock(), tuple(outbox))
            outbox.clear()

        config = EncoderConfig(width=640, height=360, fps=fps, bitrate_kbps=2500, gop_frames=int(fps))
        sources = [TestPatternSource(640, 360, fps, seed=s, eye_offset_px=8 * s) for s in (0, 1)]
        return VideoSender(sources, config, outbox.append, flush_fn=flush, parallel=False)

    # -- scripted figures ------------------------------------------------------------------------
    def rtt_ms(self, path: str, t: float) -> float:
        if path in self.rtt_override:
            return self.rtt_override[path]
        base = 204.0 if path == "A" else 231.0
        wave = 3.0 * math.sin(t / 9.0) + (38.0 * math.exp(-((t % 90.0) - 29.0) ** 2 / 12.0) if path == "B" else 0.0)
        return base + wave + self.rng.gauss(0.0, 0.9 if path == "A" else 2.2)

    def path_state(self, path: str, t: float) -> PathState:
        if path in self.state_override:
            return self.state_override[path]
        return PathState.DEGRADED if path == "B" and 25.0 <= t % 90.0 < 33.0 else PathState.UP

    def step(self, now: float) -> None:
        due = self._due
        while due["commands"] <= now:
            self._commands(due["commands"])
            due["commands"] += 0.01
        while due["telemetry"] <= now:
            self._telemetry(due["telemetry"])
            due["telemetry"] += 0.01
        while due["paths"] <= now:
            self._paths(due["paths"])
            due["paths"] += 0.25
        while due["room"] <= now:
            self._room(due["room"])
            due["room"] += 0.5
        if self.video is not None and due["video"] <= now:
            if self._replay:
                self._publish_replayed(now)
            else:
                self.video.step(now)
            due["video"] = max(due["video"] + self._video_period, now - self._video_period)

    def _record_replay(self, frames: int) -> None:
        """Encode `frames` stereo frames now and replay them later: a site's encoder runs in its own
        process, so a bench measuring this process's threads must not pay for encoding in it."""
        published: list[tuple[bytes, ...]] = []
        real_publish = self.tap.publish
        self.tap.publish = lambda topic, t, payload: published.append(payload)  # type: ignore[method-assign]
        try:
            for _ in range(frames):
                self.video.step(0.0)
                self._replay.append(published[:])
                published.clear()
        finally:
            self.tap.publish = real_publish  # type: ignore[method-assign]

    def _publish_replayed(self, now: float) -> None:
        """The next recorded frame, its frame numbers moved past the previous loop's (header bytes 4-8)."""
        loop, index = divmod(self._replay_index, len(self._replay))
        shift = loop * len(self._replay)
        for batch in self._replay[index]:
            self.tap.publish(Topic.VIDEO, now, tuple(
                p[:4] + (int.from_bytes(p[4:8], "big") + shift).to_bytes(4, "big") + p[8:] for p in batch))
        self._replay_index += 1

    def _commands(self, t: float) -> None:
        n = max(1, round(self.command_hz * 0.01))
        for i in range(n):
            self.seq += 1
            sent_robot = t - 0.1025 - abs(self.rng.gauss(0.0, 0.0012)) + i / self.command_hz
            command = ServoCommand(i % 2, self.seq, sent_robot + self.offset, (0.0, 0.0, -0.1), (1.0, 0.0, 0.0, 0.0), 0.2)
            stale = self.rng.random() < 0.0005
            outcome, reason = ("rejected", "stale") if stale else ("applied", "")
            self.tap.publish(Topic.COMMAND_DECISION, t + i / self.command_hz,
                             CommandJudged(command, f"{CONSOLE}#1", self.seq, self.offset, outcome, reason))

    def _telemetry(self, t: float) -> None:
        s = t - self.t0
        arms = tuple(ArmTelemetry(a, OperatingState.ENABLED, self._arm_state[name], self.seq,
                                  (0.02 * math.sin(s / 3 + a) + (-0.03 if a == 0 else 0.03), 0.015 * math.cos(s / 4),
                                   -0.11 + 0.005 * math.sin(s)), (1.0, 0.0, 0.0, 0.0), 0.3 + 0.2 * math.sin(s), 1)
                     for a, name in enumerate(ARMS))
        self.tap.publish(Topic.TELEMETRY, t, Telemetry(t, self.holds, arms))

    def _paths(self, t: float) -> None:
        s = t - self.t0
        stats = {}
        self.probes += 5
        for path in ("A", "B"):
            state = self.path_state(path, s)
            rtt = self.rtt_ms(path, s)
            loss = 0.0 if path == "A" else (0.6 if state is PathState.DEGRADED else 0.1)
            stats[path] = PathStats(state, rtt, rtt - 1.0, rtt + 6.0, 0.4 if path == "A" else 1.3, loss, t - 0.03,
                                    2 * (path == "B"), self.probes, self.probes - (path == "B"), path == "B")
            old = self._last_state.get(path, PathState.UP)
            if old is not state:
                self.tap.publish(Topic.PATH_EVENT, t, PathStateChanged(path, old, state, t, 1))
            self._last_state[path] = state
        self.tap.publish(Topic.PATHS, t, {CONSOLE: stats})
        self.tap.publish(Topic.CLOCK, t, {CONSOLE: self.offset})
        self._script_hold(t, s)

    def _script_hold(self, t: float, s: float) -> None:
        """One watchdog hold on PSM2 at 14 s, resumed by the operator 3 s later."""
        if self._held_at is None and s >= 14.0:
            self._held_at = t
            self.holds += 1
            self._arm_state["PSM2"] = SupervisorState.HOLD
            self.tap.publish(Topic.TRANSITION, t, {"arm": "PSM2", "from": "FOLLOWING", "to": "HOLD",
                                                   "cause": "watchdog", "at_s": t})
            self.tap.publish(Topic.HOLD, t, {"arm": "PSM2", "cause": "watchdog", "reaction_ms": 50.4, "at_s": t})
        elif self._held_at is not None and self._arm_state["PSM2"] is SupervisorState.HOLD and t >= self._held_at + 3.0:
            self._arm_state["PSM2"] = SupervisorState.FOLLOWING
            self.tap.publish(Topic.TRANSITION, t, {"arm": "PSM2", "from": "HOLD", "to": "FOLLOWING",
                                                   "cause": "operator re-engage", "at_s": t})

    def _room(self, t: float) -> None:
        self.tap.publish(Topic.ROOM, t, {"t_robot": t, "arms": {a: {"owner": CONSOLE, "owner_slot": 1, "pending": [],
                                                                   "local": False} for a in ARMS},
                                         "peers": {CONSOLE: {"role": "lead", "slot": 1, "connected": True,
                                                             "rtt_ms": {p: round(self.rtt_ms(p, t - self.t0), 1)
                                                                        for p in ("A", "B")}},
                                                   "console-paris": {"role": "consultant", "slot": 2,
                                                                     "connected": False}}})

    # -- real-time driver ------------------------------------------------------------------------
    def start(self) -> SampleRobotSite:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.step(self.tap.clock())

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        if self.video is not None:
            self.video.close()
