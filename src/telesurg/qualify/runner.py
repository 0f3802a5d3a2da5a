"""The asyncio driver of a qualification session: a link client, the phases, and the samples they feed
into `analysis.Session`.

Phases: network (the link's per-path probes, raised to `probe_hz`), load (echo requests at the control
rate on CONTROL plus robot→console echoes padded to the video bitrate on VIDEO), failover (control-rate
echoes while each path is taken away in turn by a `PathSwitch`: the emulator in demo mode, the engineer
otherwise) and robot checks (session events answered by `apps/robot_checks.run_robot_check`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from telesurg import qualify_wire as protocol
from telesurg.link.driver import LinkEndpoint
from telesurg.link.events import Event, MessageClass, MessageReceived, PathStateChanged, SessionEventReceived
from telesurg.messages import FLAG_ENGAGED, FLAG_REENGAGE, MessageType, ServoCommand, Telemetry
from telesurg.messages import decode as decode_message
from telesurg.qualify.analysis import Session
from telesurg.site_config import ConsoleSiteConfig

Progress = Callable[[str, float], None]  # (phase label, fraction done)
ROBOT_CHECKS = ("homing", "sweep", "watchdog", "estop", "video")
VIDEO_START_TIMEOUT_S = 30.0  # a spawned interpreter importing PyAV; slow on a loaded machine


class PathSwitch(Protocol):
    """Takes a path away and gives it back; returns the time of the cut/restore if it knows it."""

    async def cut(self, path: str) -> float | None: ...

    async def restore(self, path: str) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Plan:
    network_s: float = 20.0
    load_s: float = 20.0
    failover_hold_s: float = 3.0
    control_hz: float = 1000.0
    video_kbps: float = 2500.0
    failover: bool = True
    robot_checks: bool = False
    video_check_s: float = 4.0
    reply_timeout_s: float = 1.0
    watchdog_limit_ms: float = 60.0  # the robot judges its own hold reaction against this


class QualifyClient:
    """A console-side link endpoint that only sends qualification traffic (and, for the watchdog check,
    aligned motionless commands) and records every sample into a `Session`."""

    def __init__(self, config: ConsoleSiteConfig, probe_hz: float) -> None:
        link = config.link.model_copy(update={"probe_hz": probe_hz})
        self.endpoint = LinkEndpoint.from_config(link, is_client=True, on_message=self._on_message,
                                                 on_event=self._on_event)
        self.endpoint.core.record_probe_outcomes()
        self.video_config = config.video
        self.video: Any = None  # a ConsoleVideo while the video check runs
        self.session = Session()
        self.malformed = 0
        self.arm_poses: dict[int, Any] = {}
        self._results: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._streams = itertools.count(1)

    # -- link callbacks ------------------------------------------------------------------------------
    def _on_message(self, event: MessageReceived) -> None:
        kind = event.payload[:1]
        if event.msg_class is MessageClass.VIDEO and kind != bytes([MessageType.QUALIFY]):
            if self.video is not None:
                self.video.on_datagram(event.payload)
            return
        if kind == bytes([MessageType.QUALIFY]):
            try:
                reply = protocol.decode(event.payload)
            except protocol.ProbeDecodeError:
                self.malformed += 1
                return
            if reply.kind == protocol.KIND_REPLY:
                self.session.echo_reply(reply.stream, reply.seq, reply.t_robot, reply.robot_received, event.path,
                                        event.at, len(event.payload))
        elif kind == bytes([MessageType.TELEMETRY]):
            try:
                telemetry = decode_message(event.payload)
            except ValueError:
                self.malformed += 1
                return
            if isinstance(telemetry, Telemetry):
                self.arm_poses = {a.arm: a for a in telemetry.arms}

    def _on_event(self, event: Event) -> None:
        if isinstance(event, PathStateChanged):
            self.session.path_changed(event.path, str(event.new.value), event.at)
        elif isinstance(event, SessionEventReceived):
            try:
                message = json.loads(event.payload)
            except ValueError:
                self.malformed += 1
                return
            if isinstance(message, dict) and message.get("type") == "qualify_result":
                future = self._results.pop(int(message.get("id") or 0), None)
                if future is not None and not future.done():
                    future.set_result(message)

    # -- sampling ------------------------------------------------------------------------------------
    def collect(self) -> None:
        """Move the link's probe outcomes and clock offset into the session."""
        for o in self.endpoint.core.drain_probe_outcomes():
            self.session.add_probe(o.path, o.probe_id, o.sent, o.answered, o.peer_time)
        offset = self.endpoint.core.clock_offset()
        if offset is not None:
            self.session.clock_offset = offset

    async def idle(self, seconds: float, progress: Progress | None = None, label: str = "") -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(0.1, left))
            self.collect()
            if progress is not None:
                progress(label, 1.0 - max(0.0, end - time.monotonic()) / seconds)

    async def settle(self, stream: int, timeout: float) -> None:
        """Wait until every request of `stream` has its reply, or `timeout` (a loaded peer answers late)."""
        end = time.monotonic() + timeout
        st = self.session.streams[stream]
        while len(st.replies) < len(st.sent) and time.monotonic() < end:
            await asyncio.sleep(0.05)
        self.collect()

    async def stream(self, name: str, seconds: float | Callable[[], bool], control_hz: float,
                     video_kbps: float = 0.0, progress: Progress | None = None) -> tuple[int, int | None]:
        """Echo requests at `control_hz` on CONTROL (and padded VIDEO echoes) until `seconds` pass or the
        callable says stop. Sends the messages due at each wake-up, so the mean rate holds even when the
        loop's timers are coarse. Returns the stream ids (control, video or None)."""
        control = next(self._streams)
        self.session.open_stream(control, name)
        video = None
        video_hz = 0.0
        if video_kbps > 0:
            video = next(self._streams)
            self.session.open_stream(video, name + "-video")
            video_hz = video_kbps * 1000.0 / 8.0 / protocol.MAX_PAYLOAD
        start = time.monotonic()
        sent_c = sent_v = 0
        done = seconds if callable(seconds) else (lambda: time.monotonic() - start >= seconds)
        endpoint = self.endpoint
        while not done():
            now = time.monotonic()
            elapsed = now - start
            while sent_c < elapsed * control_hz:
                sent_c += 1
                self.session.echo_sent(control, sent_c, now)
                endpoint.send(MessageClass.CONTROL, protocol.request(control, sent_c, now))
            while video is not None and sent_v < elapsed * video_hz:
                sent_v += 1
                self.session.echo_sent(video, sent_v, now)
                endpoint.send(MessageClass.VIDEO, protocol.request(video, sent_v, now, protocol.MAX_REPLY_PAD))
            if sent_c % 100 == 0:
                self.collect()
                if progress is not None and not callable(seconds):
                    progress(name, min(1.0, elapsed / seconds))
            await asyncio.sleep(0.0005)
        return control, video

    # -- robot checks --------------------------------------------------------------------------------
    async def robot_check(self, check: str, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._results[ident] = future
        self.endpoint.send_event(json.dumps({"type": "qualify", "check": check, "id": ident, **params}).encode())
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return {"check": check, "status": "error", "detail": f"no answer from the robot in {timeout:.0f} s",
                    "figures": {}}

    async def watch_video(self, seconds: float) -> dict[str, Any]:
        """Decode the robot's endoscope stream for `seconds` (no window) and return what a surgeon got."""
        from telesurg.apps.console_video import ConsoleVideo

        self.video = ConsoleVideo(self.video_config, self.endpoint, display=False)
        try:
            if not await self.video.wait_ready(VIDEO_START_TIMEOUT_S):
                raise RuntimeError(f"video check: the decoding process did not start in {VIDEO_START_TIMEOUT_S:.0f} s")
            await asyncio.sleep(seconds)
        finally:
            self.video.close()  # the decoding process reports when it stops
            report = self.video.report()
            self.video = None
        if "frames_displayed" not in report:
            raise RuntimeError(f"video check: {report.get('error', 'no report from the video process')}")
        eyes = max(1, len(report.get("eyes", {})))
        latency = report["latency_ms"]
        return {"fps": round(report["frames_displayed"] / eyes / seconds, 2),
                "latency_p50_ms": None if latency["p50"] is None else round(latency["p50"], 2),
                "latency_p99_ms": None if latency["p99"] is None else round(latency["p99"], 2),
                "frames_displayed": report["frames_displayed"], "frames_dropped": report["frames_dropped"],
                "freezes": report["freezes"], "bitrate_mbps": round(report["bitrate_mbps"], 3)}

    async def hold_still_commands(self, seconds: float, rate_hz: float) -> int:
        """Aligned, motionless servo commands at the tools' measured poses (engage + re-engage flags), then
        silence: what the watchdog check needs. Returns commands sent; 0 if no telemetry has arrived."""
        poses = dict(self.arm_poses)
        if not poses:
            return 0
        seq = 0
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            while seq < elapsed * rate_hz:
                seq += 1
                now = time.monotonic()
                for arm in poses.values():
                    cmd = ServoCommand(arm.arm, seq, now, arm.position, arm.orientation, arm.jaw,
                                       FLAG_ENGAGED | FLAG_REENGAGE)
                    self.endpoint.send(MessageClass.CONTROL, cmd.encode())
            await asyncio.sleep(0.0005)
        return seq


async def run_phases(client: QualifyClient, plan: Plan, switch: PathSwitch | None,
                     progress: Progress, say: Callable[[str], None],
                     robot_status: Callable[[], Awaitable[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Run every phase of `plan`; the figures dict that `verdict.judge` and the report read."""
    s = client.session
    figures: dict[str, Any] = {}
    start = time.monotonic()
    s.mark("network", start)
    await client.idle(plan.network_s, progress, "network")
    figures["network"] = s.network_figures(start, time.monotonic())

    load_start = time.monotonic()
    s.mark("load", load_start)
    control, video = await client.stream("load", plan.load_s, plan.control_hz, plan.video_kbps, progress)
    await client.settle(control, 3.0 * plan.reply_timeout_s)
    load_end = load_start + plan.load_s
    figures["load"] = {
        "duration_s": plan.load_s, "control": s.stream_figures(control),
        "video": s.stream_figures(video) if video is not None else None,
        "owd_trend": {p: s.owd_trend(p, load_start, load_end) for p in s.path_names()},
        "control_forward_trend": s.stream_forward_trend(control),
        "paths": s.network_figures(load_start, load_end)["paths"],
    }
    figures["load"]["owd_growth_ms"] = {
        f"{p}/{d}": t[f"{d}_growth_ms"] for p, t in figures["load"]["owd_trend"].items() for d in ("forward", "reverse")}

    if plan.failover and switch is not None:
        figures["failover"] = await _failover(client, plan, switch, progress, say)
    else:
        figures["failover"] = {"skipped": "--no-failover" if not plan.failover else "no way to take a path away"}

    if plan.robot_checks:
        figures["robot"] = await _robot_checks(client, plan, say)
    client.collect()
    return figures


async def _failover(client: QualifyClient, plan: Plan, switch: PathSwitch, progress: Progress,
                    say: Callable[[str], None]) -> dict[str, Any]:
    s = client.session
    paths = list(client.endpoint.core.path_names)
    drills: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async def drill() -> None:
        try:
            for i, path in enumerate(paths):
                await client.idle(0.5)
                asked = time.monotonic()
                cut_at = await switch.cut(path) or asked
                s.mark(f"cut {path}", cut_at)
                down = await _wait_state(client, path, "down", asked, plan.failover_hold_s + 60.0)
                if down is not None and cut_at == asked:  # a person pulled it: last heard is the best cut time
                    cut_at = _last_heard_before(client, path, down) or asked
                await client.idle(plan.failover_hold_s)
                asked = time.monotonic()
                restored = await switch.restore(path) or asked
                s.mark(f"restore {path}", restored)
                up = await _wait_state(client, path, "up", asked, 60.0)
                drills.append({"path": path, "cut_at": cut_at, "restored_at": restored,
                               "down_detected_ms": None if down is None else round(1000 * (down - cut_at), 1),
                               "up_detected_ms": None if up is None else round(1000 * (up - restored), 1)})
                progress("failover", (i + 1) / len(paths))
            await client.idle(1.0)
        finally:
            stop.set()

    task = asyncio.create_task(drill())
    control, _ = await client.stream("failover", stop.is_set, plan.control_hz)
    await task
    await client.settle(control, 3.0 * plan.reply_timeout_s)
    say(f"failover drill done on {', '.join(paths)}")
    return {"drills": drills, "control": s.stream_figures(control)}


async def _wait_state(client: QualifyClient, path: str, state: str, after: float, timeout: float) -> float | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        at = client.session.state_changes(path, after, state)
        if at is not None:
            return at
        if state == "up":  # DEGRADED after a DOWN also means the path carries traffic again
            at = client.session.state_changes(path, after, "degraded")
            if at is not None:
                return at
        await asyncio.sleep(0.01)
    return None


def _last_heard_before(client: QualifyClient, path: str, when: float) -> float | None:
    client.collect()
    answered = [p.answered for p in client.session.probes if p.path == path and p.answered is not None
                and p.answered <= when]
    return max(answered) if answered else None


async def _robot_checks(client: QualifyClient, plan: Plan, say: Callable[[str], None]) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    for name in ROBOT_CHECKS:
        say(f"robot check: {name}")
        if name == "video":
            robot_side = asyncio.create_task(client.robot_check("video", seconds=plan.video_check_s))
            try:
                seen: dict[str, Any] | None = await client.watch_video(plan.video_check_s)
            except RuntimeError as exc:
                seen, problem = None, str(exc)
            result = await robot_side
            if result.get("status") == "pass":
                if seen is None:
                    result["status"], result["detail"] = "fail", problem
                else:
                    result["figures"].update(seen)
                    if seen["frames_displayed"] == 0:
                        result["status"], result["detail"] = "fail", "the robot streams, but no frame was decoded here"
        elif name == "watchdog":
            pending = asyncio.create_task(client.robot_check("watchdog", limit_ms=plan.watchdog_limit_ms))
            await asyncio.sleep(0.2)  # the request travels first, so the robot counts holds from before
            sent = await client.hold_still_commands(1.5, plan.control_hz)
            result = await pending
            result.setdefault("figures", {})["commands_sent"] = sent
        else:
            result = await client.robot_check(name)
        checks[name] = result
    return {"checks": checks}
