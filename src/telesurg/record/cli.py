"""`telesurg record info|merge|export-csv`: look into, combine and export black-box recordings.

- `info FILE...`: channels (schema, message count), time range, records the recorder lost, and
  whether the file was closed or cut off (and where).
- `merge robot.mcap console.mcap -o op.mcap`: one file, one timeline on the robot's clock. Each
  console message's time becomes the same instant on the robot's clock, from the clock offset the
  console knew when it recorded it (`clock.peers`, the link's NTP-style estimate), so a command sent
  and the same command judged line up, one path delay apart.
- `export-csv FILE -o DIR`: per arm, the commanded trajectory (robot: every judged command and its
  outcome; console: every command sent) and the measured tool trajectory (telemetry, 100 Hz), and
  `segments.csv`: the applied motion cut at each grasp and release (commanded jaw crossing half its
  range), so a ring's reach (jaw_open) and carry (jaw_closed) are separate rows, with duration, path
  length, straight-line distance and economy of motion (straight / path, 1.0 = no wasted motion).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import heapq
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mcap.writer import CompressionType, Writer

from telesurg.messages import ArmId
from telesurg.record.reader import Recording, RecordingError, open_recording, site_meta
from telesurg.record.schemas import PROFILE, SCHEMA_VERSION

_ARM = {a.value: a.name for a in ArmId}


def _utc(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).isoformat(timespec="milliseconds")


# -- info -----------------------------------------------------------------------------------------------
def info(path: Path) -> dict[str, Any]:
    rec = open_recording(path, require_telesurg=False)
    counts: Counter[str] = Counter()
    schemas: dict[str, str] = {}
    first = last = None
    dropped: dict[str, Any] = {}
    damage = None
    try:
        for channel, m in rec.messages():
            counts[channel.topic] += 1
            schemas.setdefault(channel.topic, rec.schema_name(channel))
            first = m.log_time if first is None else min(first, m.log_time)
            last = m.log_time if last is None else max(last, m.log_time)
            if channel.topic.endswith("/recorder/dropped"):
                dropped = json.loads(m.data).get("dropped", {})
    except RecordingError as exc:  # show what was readable, and where it stops
        damage = str(exc)
    return {"file": str(path), "bytes": rec.size, "telesurg": rec.telesurg, "meta": rec.meta,
            "closed": rec.closed, "truncated": rec.truncated, "damaged": damage,
            "channels": {t: {"schema": schemas[t], "messages": n} for t, n in sorted(counts.items())},
            "messages": sum(counts.values()), "start_ns": first, "end_ns": last,
            "duration_s": None if first is None else round((last - first) / 1e9, 3),
            "dropped": dropped, "dropped_total": sum(dropped.values())}


def _print_info(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    meta = s["meta"]
    who = f"site {meta.get('site')} ({meta.get('role')}), {meta.get('software')}" if s["telesurg"] else \
        "not a telesurg recording (no telesurg metadata)"
    state = "closed cleanly" if s["closed"] else f"NOT CLOSED - {s['truncated'] or 'no footer'}; read up to there"
    console.print(f"[bold]{s['file']}[/]: {s['bytes']} bytes, {who}; {state}")
    if s["damaged"]:
        console.print(f"[red]damaged[/]: {s['damaged']}")
    if s["start_ns"] is not None:
        console.print(f"time range {_utc(s['start_ns'])} .. {_utc(s['end_ns'])} UTC ({s['duration_s']} s), "
                      f"{s['messages']} messages")
    table = Table(title="channels")
    for col in ("topic", "schema", "messages"):
        table.add_column(col, justify="right" if col == "messages" else "left")
    for topic, c in s["channels"].items():
        table.add_row(topic, c["schema"], str(c["messages"]))
    console.print(table)
    lost = ", ".join(f"{k} {v}" for k, v in sorted(s["dropped"].items())) or "none"
    console.print(f"records the recorder dropped: {s['dropped_total']} ({lost})")


# -- merge ---------------------------------------------------------------------------------------------
def _robot_clock_stream(rec: Recording, robot_wall_offset: float, is_robot: bool) -> Iterator[tuple[int, int, Any, Any, str]]:
    """(robot-clock log time ns, tiebreak, channel, message, schema) for every message of `rec`."""
    offset: float | None = None
    pending: list[tuple[Any, Any]] = []
    n = 0
    for channel, m in rec.messages():
        n += 1
        if is_robot:
            yield m.log_time, n, channel, m, rec.schema_name(channel)
            continue
        clock = json.loads(m.data).get("clock") or {}
        peers = [v for v in (clock.get("peers") or {}).values() if v is not None]
        if peers:
            offset = peers[0] - clock["mono"]
            for ch, pm in pending:  # before the first offset was known: the first one known
                mono = json.loads(pm.data)["clock"]["mono"]
                yield round((mono + offset + robot_wall_offset) * 1e9), n, ch, pm, rec.schema_name(ch)
            pending = []
            yield round((peers[0] + robot_wall_offset) * 1e9), n, channel, m, rec.schema_name(channel)
        elif offset is not None:
            yield round((clock.get("mono", 0.0) + offset + robot_wall_offset) * 1e9), n, channel, m, \
                rec.schema_name(channel)
        else:
            pending.append((channel, m))
    for ch, pm in pending:  # the console never learnt the offset: keep its own clock, said in the metadata
        yield pm.log_time, n, ch, pm, rec.schema_name(ch)


def merge(paths: list[Path], output: Path) -> dict[str, Any]:
    recs = [open_recording(p) for p in paths]
    robots = [r for r in recs if site_meta(r)[1] == "robot"]
    if len(robots) != 1:
        raise RecordingError(f"merge needs exactly one robot recording among {[str(p) for p in paths]} "
                             f"(found {len(robots)}): its clock is the timeline")
    robot_wall = site_meta(robots[0])[2]
    streams = [_robot_clock_stream(r, robot_wall, r is robots[0]) for r in recs]
    counts: Counter[str] = Counter()
    with output.open("wb") as f:
        writer = Writer(f, compression=CompressionType.ZSTD)
        writer.start(profile=PROFILE, library="telesurg record merge")
        writer.add_metadata("telesurg", {"schema_version": SCHEMA_VERSION, "site": "merged", "role": "merged",
                                         "wall_offset": repr(robot_wall), "file_index": "0",
                                         "software": robots[0].meta.get("software", ""),
                                         "clock": f"robot ({site_meta(robots[0])[0]})",
                                         "sources": json.dumps([str(p) for p in paths])})
        schema_ids: dict[tuple[str, bytes], int] = {}
        channel_ids: dict[str, int] = {}
        for log_time, _n, channel, m, _schema in heapq.merge(*streams, key=lambda x: x[0]):
            cid = channel_ids.get(channel.topic)
            if cid is None:
                rec = next(r for r in recs if channel.id in r.channels and r.channels[channel.id] is channel)
                schema = rec.schemas.get(channel.schema_id)
                sid = 0
                if schema is not None:
                    key = (schema.name, schema.data)
                    sid = schema_ids.get(key) or writer.register_schema(schema.name, schema.encoding, schema.data)
                    schema_ids[key] = sid
                cid = channel_ids[channel.topic] = writer.register_channel(channel.topic, channel.message_encoding,
                                                                           sid, dict(channel.metadata))
            writer.add_message(cid, max(0, log_time), m.data, m.publish_time, m.sequence)
            counts[channel.topic] += 1
        writer.finish()
    return {"output": str(output), "messages": sum(counts.values()), "channels": len(counts)}


# -- export-csv --------------------------------------------------------------------------------------
_POSE = ["x", "y", "z", "qw", "qx", "qy", "qz", "jaw"]


def export_csv(path: Path, out: Path) -> dict[str, Any]:
    rec = open_recording(path)
    site = site_meta(rec)[0]
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[tuple[str, str], list[list[Any]]] = {}
    for topic, _schema, _m, body in rec.decoded():
        name = topic[len(site) + 2:]
        t = body.get("clock", {}).get("unix")
        if name == "command/decision":
            c = body["command"]
            rows.setdefault((_ARM.get(c["arm"], str(c["arm"])), "commanded"), []).append(
                [t, body["now"], c["cmd_seq"], *c["position"], *c["orientation"], c["jaw"], c["flags"],
                 body["outcome"], body["reason"]])
        elif name == "command/sent":
            for c in body["commands"]:
                rows.setdefault((_ARM.get(c["arm"], str(c["arm"])), "commanded"), []).append(
                    [t, c["t_sent"], c["cmd_seq"], *c["position"], *c["orientation"], c["jaw"], c["flags"], "sent", ""])
        elif name == "telemetry":
            for a in body["arms"]:
                rows.setdefault((_ARM.get(a["arm"], str(a["arm"])), "measured"), []).append(
                    [t, body["t_robot"], *a["position"], *a["orientation"], a["jaw"], a["supervisor_state"]])
    headers = {"commanded": ["t_unix", "t_site", "cmd_seq", *_POSE, "flags", "outcome", "reason"],
               "measured": ["t_unix", "t_robot", *_POSE, "supervisor_state"]}
    written = []
    for (arm, kind), data in sorted(rows.items()):
        target = out / f"{arm}_{kind}.csv"
        with target.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(headers[kind])
            w.writerows(data)
        written.append(str(target))
    segments = []
    for (arm, kind), data in sorted(rows.items()):
        if kind == "commanded":
            applied = [r for r in data if r[-2] in ("applied", "clipped", "sent")]
            segments += _segments(arm, [(r[0], r[3:6], r[10]) for r in applied])
    seg_path = out / "segments.csv"
    with seg_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "segment", "kind", "start_unix", "duration_s", "path_length_mm", "straight_mm",
                    "economy_of_motion"])
        w.writerows(segments)
    written.append(str(seg_path))
    return {"files": written, "segments": len(segments)}


def _segments(arm: str, samples: list[tuple[float, list[float], float]]) -> list[list[Any]]:
    """Cut one arm's applied trajectory at each grasp and release (see the module doc)."""
    if len(samples) < 2:
        return []
    jaws = [s[2] for s in samples]
    middle = (min(jaws) + max(jaws)) / 2
    if max(jaws) - min(jaws) < 0.05:  # the jaw never moved: one segment
        middle = -math.inf
    out, start, length = [], 0, 0.0
    for i in range(1, len(samples) + 1):
        closed_changed = i < len(samples) and (samples[i][2] < middle) != (samples[i - 1][2] < middle)
        if i < len(samples):
            length += math.dist(samples[i][1], samples[i - 1][1])
        if closed_changed or i == len(samples):
            end = i if i < len(samples) else i - 1
            straight = math.dist(samples[start][1], samples[end][1])
            kind = "jaw_closed" if samples[start][2] < middle else "jaw_open"
            out.append([arm, len(out), kind, samples[start][0], round(samples[end][0] - samples[start][0], 4),
                        round(1000 * length, 3), round(1000 * straight, 3),
                        round(straight / length, 4) if length > 1e-9 else None])
            start, length = i, 0.0
    return out


# -- command line --------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("info", help="channels, counts, time range and losses of recordings")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p = sub.add_parser("merge", help="robot + console recordings into one file on the robot's clock")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p = sub.add_parser("export-csv", help="tool trajectories per arm and a per-segment motion summary")
    p.add_argument("file", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="directory for the CSV files")


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "info":
            for path in args.files:
                s = info(path)
                if args.json:
                    print(json.dumps(s))
                else:
                    _print_info(s)
            return 0
        if args.action == "merge":
            if args.output.resolve() in {p.resolve() for p in args.files}:
                raise RecordingError(f"-o {args.output}: would overwrite an input; choose another name")
            result = merge(args.files, args.output)
            print(f"merged {result['messages']} messages on {result['channels']} channels into {result['output']} "
                  f"(timeline: the robot's clock)")
            return 0
        result = export_csv(args.file, args.output)
        print(f"wrote {', '.join(result['files'])} ({result['segments']} segments)")
        return 0
    except RecordingError as exc:
        print(f"telesurg record {args.action}: {exc}")
        return 2
    except OSError as exc:
        print(f"telesurg record {args.action}: {exc.filename or ''}: {exc.strerror or exc}")
        return 2
