"""The broadcast publisher process: hand-over messages in, Zenoh samples out (see publisher.py).

It rebuilds each eye's frames from the link's video fragments (`Reassembler`, with FEC repair) and
publishes every access unit as it is, unless it is already stale (older than STALE_S: after a stall,
or while the router was unreachable, the hand-over socket holds old video; a live view must not
replay it, so it is counted `video_frames_stale` and skipped). JSON records are published as they
came. Every publisher uses congestion control DROP: when the router or an observer cannot keep up,
Zenoh drops samples instead of blocking here. Counters (its own and the site pump's) go out on
`telesurg/<site>/broadcast`. It counts the observers of its site by their liveliness tokens
(schema.py) and tells the site whenever the count changes (`O` message back on the hand-over socket).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

PUBLISHER_NICENESS = 10
HOLD_S = 0.02
MAX_WAIT_S = 0.1
STATS_PERIOD_S = 1.0
STALE_S = 0.5  # a frame older than this (the router was unreachable, this process was stalled) is not live


def run_child(sock: socket.socket, site: str, connect: list[str], config_file: str | None, wall_offset: float) -> None:
    with contextlib.suppress(OSError):
        os.nice(PUBLISHER_NICENESS)
    from telesurg.realtime import unpin

    unpin()
    import zenoh

    from telesurg.broadcast import handover
    from telesurg.broadcast.schema import (
        OBSERVERS,
        RecordEncoder,
        VideoUnit,
        encode_video,
        video_key,
        watches,
    )
    from telesurg.broadcast.zconfig import BroadcastConfigError, make_config, open_session, quiet_logs
    from telesurg.video.reassembly import FrameReady, Reassembler

    quiet_logs("off")
    try:
        session = open_session(make_config("client", connect=connect, retry_forever=True,
                                           config_file=None if config_file is None else Path(config_file)),
                               f"broadcast publisher -> {', '.join(connect)}")
    except BroadcastConfigError as exc:
        print(f"telesurg broadcast: {exc}", flush=True)
        return
    publishers: dict[str, Any] = {}
    counts: Counter[str] = Counter()
    reassembler = Reassembler(HOLD_S, MAX_WAIT_S)
    encoder = RecordEncoder(site, wall_offset)
    pump_stats: dict[str, Any] = {}
    capture_to_publish_ms: deque[float] = deque(maxlen=2000)  # this process's share of an observer's latency
    observers: set[str] = set()  # live observer tokens of this site (Zenoh's thread adds and removes)

    def on_token(sample: Any) -> None:
        key = str(sample.key_expr)
        if watches(key, site):
            (observers.add if sample.kind == zenoh.SampleKind.PUT else observers.discard)(key)

    tokens = session.liveliness().declare_subscriber(f"{OBSERVERS}/**", on_token, history=True)
    observers_told = -1

    def put(key: str, body: bytes, express: bool = False) -> None:
        publisher = publishers.get(key)
        if publisher is None:
            publisher = publishers[key] = session.declare_publisher(
                key, congestion_control=zenoh.CongestionControl.DROP, express=express)
        try:
            publisher.put(body)
            counts["published"] += 1
        except zenoh.ZError:
            counts["put_errors"] += 1

    def frames(events: list[Any], shift: float) -> None:
        for event in events:
            if isinstance(event, FrameReady):
                f = event.frame
                capture = f.capture_time + shift
                if time.monotonic() - capture > STALE_S:  # catching up after a stall: skip, never show the past
                    counts["video_frames_stale"] += 1
                    continue
                unit = VideoUnit(f.stream, f.frame_number, capture, capture + wall_offset, f.keyframe,
                                 event.repaired, "h264", f.data)
                put(video_key(site, f.stream), encode_video(unit), express=True)
                counts["video_frames"] += 1
                capture_to_publish_ms.append(1000.0 * (time.monotonic() - capture))
            else:
                counts["video_frames_lost"] += event.count

    shift = 0.0
    next_stats = time.monotonic() + STATS_PERIOD_S
    try:
        while True:
            due = reassembler.get_timer()
            wait = STATS_PERIOD_S if due is None else max(0.0, min(STATS_PERIOD_S, due - time.monotonic()))
            sock.settimeout(wait)
            try:
                message = sock.recv(handover.MAX_MESSAGE + 64)
            except TimeoutError:
                message = None
            if message is not None:
                tag = message[:1]
                if not message or tag == b"Q":
                    break
                if tag == b"J":
                    put(*handover.unpack_record(message))
                elif tag == b"V":
                    shift, fragments = handover.unpack_video(message)
                    now = time.monotonic()
                    for fragment in fragments:
                        frames(reassembler.receive(fragment, now), shift)
                elif tag == b"S":
                    pump_stats = json.loads(message[1:])
            if len(observers) != observers_told:  # tell the site (its pump reads this socket too)
                observers_told = len(observers)
                with contextlib.suppress(OSError):
                    sock.send(handover.pack_observers(observers_told))
            now = time.monotonic()
            due = reassembler.get_timer()
            if due is not None and due <= now:
                frames(reassembler.handle_timer(now), shift)
            if now >= next_stats:
                next_stats = now + STATS_PERIOD_S
                stats = {"publisher": dict(counts), "observers": len(observers),
                         "reassembly": _reassembly(reassembler), "pump": pump_stats,
                         "capture_to_publish_ms": _percentiles(capture_to_publish_ms)}
                put(*encoder.stats_body(now, stats))
    except (EOFError, OSError, KeyboardInterrupt):
        pass
    finally:
        with contextlib.suppress(zenoh.ZError):
            tokens.undeclare()
            session.close()
        sock.close()


def _percentiles(samples: deque[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p99": None}
    ordered = sorted(samples)
    return {"p50": round(ordered[len(ordered) // 2], 3), "p99": round(ordered[int(0.99 * (len(ordered) - 1))], 3)}


def _reassembly(reassembler: Any) -> dict[str, int]:
    s = reassembler.stats
    return {"fragments": s.fragments, "malformed": s.malformed, "frames_released": s.frames_released,
            "frames_dropped": s.frames_dropped}
