"""The schemas of a telesurg MCAP recording: Foxglove's own where one fits, documented JSON otherwise.

Every channel is JSON-encoded (`message_encoding="json"`) with a `jsonschema` schema, so Foxglove and
the stock `mcap` tools open a recording with no plugin. Foxglove recognises its well-known types by
schema *name* and reads them with the field names of its published JSON schemas
(github.com/foxglove/schemas, schemas/jsonschema): `foxglove.CompressedVideo` (timestamp {sec, nsec},
frame_id, data as a base64 string, format "h264": one Annex-B access unit per message, SPS/PPS in
every keyframe, no B-frames - our encoder's settings), `foxglove.PoseInFrame` (timestamp, frame_id,
pose {position {x,y,z}, orientation {x,y,z,w}}) and `foxglove.Log` (timestamp, level 1-5, message,
name, file, line).

Every message, of every schema, also carries `clock`: the record's time on the recording site's
monotonic clock (`mono`, seconds), the same instant as UNIX time (`unix`, which is also the MCAP
log_time) and on each peer's monotonic clock (`peers`: identity -> seconds, from the link's latest
clock offset; null while unknown). `telesurg record merge` uses them to put two sites on one clock.
"""

from __future__ import annotations

import json
from typing import Any

SCHEMA_VERSION = "telesurg-mcap/1"  # in the file's `telesurg` metadata record; readers refuse others
PROFILE = "telesurg"

_TIME = {"type": "object", "title": "time", "properties": {
    "sec": {"type": "integer", "minimum": 0}, "nsec": {"type": "integer", "minimum": 0, "maximum": 999_999_999}}}
_NUM = {"type": "number"}
_CLOCK = {"type": "object", "description": "the record's time on each site's clock (see telesurg.record.schemas)",
          "properties": {"mono": _NUM, "unix": _NUM,
                         "peers": {"type": "object", "additionalProperties": {"type": ["number", "null"]}}}}


def _xyz(*names: str) -> dict[str, Any]:
    return {"type": "object", "properties": {n: _NUM for n in names}}


def _obj(title: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"title": title, "description": description, "type": "object",
            "properties": {**properties, "clock": _CLOCK}}


COMPRESSED_VIDEO = _obj("foxglove.CompressedVideo", "A single frame of a compressed video bitstream", {
    "timestamp": {**_TIME, "description": "capture time of the frame (UNIX time on the recording site's clock)"},
    "frame_id": {"type": "string"},
    "data": {"type": "string", "contentEncoding": "base64",
             "description": "one H.264 access unit, Annex B; keyframes carry SPS and PPS"},
    "format": {"type": "string", "description": "h264"},
    "frame_number": {"type": "integer"}, "keyframe": {"type": "boolean"},
    "capture_time_robot": {"type": "number", "description": "capture time on the robot's monotonic clock"},
})
POSE_IN_FRAME = _obj("foxglove.PoseInFrame", "A timestamped pose for an object or reference frame in 3D space", {
    "timestamp": _TIME, "frame_id": {"type": "string"},
    "pose": {"type": "object", "properties": {"position": _xyz("x", "y", "z"),
                                              "orientation": _xyz("x", "y", "z", "w")}},
})
LOG = _obj("foxglove.Log", "A log message", {
    "timestamp": _TIME,
    "level": {"type": "integer", "description": "1 DEBUG, 2 INFO, 3 WARNING, 4 ERROR, 5 FATAL"},
    "message": {"type": "string"}, "name": {"type": "string"}, "file": {"type": "string"},
    "line": {"type": "integer", "minimum": 0},
})

_COMMAND = {"type": "object", "description": "messages.ServoCommand (CRTK servo_cp) as sent by the console",
            "properties": {"arm": {"type": "integer"}, "cmd_seq": {"type": "integer"},
                           "t_sent": {"type": "number", "description": "console monotonic clock, s"},
                           "position": {"type": "array", "items": _NUM, "description": "metres, robot base"},
                           "orientation": {"type": "array", "items": _NUM, "description": "unit quaternion w,x,y,z"},
                           "jaw": {"type": "number", "description": "radians"},
                           "flags": {"type": "integer", "description": "1 engaged, 2 clutch, 4 re-engage"}}}
_FREE = {"type": "object", "description": "free-form; see the tap topic's documentation in telesurg/tap.py"}

TELESURG = {
    "telesurg.CommandBundle": _obj("telesurg.CommandBundle", "the commands of one console ticker period", {
        "commands": {"type": "array", "items": _COMMAND}}),
    "telesurg.CommandReceived": _obj("telesurg.CommandReceived", "a command as the robot's link delivered it", {
        "command": _COMMAND, "sender": {"type": "string"}, "link_seq": {"type": "integer"},
        "path": {"type": "string"}, "arrived_at": _NUM, "clock_offset": {"type": ["number", "null"]}}),
    "telesurg.CommandJudged": _obj(
        "telesurg.CommandJudged",
        "the supervisor's decision on one command; with the record time (clock.mono) as `now`, exactly the "
        "arguments SafetySupervisor.submit received", {
            "command": _COMMAND, "sender": {"type": "string"}, "link_seq": {"type": "integer"},
            "clock_offset": {"type": ["number", "null"]}, "now": _NUM,
            "outcome": {"type": "string", "enum": ["applied", "clipped", "rejected"]}, "reason": {"type": "string"},
            "path": {"type": ["string", "null"], "description": "the path whose copy arrived first (null: unknown)"},
            "arrived_at": {"type": ["number", "null"], "description": "when the robot's kernel had it (monotonic)"}}),
    "telesurg.Telemetry": _obj("telesurg.Telemetry", "messages.Telemetry (robot state, 100 Hz)", {
        "t_robot": _NUM, "holds": {"type": "integer"},
        "arms": {"type": "array", "items": {"type": "object", "properties": {
            "arm": {"type": "integer"}, "operating_state": {"type": "integer"},
            "supervisor_state": {"type": "integer"}, "last_applied_seq": {"type": "integer"},
            "position": {"type": "array", "items": _NUM}, "orientation": {"type": "array", "items": _NUM},
            "jaw": _NUM, "owner": {"type": "integer"}}}}}),
    "telesurg.SupervisorInput": _obj(
        "telesurg.SupervisorInput",
        "one input of the robot's safety supervisor other than submit, in call order (record/journal.py)", {
            "call": {"type": "string", "description": "tick or a supervisor method name"},
            "now": _NUM, "args": {"type": "array"}, "kwargs": {"type": "object"},
            "measured": {"type": ["object", "null"], "description": "arm -> [x,y,z, qw,qx,qy,qz] (tick)"},
            "jaw": {"type": ["object", "null"]},
            "operating": {"type": ["object", "null"], "description": "arm -> [state, is_homed, is_busy] (tick)"}}),
    "telesurg.SafetyEvent": _obj("telesurg.SafetyEvent", "a supervisor transition, hold, handover or local-console "
                                 "action, as apps/robot_safety_feed.py publishes it", {"event": _FREE}),
    "telesurg.Event": _obj("telesurg.Event", "a link, site or recorder event (type + fields)", {
        "type": {"type": "string"}, "fields": _FREE}),
    "telesurg.Snapshot": _obj("telesurg.Snapshot", "a periodic snapshot: path statistics, clock offsets, room status",
                              {"value": _FREE}),
    "telesurg.RecorderDrops": _obj("telesurg.RecorderDrops", "records the recorder lost (queue full, disk error), "
                                   "per tap topic, since the recording began", {
                                       "dropped": {"type": "object", "additionalProperties": {"type": "integer"}},
                                       "total": {"type": "integer"}, "reason": {"type": "string"}}),
}

FOXGLOVE = {"foxglove.CompressedVideo": COMPRESSED_VIDEO, "foxglove.PoseInFrame": POSE_IN_FRAME,
            "foxglove.Log": LOG}
ALL = {**FOXGLOVE, **TELESURG}


def schema_bytes(name: str) -> bytes:
    return json.dumps({"$comment": SCHEMA_VERSION, **ALL[name]}, sort_keys=True).encode()
