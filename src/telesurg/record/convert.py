"""Tap records -> MCAP messages (channel, schema, log time, JSON body); runs on the recorder's thread.

Sans-I/O: `RecordConverter.convert(topic, t, payload)` returns the messages one tap record becomes,
with no clock and no file. The video payloads are the link's packetized fragments, so the converter
keeps one `Reassembler` and turns them back into whole H.264 access units, one
`foxglove.CompressedVideo` per frame and eye (`/<site>/video/left`, `/<site>/video/right`).
Clock offsets are taken from the CLOCK records as they pass (in stream order), so each message's
`clock.peers` is the offset the site knew at that moment, not the one known when it was converted.

A command the robot received and judged is one message, `/<site>/command/decision`, carrying the
receipt (first path, arrival time) too: the link publishes the receipt just before the servo thread
publishes the decision (measured: all but 1 of 43,970 in a demo), and one message instead of two
is a third less writing for the recorder. `/<site>/command/received` holds the rest: commands
delivered but not judged within `RECEIPT_WAIT_S` (the site stopping, a session ending) and the rare
receipt that came after its decision.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import enum
import math
from typing import Any, NamedTuple

from telesurg.messages import ArmId
from telesurg.tap import Topic

VIDEO_HOLD_S = 0.0
VIDEO_MAX_WAIT_S = 0.25  # a frame still missing fragments this long after its first one is not recorded
RECEIPT_WAIT_S = 1.0  # a receipt not matched by a decision this long is written on its own
RECEIPTS_KEPT = 20_000
COMMANDED_POSE_PERIOD_S = 0.01  # commanded PoseInFrame at <= 100 Hz per arm (full rate on the command channels)
EYES = {0: "left", 1: "right"}
_ARM = {a.value: a.name for a in ArmId}
LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERROR, LOG_FATAL = 1, 2, 3, 4, 5
_SEVERITY_LEVEL = {"OK": LOG_INFO, "WARN": LOG_WARNING, "WARNING": LOG_WARNING, "ALARM": LOG_ERROR,
                   "CRITICAL": LOG_FATAL}
_TRANSITION_LEVEL = {"HOLD": LOG_WARNING, "LATCHED": LOG_ERROR, "FAULT": LOG_ERROR}


class McapMessage(NamedTuple):
    channel: str
    schema: str
    log_time_ns: int
    body: dict[str, Any]


def jsonable(obj: Any) -> Any:
    """Plain JSON values for the site's payload objects (dataclasses, named tuples, enums, numpy, bytes)."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, enum.Enum):
        return obj.name if isinstance(obj.value, int) else obj.value
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if hasattr(obj, "_asdict"):
        return {k: jsonable(v) for k, v in obj._asdict().items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(obj)).decode()
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return jsonable(obj.tolist())
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    return repr(obj)


def time_msg(unix_s: float) -> dict[str, int]:
    ns = max(0, round(unix_s * 1e9))
    return {"sec": ns // 1_000_000_000, "nsec": ns % 1_000_000_000}


def command_dict(cmd: Any) -> dict[str, Any]:
    return {"arm": cmd.arm, "cmd_seq": cmd.cmd_seq, "t_sent": cmd.t_sent, "position": list(cmd.position),
            "orientation": list(cmd.orientation), "jaw": cmd.jaw, "flags": cmd.flags}


def pose_in_frame(unix_s: float, position: Any, wxyz: Any, frame: str = "robot_base") -> dict[str, Any]:
    w, x, y, z = (float(v) for v in wxyz)
    px, py, pz = (float(v) for v in position)
    return {"timestamp": time_msg(unix_s), "frame_id": frame,
            "pose": {"position": {"x": px, "y": py, "z": pz}, "orientation": {"x": x, "y": y, "z": z, "w": w}}}


class RecordConverter:
    """See the module docstring. `wall_offset`: UNIX time = the site's monotonic time + wall_offset."""

    def __init__(self, site: str, wall_offset: float, peer_offsets: dict[str, float | None] | None = None,
                 role: str = "robot") -> None:
        self.site = site
        self.site_is_robot = role == "robot"  # video capture times are on the robot's clock
        self.prefix = f"/{site}"
        self.wall_offset = wall_offset
        self.peer_offsets: dict[str, float | None] = dict(peer_offsets or {})
        self._reassembler: Any = None
        self._last_pose: dict[int, float] = {}
        self._receipts: collections.OrderedDict[tuple[str, int, int], tuple[float, Any]] = collections.OrderedDict()
        self._decided_first: collections.OrderedDict[tuple[str, int, int], None] = collections.OrderedDict()
        self.video_frames = 0
        self.video_frames_dropped = 0

    # -- helpers ---------------------------------------------------------------------------------
    def clock(self, t: float) -> dict[str, Any]:
        return {"mono": t, "unix": t + self.wall_offset,
                "peers": {p: (None if o is None else t + o) for p, o in self.peer_offsets.items()}}

    def _msg(self, name: str, schema: str, t: float, body: dict[str, Any]) -> McapMessage:
        body["clock"] = self.clock(t)
        return McapMessage(f"{self.prefix}/{name}", schema, round((t + self.wall_offset) * 1e9), body)

    def _log(self, t: float, level: int, text: str) -> McapMessage:
        return self._msg("log", "foxglove.Log", t, {"timestamp": time_msg(t + self.wall_offset), "level": level,
                                                    "message": text, "name": self.site, "file": "", "line": 0})

    def _event(self, name: str, t: float, kind: str, fields: Any) -> McapMessage:
        return self._msg(name, "telesurg.Event", t, {"type": kind, "fields": jsonable(fields)})

    # -- the conversion --------------------------------------------------------------------------
    def convert(self, topic: str, t: float, payload: Any) -> list[McapMessage]:
        handler = _HANDLERS.get(topic)
        if handler is None:
            return [self._event(f"other/{topic}", t, str(topic), payload)]
        return handler(self, t, payload)

    def _command_sent(self, t: float, commands: Any) -> list[McapMessage]:
        out = [self._msg("command/sent", "telesurg.CommandBundle", t, {"commands": [command_dict(c) for c in commands]})]
        for c in commands:
            out += self._commanded_pose(t, c)
        return out

    def _commanded_pose(self, t: float, c: Any) -> list[McapMessage]:
        last = self._last_pose.get(c.arm)
        if last is not None and t - last < COMMANDED_POSE_PERIOD_S:
            return []
        self._last_pose[c.arm] = t
        arm = _ARM.get(c.arm, str(c.arm))
        return [self._msg(f"tool/{arm}/commanded", "foxglove.PoseInFrame", t,
                          pose_in_frame(t + self.wall_offset, c.position, c.orientation))]

    def _receipt(self, t: float, r: Any) -> McapMessage:
        return self._msg("command/received", "telesurg.CommandReceived", t, {
            "command": command_dict(r.command), "sender": r.sender, "link_seq": r.link_seq, "path": r.path,
            "arrived_at": r.arrived_at, "clock_offset": r.clock_offset})

    def _command_received(self, t: float, r: Any) -> list[McapMessage]:
        key = (r.sender, r.command.arm, r.command.cmd_seq)
        if self._decided_first.pop(key, 1) is None:  # its decision is already written
            return [self._receipt(t, r)]
        self._receipts[key] = (t, r)
        return self.expire_receipts(t)

    def expire_receipts(self, now: float | None = None) -> list[McapMessage]:
        """Receipts no decision claimed within RECEIPT_WAIT_S (all of them when `now` is None)."""
        out, receipts = [], self._receipts
        while receipts:
            key, (t, r) = next(iter(receipts.items()))
            if now is not None and now - t < RECEIPT_WAIT_S and len(receipts) <= RECEIPTS_KEPT:
                break
            del receipts[key]
            out.append(self._receipt(t, r))
        return out

    def _command_judged(self, t: float, j: Any) -> list[McapMessage]:
        key = (j.sender, j.command.arm, j.command.cmd_seq)
        receipt = self._receipts.pop(key, None)
        if receipt is None:
            self._decided_first[key] = None
            while len(self._decided_first) > RECEIPTS_KEPT:
                self._decided_first.popitem(last=False)
        r = None if receipt is None else receipt[1]
        out = [self._msg("command/decision", "telesurg.CommandJudged", t, {
            "command": command_dict(j.command), "sender": j.sender, "link_seq": j.link_seq,
            "clock_offset": j.clock_offset, "now": t, "outcome": j.outcome, "reason": j.reason,
            "path": None if r is None else r.path, "arrived_at": None if r is None else r.arrived_at})]
        if j.outcome != "rejected":
            out += self._commanded_pose(t, j.command)
        return out

    def _telemetry(self, t: float, tel: Any) -> list[McapMessage]:
        out = [self._msg("telemetry", "telesurg.Telemetry", t, {"t_robot": tel.t_robot, "holds": tel.holds,
                                                                 "arms": [jsonable(a) for a in tel.arms]})]
        for a in tel.arms:
            arm = _ARM.get(a.arm, str(a.arm))
            out.append(self._msg(f"tool/{arm}/measured", "foxglove.PoseInFrame", t,
                                 pose_in_frame(t + self.wall_offset, a.position, a.orientation)))
        return out

    def _supervisor_input(self, t: float, entry: tuple[Any, ...]) -> list[McapMessage]:
        body: dict[str, Any] = {"call": entry[0], "now": t, "args": [], "kwargs": {}, "measured": None,
                                "jaw": None, "operating": None}
        if entry[0] == "tick":
            _, measured, jaw, operating = entry
            body["measured"] = {n: list(p) if isinstance(p, tuple) else [*map(float, p.position), *map(float, p.orientation)]
                                for n, p in measured.items()}  # a tuple: record/portable.py made it one
            body["jaw"] = None if jaw is None else {n: float(v) for n, v in jaw.items()}
            body["operating"] = None if operating is None else {
                n: [int(s.state), bool(s.is_homed), bool(s.is_busy)] for n, s in operating.items()}
        else:
            body["args"], body["kwargs"] = jsonable(list(entry[1])), jsonable(entry[2])
        return [self._msg("safety/input", "telesurg.SupervisorInput", t, body)]

    def _safety(self, name: str, t: float, event: dict[str, Any]) -> list[McapMessage]:
        e = jsonable(event)
        if name == "transition":
            level = _TRANSITION_LEVEL.get(e.get("to"), LOG_INFO)
            text = f"{e.get('arm')} {e.get('from')} -> {e.get('to')} ({e.get('cause')})"
        elif name == "hold":
            level, text = LOG_WARNING, f"{e.get('arm')} hold: {e.get('cause')}, reaction {e.get('reaction_ms')} ms"
        elif name == "handover":
            level, text = LOG_INFO, f"{e.get('arm')} handover {e.get('from')} -> {e.get('to')} ({e.get('reason')})"
        else:
            level, text = LOG_WARNING, f"local console: {e.get('action')} {','.join(e.get('arms') or [])}"
        return [self._msg(f"safety/{name}", "telesurg.SafetyEvent", t, {"event": e}), self._log(t, level, text)]

    def _path_event(self, t: float, ev: Any) -> list[McapMessage]:
        level = LOG_WARNING if str(getattr(ev.new, "value", ev.new)) != "up" else LOG_INFO
        return [self._event("link/path_event", t, type(ev).__name__, ev),
                self._log(t, level, f"path {ev.path}: {getattr(ev.old, 'value', ev.old)} -> "
                                    f"{getattr(ev.new, 'value', ev.new)}")]

    def _session(self, t: float, ev: Any) -> list[McapMessage]:
        kind = type(ev).__name__
        level = LOG_ERROR if kind == "PeerRefused" else LOG_WARNING if kind == "SessionClosed" else LOG_INFO
        fields = jsonable(ev)
        text = kind + ": " + ", ".join(f"{k}={v}" for k, v in fields.items() if k not in ("at",)) \
            if isinstance(fields, dict) else kind
        return [self._event("link/session", t, kind, fields), self._log(t, level, text)]

    def _clock(self, t: float, offsets: dict[str, float | None]) -> list[McapMessage]:
        self.peer_offsets.update(offsets)
        return [self._msg("link/clock_offset", "telesurg.Snapshot", t, {"value": jsonable(offsets)})]

    def _snapshot(self, name: str, t: float, value: Any) -> list[McapMessage]:
        return [self._msg(name, "telesurg.Snapshot", t, {"value": jsonable(value)})]

    def _alarm(self, t: float, alarm: dict[str, Any]) -> list[McapMessage]:
        level = _SEVERITY_LEVEL.get(str(alarm.get("severity")), LOG_WARNING) if alarm.get("active") else LOG_INFO
        state = "raised" if alarm.get("active") else "cleared"
        return [self._event("alarm", t, "alarm", alarm),
                self._log(t, level, f"alarm {alarm.get('key')} {state} ({alarm.get('severity')}): "
                                    f"{alarm.get('message')}")]

    def _site(self, t: float, record: dict[str, Any]) -> list[McapMessage]:
        text = f"site {record.get('role')} {record.get('event')}" + (
            f" ({record['software']})" if record.get("software") else "")
        return [self._event("site", t, str(record.get("event")), record), self._log(t, LOG_INFO, text)]

    def _video(self, t: float, batch: Any) -> list[McapMessage]:
        if self._reassembler is None:
            from telesurg.video.reassembly import FrameReady, Reassembler

            self._reassembler, self._frame_ready = Reassembler(VIDEO_HOLD_S, VIDEO_MAX_WAIT_S), FrameReady
        events = []
        for payload in batch:
            events += self._reassembler.receive(payload, t)
        events += self._reassembler.handle_timer(t)
        out = []
        for ev in events:
            if not isinstance(ev, self._frame_ready):
                self.video_frames_dropped += getattr(ev, "count", 1)
                continue
            f = ev.frame
            self.video_frames += 1
            out.append(self._msg(f"video/{EYES.get(f.stream, f'stream{f.stream}')}", "foxglove.CompressedVideo", t, {
                "timestamp": time_msg(self._capture_unix(f.capture_time, t)), "frame_id": "endoscope",
                "data": base64.b64encode(f.data).decode(), "format": "h264", "frame_number": f.frame_number,
                "keyframe": bool(f.keyframe), "capture_time_robot": f.capture_time}))
        return out

    def _capture_unix(self, capture_robot: float, t: float) -> float:
        """The robot-clock capture time as UNIX time on this site's clock (robot: direct; console: via
        the offset to the robot, robot clock - console clock)."""
        if self.site_is_robot:
            return capture_robot + self.wall_offset
        known = [o for o in self.peer_offsets.values() if o is not None]
        return (capture_robot - known[0] if known else t) + self.wall_offset


_HANDLERS: dict[str, Any] = {
    Topic.COMMAND_SENT: RecordConverter._command_sent,
    Topic.COMMAND_RECEIVED: RecordConverter._command_received,
    Topic.COMMAND_DECISION: RecordConverter._command_judged,
    Topic.TELEMETRY: RecordConverter._telemetry,
    Topic.SUPERVISOR_INPUT: RecordConverter._supervisor_input,
    Topic.TRANSITION: lambda self, t, p: self._safety("transition", t, p),
    Topic.HOLD: lambda self, t, p: self._safety("hold", t, p),
    Topic.HANDOVER: lambda self, t, p: self._safety("handover", t, p),
    Topic.OPERATOR: lambda self, t, p: self._safety("local_console", t, p),
    Topic.PATH_EVENT: RecordConverter._path_event,
    Topic.SESSION: RecordConverter._session,
    Topic.CLOCK: RecordConverter._clock,
    Topic.PATHS: lambda self, t, p: self._snapshot("link/paths", t, p),
    Topic.ROOM: lambda self, t, p: self._snapshot("room", t, p),
    Topic.BROADCAST: lambda self, t, p: self._snapshot("broadcast", t, p),
    Topic.ALARM: RecordConverter._alarm,
    Topic.SITE: RecordConverter._site,
    Topic.VIDEO: RecordConverter._video,
}
