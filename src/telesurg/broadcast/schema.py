"""What a site broadcasts to observers: key expressions and versioned payloads (sans-I/O).

Key expressions (`<site>` is the site's configured name, e.g. `robot` or `console`):

| key | payload | rate |
|---|---|---|
| `telesurg/<site>/video/left`, `.../video/right` | VIDEO_HEADER + one H.264 access unit (Annex B) | camera rate |
| `telesurg/<site>/telemetry/<ARM>` (PSM1, PSM2, ECM) | JSON, kind "telemetry" | <= `telemetry_hz` (default 20) |
| `telesurg/<site>/paths` | JSON, kind "paths": per peer, per path RTT/jitter/loss/state; clock offsets | 4 Hz |
| `telesurg/<site>/paths/event` | JSON, kind "path_event": a path changed state | on change |
| `telesurg/<site>/room` | JSON, kind "room": who owns each arm, who waits, who is connected in which role | on change, >= 0.5 Hz |
| `telesurg/<site>/session` | JSON, kind "session": a console joined, left or was refused | on change |
| `telesurg/<site>/alarms` | JSON, kind "alarm": key, severity, message, active | on change |
| `telesurg/<site>/safety` | JSON, kind transition / hold / handover / local_console | on change |
| `telesurg/<site>/site` | JSON, kind "site": start/stop, role, software version | start, stop |
| `telesurg/<site>/broadcast` | JSON, kind "broadcast": the publisher's own counters (drops), observers | 1 Hz |

Each observer also holds a Zenoh liveliness token, `telesurg/observers/<site>/<observer id>` (`<site>`
is `=all` for an observer of every site): the publisher counts the live tokens of its site (the
router tells it when one appears or vanishes, a crashed observer included) and hands the count to its
site's tap (`Topic.BROADCAST`), which the dashboard and `/metrics` (`telesurg_observers`) show.

Every JSON payload is an object with `"v": 1` (PAYLOAD_VERSION), `"kind"`, `"site"`, `"t"` (the
site's monotonic clock, s) and `"t_wall"` (UNIX time, s). A reader must ignore fields it does not
know and refuse a larger major `v`. Video payloads start with VIDEO_HEADER (network byte order):

    version u8 (1) | stream u8 (0 left, 1 right) | flags u8 (1 IDR, 2 FEC-repaired) | codec u8 (0 H.264,
    1 HEVC) | frame_number u32 | capture_time f64 (publisher's monotonic clock, s) | capture_wall f64 (UNIX s)

followed by the access unit exactly as the robot's encoder produced it (no re-encode).

Never published: commands, link keys or certificates, addresses, configuration, anything about the
patient (telesurg holds no patient data; the picture itself is the only sensitive content, see
README "Observers and live broadcast"). With `anonymous=True` console identities (arm owners,
session peers, handovers) are replaced by stable pseudonyms (`peer-1`, `peer-2`, ...).
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

from telesurg.tap import Topic

PAYLOAD_VERSION = 1
VIDEO_VERSION = 1
VIDEO_HEADER = struct.Struct("!BBBBIdd")
VIDEO_FLAG_IDR = 0x01
VIDEO_FLAG_REPAIRED = 0x02
CODECS = ("h264", "hevc")
EYES = ("left", "right")
ARM_NAMES = ("PSM1", "PSM2", "ECM")
OPERATING_STATES = ("DISABLED", "ENABLED", "PAUSED", "FAULT")
SUPERVISOR_STATES = ("DISABLED", "HOMING", "READY", "FOLLOWING", "HOLD", "LATCHED", "FAULT")
ROOT = "telesurg"
_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
SAFETY_KINDS = {Topic.TRANSITION: "transition", Topic.HOLD: "hold", Topic.HANDOVER: "handover",
                Topic.OPERATOR: "local_console"}


class MalformedPayload(ValueError):
    """A broadcast payload an observer cannot read; counted and skipped, never a crash."""


def check_site_name(site: str) -> str:
    """Site names become key-expression chunks: no `*`, `$`, `#`, `?` or `/`."""
    if not _SITE_NAME.match(site):
        raise ValueError(f"site name {site!r}: use letters, digits, '-', '_' or '.' (it becomes a Zenoh key chunk)")
    return site


ALL_SITES = "=all"  # an observer of every site ("=" is not allowed in site names)
OBSERVERS = f"{ROOT}/observers"


def observer_token_key(site: str | None, observer_id: str) -> str:
    """The liveliness token an observer holds while it watches `site` (None: every site)."""
    return f"{OBSERVERS}/{ALL_SITES if site is None else check_site_name(site)}/{observer_id}"


def watches(token_key: str, site: str) -> bool:
    """Whether an observer's token key counts for `site`."""
    parts = token_key.split("/")
    return len(parts) == 4 and parts[2] in (site, ALL_SITES)


def site_prefix(site: str) -> str:
    return f"{ROOT}/{check_site_name(site)}"


def video_key(site: str, stream: int) -> str:
    return f"{site_prefix(site)}/video/{EYES[stream] if 0 <= stream < len(EYES) else f'stream{stream}'}"


@dataclass(frozen=True, slots=True)
class VideoUnit:
    """One published access unit: the header fields and the Annex B bytes."""

    stream: int
    frame_number: int
    capture_time: float
    capture_wall: float
    keyframe: bool
    repaired: bool
    codec: str
    data: bytes


def encode_video(unit: VideoUnit) -> bytes:
    flags = (VIDEO_FLAG_IDR if unit.keyframe else 0) | (VIDEO_FLAG_REPAIRED if unit.repaired else 0)
    head = VIDEO_HEADER.pack(VIDEO_VERSION, unit.stream, flags, CODECS.index(unit.codec), unit.frame_number,
                             unit.capture_time, unit.capture_wall)
    return head + unit.data


def decode_video(payload: bytes) -> VideoUnit:
    """Parse a video payload; raise MalformedPayload (only) naming the bad field."""
    if len(payload) <= VIDEO_HEADER.size:
        raise MalformedPayload(f"video: {len(payload)} bytes, need a {VIDEO_HEADER.size}-byte header and data")
    version, stream, flags, codec, number, t_capture, t_wall = VIDEO_HEADER.unpack_from(payload)
    if version != VIDEO_VERSION:
        raise MalformedPayload(f"video: header version {version} at offset 0, this observer reads {VIDEO_VERSION}")
    if stream >= len(EYES):
        raise MalformedPayload(f"video: stream {stream} at offset 1, expected 0 (left) or 1 (right)")
    if codec >= len(CODECS):
        raise MalformedPayload(f"video: codec {codec} at offset 3, expected 0 (H.264) or 1 (HEVC)")
    if not (math.isfinite(t_capture) and math.isfinite(t_wall)):
        raise MalformedPayload("video: capture time at offset 8 is not finite")
    data = payload[VIDEO_HEADER.size:]
    if data[:3] != b"\x00\x00\x01" and data[:4] != b"\x00\x00\x00\x01":
        raise MalformedPayload(f"video: no Annex B start code at offset {VIDEO_HEADER.size}")
    return VideoUnit(stream, number, t_capture, t_wall, bool(flags & VIDEO_FLAG_IDR),
                     bool(flags & VIDEO_FLAG_REPAIRED), CODECS[codec], bytes(data))


def decode_json(payload: bytes) -> dict[str, Any]:
    """Parse a JSON broadcast payload; raise MalformedPayload (only)."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedPayload(f"json: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedPayload("json: not an object")
    version = body.get("v")
    if not isinstance(version, int) or version < 1:
        raise MalformedPayload(f"json: field 'v' is {version!r}, expected a version number")
    if version > PAYLOAD_VERSION:
        raise MalformedPayload(f"json: field 'v' is {version}, this observer reads up to {PAYLOAD_VERSION}")
    if not isinstance(body.get("kind"), str):
        raise MalformedPayload("json: field 'kind' missing")
    return body


class Pseudonyms:
    """Stable `peer-N` names for console identities (the `anonymous` option)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._names: dict[str, str] = {}

    def __call__(self, identity: Any) -> Any:
        if not self.enabled or identity in (None, "", 0):
            return identity
        key = str(identity).split("#", 1)[0]  # session keys are identity#sid
        if key not in self._names:
            self._names[key] = f"peer-{len(self._names) + 1}"
        return self._names[key]


class RecordEncoder:
    """Turns tap records into `(key, JSON bytes)` to publish; one per site, used on one thread.

    VIDEO records are not handled here (the publisher process rebuilds frames from them)."""

    def __init__(self, site: str, wall_offset: float, *, telemetry_hz: float = 20.0, anonymous: bool = False) -> None:
        self.site = check_site_name(site)
        self.prefix = site_prefix(site)
        self.wall_offset = wall_offset
        self.telemetry_period = 0.0 if telemetry_hz <= 0 else 1.0 / telemetry_hz
        self.names = Pseudonyms(anonymous)
        self._last_telemetry = -math.inf
        self._slot_owner: dict[int, str] = {}  # owner slot -> console identity, from the room records
        self._last_room: tuple[str, float] = ("", -math.inf)

    def _body(self, kind: str, t: float, **fields: Any) -> bytes:
        body = {"v": PAYLOAD_VERSION, "kind": kind, "site": self.site, "t": round(t, 6),
                "t_wall": round(t + self.wall_offset, 6), **fields}
        return json.dumps(body, separators=(",", ":"), default=_jsonable).encode()

    def encode(self, topic: str, t: float, payload: Any) -> list[tuple[str, bytes]]:
        """The payloads to publish for one tap record (empty for topics that are not broadcast)."""
        handler = _HANDLERS.get(topic)
        return [] if handler is None else handler(self, t, payload)

    def _telemetry(self, t: float, telemetry: Any) -> list[tuple[str, bytes]]:
        if t - self._last_telemetry < self.telemetry_period:
            return []
        self._last_telemetry = t
        out = []
        for arm in telemetry.arms:
            name = ARM_NAMES[arm.arm] if 0 <= arm.arm < len(ARM_NAMES) else f"arm{arm.arm}"
            owner = ("local" if arm.owner == 255 else None if arm.owner == 0
                     else self.names(self._slot_owner.get(arm.owner, f"slot-{arm.owner}")))
            out.append((f"{self.prefix}/telemetry/{name}", self._body(
                "telemetry", t, arm=name, t_robot=telemetry.t_robot, holds_total=telemetry.holds,
                position_m=[round(v, 6) for v in arm.position],
                orientation_wxyz=[round(v, 6) for v in arm.orientation], jaw_rad=round(arm.jaw, 5),
                operating_state=_name(OPERATING_STATES, arm.operating_state),
                supervisor_state=_name(SUPERVISOR_STATES, arm.supervisor_state),
                owner=owner, owner_slot=arm.owner, last_applied_seq=arm.last_applied_seq)))
        return out

    def _room(self, t: float, body: dict[str, Any]) -> list[tuple[str, bytes]]:
        peers = body.get("peers") or {}
        self._slot_owner = {int(p["slot"]): who for who, p in peers.items() if isinstance(p, dict) and "slot" in p}
        arms = {ARM_NAMES[int(a)] if str(a).isdigit() and int(a) < len(ARM_NAMES) else str(a):
                {"owner": self.names(v.get("owner")), "pending": [self.names(w) for w in v.get("pending", [])],
                 "local": bool(v.get("local"))} for a, v in (body.get("arms") or {}).items()}
        who = {self.names(k): {"role": p.get("role"), "connected": p.get("connected")} for k, p in peers.items()
               if isinstance(p, dict)}
        summary = json.dumps([arms, who], sort_keys=True)
        if summary == self._last_room[0] and t - self._last_room[1] < 2.0:
            return []
        self._last_room = (summary, t)
        return [(f"{self.prefix}/room", self._body("room", t, arms=arms, peers=who))]

    def _paths(self, t: float, per_peer: dict[str, Any]) -> list[tuple[str, bytes]]:
        peers = {self.names(peer): {name: _path_stats(s) for name, s in paths.items()}
                 for peer, paths in per_peer.items()}
        return [(f"{self.prefix}/paths", self._body("paths", t, peers=peers))]

    def _clock(self, t: float, offsets: dict[str, Any]) -> list[tuple[str, bytes]]:
        return [(f"{self.prefix}/paths", self._body("clock", t, offsets_s={self.names(p): o for p, o in offsets.items()}))]

    def _path_event(self, t: float, event: Any) -> list[tuple[str, bytes]]:
        return [(f"{self.prefix}/paths/event", self._body(
            "path_event", t, path=event.path, old=_state(event.old), new=_state(event.new)))]

    def _session(self, t: float, event: Any) -> list[tuple[str, bytes]]:
        kind = type(event).__name__
        fields: dict[str, Any] = {"event": kind}
        if hasattr(event, "peer_name"):
            fields["peer"] = self.names(event.peer_name)
        if hasattr(event, "reason"):
            fields["reason"] = event.reason
        return [(f"{self.prefix}/session", self._body("session", t, **fields))]

    def _alarm(self, t: float, alarm: dict[str, Any]) -> list[tuple[str, bytes]]:
        fields = {k: alarm.get(k) for k in ("key", "severity", "previous", "message")}
        # the console publishes severity changes (console/alarms.py): active unless back to OK
        fields["active"] = bool(alarm["active"]) if "active" in alarm else alarm.get("severity") not in ("OK", None)
        return [(f"{self.prefix}/alarms", self._body("alarm", t, **fields))]

    def _safety(self, topic: str, t: float, record: dict[str, Any]) -> list[tuple[str, bytes]]:
        fields = dict(record)
        for who in ("from", "to"):
            if topic == Topic.HANDOVER and who in fields:
                fields[who] = self.names(fields[who])
        return [(f"{self.prefix}/safety", self._body(SAFETY_KINDS[Topic(topic)], t, **fields))]

    def _site(self, t: float, record: dict[str, Any]) -> list[tuple[str, bytes]]:
        fields = {k: record.get(k) for k in ("event", "role", "software")}  # never the configuration
        return [(f"{self.prefix}/site", self._body("site", t, **fields))]

    def stats_body(self, t: float, counters: dict[str, Any]) -> tuple[str, bytes]:
        return f"{self.prefix}/broadcast", self._body("broadcast", t, **counters)


def _name(names: tuple[str, ...], value: int) -> str:
    return names[value] if 0 <= value < len(names) else str(value)


def _state(state: Any) -> str:
    return getattr(state, "name", str(state))


def _path_stats(stats: Any) -> dict[str, Any]:
    return {"state": _state(stats.state), "rtt_ms": _round(stats.rtt_ms), "rtt_p50_ms": _round(stats.rtt_p50_ms),
            "rtt_p99_ms": _round(stats.rtt_p99_ms), "jitter_ms": _round(stats.jitter_ms),
            "loss_pct": _round(stats.loss_pct), "state_changes": stats.state_changes}


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "name"):
        return value.name
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return str(value)


_HANDLERS: dict[str, Any] = {
    Topic.TELEMETRY: RecordEncoder._telemetry,
    Topic.ROOM: RecordEncoder._room,
    Topic.PATHS: RecordEncoder._paths,
    Topic.CLOCK: RecordEncoder._clock,
    Topic.PATH_EVENT: RecordEncoder._path_event,
    Topic.SESSION: RecordEncoder._session,
    Topic.ALARM: RecordEncoder._alarm,
    Topic.SITE: RecordEncoder._site,
    **{topic: (lambda self, t, p, _topic=topic: self._safety(_topic, t, p)) for topic in SAFETY_KINDS},
}
BROADCAST_TOPICS = (*_HANDLERS, Topic.VIDEO)
