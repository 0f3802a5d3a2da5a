"""Tap records as plain builtins for the pipe to a consumer's process (the recorder's writer, the
dashboard), and back.

Why: the recorder's drain thread runs in the site process, beside the servo thread, and every
microsecond it holds the GIL is a microsecond the servo thread may wait. `pickle` handles bytes,
str, numbers and tuples in C, but an enum member (every `Topic`), a dataclass (`ServoCommand`,
`ArmOperatingState`) or a NamedTuple (`CommandReceived`) goes through a Python `__reduce__` each:
profiled with py-spy in a demo (2026-12-06), the drain thread held the GIL 6 % of the time, more
than the servo loop itself, mostly there. So the high-rate records (commands sent, received and
judged, the supervisor's per-period inputs, telemetry) travel as tuples of builtins with the
commands in their wire encoding (`struct`, exact for every field), and the writer process rebuilds
the site's own objects, so `RecordWriter` sees exactly what the tap carried.
"""

from __future__ import annotations

import io
import pickle
import time
from collections.abc import Iterator
from typing import Any

from telesurg.messages import ServoCommand, Telemetry, decode
from telesurg.robot.driver import ArmOperatingState, OperatingState
from telesurg.tap import GIL_SLICE, CommandJudged, CommandReceived, Topic

_SENT, _RECEIVED, _JUDGED = str(Topic.COMMAND_SENT), str(Topic.COMMAND_RECEIVED), str(Topic.COMMAND_DECISION)
_INPUT, _TELEMETRY = str(Topic.SUPERVISOR_INPUT), str(Topic.TELEMETRY)


def to_portable(record: tuple[str, float, Any]) -> tuple[str, float, Any]:
    """The record with its payload as builtins (see the module doc); other records unchanged but
    for the topic, which becomes a plain str."""
    topic, t, payload = record
    topic = str.__str__(topic)
    if topic == _RECEIVED and type(payload) is CommandReceived:
        return topic, t, (payload.command.encode(), *payload[1:])
    if topic == _JUDGED and type(payload) is CommandJudged:
        return topic, t, (payload.command.encode(), *payload[1:])
    if topic == _SENT:
        return topic, t, tuple(c.encode() for c in payload)
    if topic == _INPUT and payload[0] == "tick":
        _, measured, jaw, operating = payload
        if measured:
            measured = {n: (*p.position.tolist(), *p.orientation.tolist()) for n, p in measured.items()}
        if operating:
            operating = {n: (int(s.state), s.is_homed, s.is_busy) for n, s in operating.items()}
        return topic, t, ("tick", measured, jaw, operating)
    if topic == _TELEMETRY and type(payload) is Telemetry:
        return topic, t, payload.encode()
    return topic, t, payload


def from_portable(record: tuple[str, float, Any]) -> tuple[str, float, Any]:
    """Undo `to_portable` (poses stay 7-tuples: x, y, z, qw, qx, qy, qz, which the converter reads).
    A record that cannot be rebuilt is returned as it came: the writer counts it as unconvertible."""
    try:
        return _rebuilt(record)
    except (ValueError, TypeError, IndexError, KeyError):
        return record


def _rebuilt(record: tuple[str, float, Any]) -> tuple[str, float, Any]:
    topic, t, payload = record
    if topic in (_RECEIVED, _JUDGED) and type(payload) is tuple and type(payload[0]) is bytes:
        command = decode(payload[0])
        return topic, t, (CommandReceived if topic == _RECEIVED else CommandJudged)(command, *payload[1:])
    if topic == _SENT and payload and type(payload[0]) is bytes:
        return topic, t, tuple(_command(b) for b in payload)
    if topic == _INPUT and payload[0] == "tick" and payload[3]:
        operating = {n: ArmOperatingState(OperatingState(s), homed, busy)
                     for n, (s, homed, busy) in payload[3].items()}
        return topic, t, (*payload[:3], operating)
    if topic == _TELEMETRY and type(payload) is bytes:
        return topic, t, decode(payload)
    return record


def _command(data: bytes) -> ServoCommand:
    command = decode(data)
    if not isinstance(command, ServoCommand):
        raise ValueError(f"recorded command: expected a servo command encoding, got {type(command).__name__}")
    return command


def pickled_in_slices(records: list[tuple[str, float, Any]], extra: Any = None) -> tuple[bytes, int]:
    """The records, made portable and pickled `GIL_SLICE` at a time as `(records, extra)` back to back,
    handing the GIL over between slices; and how many records could not be pickled (left out).

    Why slices: `pickle.dumps` is one C call that keeps the GIL to its end, and a waiting servo thread
    would otherwise get it only after the 0.2 ms switch interval; a slice of 8 keeps its wait to
    ~20 us. The caller sends the result in one write (one wake-up of the other process per poll)."""
    parts, lost = [], 0
    for start in range(0, max(len(records), 1), GIL_SLICE):
        part = [to_portable(r) for r in records[start:start + GIL_SLICE]]
        try:
            parts.append(pickle.dumps((part, extra), protocol=pickle.HIGHEST_PROTOCOL))
        except Exception:  # noqa: BLE001 - an odd payload: send the others, count it
            kept = [r for r in part if _picklable(r)]
            lost += len(part) - len(kept)
            parts.append(pickle.dumps((kept, extra), protocol=pickle.HIGHEST_PROTOCOL))
        time.sleep(0)
    return b"".join(parts), lost


def unpickled_slices(stream: io.BytesIO) -> Iterator[tuple[list[tuple[str, float, Any]], Any]]:
    """Undo `pickled_in_slices` from the stream's position to its end: `(records, extra)` per slice,
    the records rebuilt (`from_portable`)."""
    end = len(stream.getbuffer())
    while stream.tell() < end:
        records, extra = pickle.load(stream)
        yield [from_portable(r) for r in records], extra


def _picklable(record: tuple[str, float, Any]) -> bool:
    try:
        pickle.dumps(record)
    except Exception:  # noqa: BLE001
        return False
    return True
