"""A read-only observer of a site's broadcast: what arrived, how fresh, what was malformed.

`ObserverState` is the sans-I/O core: give it `(key, payload, now)` and it parses, counts and
keeps the latest telemetry, link health, alarms and safety events; malformed payloads are counted
by reason and skipped. `ObserverSession` is the thin Zenoh driver: a client session subscribed to
`telesurg/<site>/**`; Zenoh's callback only appends to a bounded queue (a full queue drops and
counts), and `poll()` on the caller's thread parses and (optionally) decodes the H.264 pictures.
An observer holds no link keys and has no way to send anything to the robot: it only subscribes.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from telesurg.broadcast.schema import (
    EYES,
    ROOT,
    MalformedPayload,
    VideoUnit,
    check_site_name,
    decode_json,
    decode_video,
    observer_token_key,
)

LATENCY_KEPT = 20_000
SAFETY_KEPT = 50
QUEUE_CAPACITY = 2048


def _percentiles(samples: collections.deque[float]) -> dict[str, float | int | None]:
    if not samples:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    values = np.fromiter(samples, dtype=float)
    return {"n": len(values), "p50": round(float(np.percentile(values, 50)), 3),
            "p99": round(float(np.percentile(values, 99)), 3), "max": round(float(values.max()), 3)}


@dataclass(slots=True)
class EyeStats:
    frames: int = 0
    missing: int = 0  # frame-number gaps (frames the site sent that never reached this observer)
    first_at: float | None = None
    last_at: float | None = None
    last_number: int | None = None
    decoded: int = 0
    latency_ms: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=LATENCY_KEPT))
    decoded_latency_ms: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=LATENCY_KEPT))

    def report(self) -> dict[str, Any]:
        span = (self.last_at - self.first_at) if self.first_at is not None and self.last_at is not None else 0.0
        return {"frames": self.frames, "missing": self.missing, "decoded": self.decoded,
                "fps": round((self.frames - 1) / span, 2) if span > 0 else 0.0,
                "latency_ms": _percentiles(self.latency_ms), "decoded_latency_ms": _percentiles(self.decoded_latency_ms)}


class ObserverState:
    """Parse and account for broadcast samples (sans-I/O: the caller gives `now`)."""

    def __init__(self, *, wall_clock: bool = False) -> None:
        self.wall_clock = wall_clock  # latency from capture_wall (another machine, NTP) instead of monotonic
        self.eyes = [EyeStats() for _ in EYES]
        self.received: collections.Counter[str] = collections.Counter()
        self.malformed: collections.Counter[str] = collections.Counter()
        self.telemetry: dict[str, dict[str, Any]] = {}
        self.paths: dict[str, Any] = {}
        self.clock: dict[str, Any] = {}
        self.alarms: dict[str, dict[str, Any]] = {}
        self.safety: collections.deque[dict[str, Any]] = collections.deque(maxlen=SAFETY_KEPT)
        self.safety_total = 0
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=SAFETY_KEPT)
        self.site: dict[str, Any] = {}
        self.room: dict[str, Any] = {}
        self.publisher: dict[str, Any] = {}

    def receive(self, key: str, payload: bytes, now: float, wall: float) -> VideoUnit | None:
        """One sample; returns the video unit to decode, if it is one."""
        parts = key.split("/")
        if len(parts) < 3 or parts[0] != ROOT:
            self.malformed["key"] += 1
            return None
        kind = parts[2]
        self.received[kind] += 1
        try:
            if kind == "video":
                return self._video(decode_video(payload), now, wall)
            self._record(kind, decode_json(payload))
        except MalformedPayload as exc:
            self.malformed[str(exc).split(":", 1)[0]] += 1
        except (KeyError, TypeError, ValueError):
            self.malformed[f"{kind}_fields"] += 1
        return None

    def _video(self, unit: VideoUnit, now: float, wall: float) -> VideoUnit:
        eye = self.eyes[unit.stream]
        eye.frames += 1
        eye.first_at = now if eye.first_at is None else eye.first_at
        eye.last_at = now
        if eye.last_number is not None and unit.frame_number > eye.last_number + 1:
            eye.missing += unit.frame_number - eye.last_number - 1
        eye.last_number = unit.frame_number
        eye.latency_ms.append(1000.0 * ((wall - unit.capture_wall) if self.wall_clock else (now - unit.capture_time)))
        return unit

    def decoded(self, unit: VideoUnit, now: float, wall: float) -> None:
        eye = self.eyes[unit.stream]
        eye.decoded += 1
        eye.decoded_latency_ms.append(
            1000.0 * ((wall - unit.capture_wall) if self.wall_clock else (now - unit.capture_time)))

    def _record(self, kind: str, body: dict[str, Any]) -> None:
        what = body["kind"]
        if what == "telemetry":
            self.telemetry[str(body["arm"])] = body
        elif what == "paths":
            self.paths = dict(body["peers"])
        elif what == "clock":
            self.clock = dict(body["offsets_s"])
        elif what == "alarm":
            self.alarms[str(body["key"])] = body
        elif what in ("transition", "hold", "handover", "local_console"):
            self.safety.append(body)
            self.safety_total += 1
        elif what in ("path_event", "session"):
            self.events.append(body)
        elif what == "room":
            self.room = body
        elif what == "site":
            self.site = body
        elif what == "broadcast":
            self.publisher = body

    def report(self) -> dict[str, Any]:
        eyes = {name: eye.report() for name, eye in zip(EYES, self.eyes, strict=True)}
        latencies: collections.deque[float] = collections.deque()
        for eye in self.eyes:
            latencies.extend(eye.latency_ms)
        return {"video": eyes, "latency_ms": _percentiles(latencies),
                "fps": {name: e["fps"] for name, e in eyes.items()},
                "received": dict(self.received), "malformed": dict(self.malformed),
                "malformed_total": sum(self.malformed.values()),
                "telemetry_arms": sorted(self.telemetry), "alarms_active": sorted(k for k, a in self.alarms.items()
                                                                                  if a.get("active")),
                "safety_events": self.safety_total, "site": self.site.get("role"),
                "publisher": {k: self.publisher.get(k) for k in ("publisher", "pump", "capture_to_publish_ms")}
                if self.publisher else {}}


class ObserverSession:
    """A Zenoh client subscribed to one site (or all sites); drain with `poll()` from one thread."""

    def __init__(self, connect: list[str], site: str | None = None, *, decode: bool = True,
                 zenoh_config: Path | None = None, wall_clock: bool = False) -> None:
        from telesurg.broadcast.zconfig import make_config, open_session

        self.site = None if site is None else check_site_name(site)
        self.key = f"{ROOT}/{self.site or '*'}/**"
        self.state = ObserverState(wall_clock=wall_clock)
        self.queue: collections.deque[tuple[str, bytes, float, float]] = collections.deque()
        self.dropped_local = 0  # samples this observer was too slow to take
        self._lock = threading.Lock()
        self._decode = decode
        self._decoders: dict[int, Any] = {}
        self.decode_errors = 0
        self.router_lost = self.router_regained = 0
        self._had_router = True
        self._next_router_check = 0.0
        self.latest: list[Any] = [None, None]  # newest decoded picture per eye (DecodedFrame)
        self.session = open_session(make_config("client", connect=connect, config_file=zenoh_config),
                                    f"observer -> {', '.join(connect)}")
        self._subscriber = self.session.declare_subscriber(self.key, self._on_sample)
        # counted by the site's publisher while this session lives (schema.py: observer tokens)
        self._token = self.session.liveliness().declare_token(observer_token_key(self.site, str(self.session.info.zid())))
        self.started_at = time.monotonic()

    def _on_sample(self, sample: Any) -> None:  # Zenoh's thread: take it and go
        if len(self.queue) >= QUEUE_CAPACITY:
            self.dropped_local += 1
            return
        self.queue.append((str(sample.key_expr), sample.payload.to_bytes(), time.monotonic(), time.time()))

    def poll(self, limit: int = 512) -> int:
        """Parse (and decode) what arrived; returns how many samples were handled."""
        n = 0
        while n < limit and self.queue:
            key, payload, now, wall = self.queue.popleft()
            unit = self.state.receive(key, payload, now, wall)
            if unit is not None and self._decode:
                self._decode_unit(unit)
            n += 1
        now = time.monotonic()
        if now >= self._next_router_check:
            self._next_router_check = now + 0.25
            has_router = bool(self.session.info.routers_zid())
            if has_router != self._had_router:
                self.router_regained += has_router
                self.router_lost += not has_router
                self._had_router = has_router
        return n

    def _decode_unit(self, unit: VideoUnit) -> None:
        from telesurg.video.codec import EncodedFrame, VideoDecoder

        decoder = self._decoders.get(unit.stream)
        if decoder is None:
            decoder = self._decoders[unit.stream] = VideoDecoder(unit.codec)  # type: ignore[arg-type]
        picture = decoder.decode(EncodedFrame(unit.stream, unit.frame_number, unit.capture_time, unit.keyframe,
                                              unit.data))
        if picture is None:
            self.decode_errors = sum(d.errors for d in self._decoders.values())
            return
        self.latest[unit.stream] = picture
        self.state.decoded(unit, time.monotonic(), time.time())

    def report(self) -> dict[str, Any]:
        report = self.state.report()
        report.update(key=self.key, duration_s=round(time.monotonic() - self.started_at, 3),
                      decode=self._decode, decode_errors=self.decode_errors, dropped_local=self.dropped_local,
                      router_lost=self.router_lost, router_regained=self.router_regained,
                      connected=self._had_router)
        return report

    def close(self) -> None:
        import zenoh

        try:
            self._token.undeclare()
            self._subscriber.undeclare()
            self.session.close()
        except zenoh.ZError:
            pass
