"""The MCAP recorder as a tap subscriber: round trip of real records, Foxglove schemas, crash survival,
a stalled writer, a full disk and rotation."""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
from mcap.exceptions import McapError
from mcap.records import Message
from mcap.stream_reader import StreamReader

from telesurg.messages import ArmId, ArmTelemetry, ServoCommand, Telemetry
from telesurg.record.reader import open_recording
from telesurg.record.recorder import Recorder
from telesurg.tap import CommandJudged, CommandReceived, Tap, Topic
from telesurg.video.codec import EncoderConfig, VideoEncoder
from telesurg.video.packetizer import Packetizer
from telesurg.video.sources import TestPatternSource

HOME = (0.0, 0.02, -0.1)


def command(seq: int, t: float, arm: ArmId = ArmId.PSM1) -> ServoCommand:
    return ServoCommand(arm.value, seq, t, (HOME[0] + 0.001 * seq, HOME[1], HOME[2]), (1.0, 0.0, 0.0, 0.0), 0.3)


def read_all(path: Path) -> list[tuple[str, str, Message, dict]]:
    return list(open_recording(path).decoded())


def encoded_frames(n: int) -> list:
    source = TestPatternSource(96, 64, 30.0, seed=1)
    encoder = VideoEncoder(EncoderConfig(width=96, height=64, fps=30.0, bitrate_kbps=300))
    out = []
    for i in range(n):
        out += encoder.encode(source.read(), force_keyframe=i == 0)
    return out


def test_round_trip_of_real_records_with_foxglove_schemas_and_both_clocks(tmp_path: Path) -> None:
    tap = Tap("robot")
    recorder = Recorder(tap, tmp_path, role="robot")
    recorder.start()
    t0 = tap.clock()
    tap.publish(Topic.CLOCK, t0, {"console": 0.25})  # console clock - robot clock
    cmd = command(1, 100.0)
    tap.publish(Topic.COMMAND_RECEIVED, t0 + 0.001, CommandReceived(cmd, "console#1", 7, "a", t0 + 0.001, 0.25))
    tap.publish(Topic.COMMAND_DECISION, t0 + 0.002, CommandJudged(cmd, "console#1", 7, 0.25, "rejected", "stale"))
    tap.publish(Topic.COMMAND_DECISION, t0 + 0.0025, CommandJudged(command(2, 100.001), "console#1", 8, 0.25,
                                                                   "applied", ""))
    never_judged = command(3, 100.002)  # delivered as the site stopped: recorded as a receipt of its own
    tap.publish(Topic.COMMAND_RECEIVED, t0 + 0.0026, CommandReceived(never_judged, "console#1", 9, "b", t0, 0.25))
    arm = ArmTelemetry(ArmId.PSM1.value, 1, 3, 1, HOME, (0.5, 0.5, 0.5, 0.5), 0.3, 1)
    tap.publish(Topic.TELEMETRY, t0 + 0.003, Telemetry(t0 + 0.003, 0, (arm,)))
    frames = encoded_frames(3)
    packetizer = Packetizer()
    for f in frames:
        tap.publish(Topic.VIDEO, t0 + 0.004, tuple(packetizer.packetize(f)))
    tap.publish(Topic.TRANSITION, t0 + 0.005, {"arm": "PSM1", "from": "FOLLOWING", "to": "HOLD",
                                               "cause": "watchdog", "at_s": t0 + 0.005})
    stats = recorder.close()
    assert stats["dropped_total"] == 0 and stats["records"] == 7 + len(frames) and stats["video_frames"] == 3

    rec = open_recording(stats["files"][0])
    assert rec.closed and rec.truncated is None and rec.meta["role"] == "robot"
    messages = list(rec.decoded())
    by_topic: dict[str, list[dict]] = {}
    for topic, _schema, _m, body in messages:
        by_topic.setdefault(topic, []).append(body)
    schemas = {topic: schema for topic, schema, _m, _b in messages}
    assert schemas["/robot/video/left"] == "foxglove.CompressedVideo"
    assert schemas["/robot/tool/PSM1/measured"] == "foxglove.PoseInFrame"
    assert schemas["/robot/tool/PSM1/commanded"] == "foxglove.PoseInFrame"  # applied commands
    assert schemas["/robot/log"] == "foxglove.Log"
    for channel in rec.channels.values():  # every channel JSON with a JSON schema: Foxglove needs no plugin
        schema = rec.schemas[channel.schema_id]
        assert channel.message_encoding == "json" and schema.encoding == "jsonschema"
        assert json.loads(schema.data)["type"] == "object"
    video_schema = json.loads(next(s.data for s in rec.schemas.values() if s.name == "foxglove.CompressedVideo"))
    assert video_schema["properties"]["data"]["contentEncoding"] == "base64"

    judged = by_topic["/robot/command/decision"][0]
    assert judged["command"]["position"] == list(cmd.position) and judged["reason"] == "stale"
    assert judged["path"] == "a" and judged["arrived_at"] == t0 + 0.001  # the receipt rides with its decision
    assert [r["command"]["cmd_seq"] for r in by_topic["/robot/command/received"]] == [3]
    assert by_topic["/robot/command/decision"][1]["path"] is None  # judged with no receipt seen
    assert judged["now"] == t0 + 0.002
    # both timestamps: the site's own (UNIX = log_time) and the peer's, offset-corrected
    assert judged["clock"]["unix"] == pytest.approx(t0 + 0.002 + tap.wall_offset)
    assert judged["clock"]["peers"]["console"] == pytest.approx(t0 + 0.002 + 0.25)
    pose = by_topic["/robot/tool/PSM1/measured"][0]["pose"]
    assert pose["orientation"] == {"x": 0.5, "y": 0.5, "z": 0.5, "w": 0.5} and pose["position"]["z"] == HOME[2]
    log = by_topic["/robot/log"][0]
    assert log["level"] == 3 and "HOLD" in log["message"] and set(log["timestamp"]) == {"sec", "nsec"}

    video = by_topic["/robot/video/left"]
    assert [v["frame_number"] for v in video] == [f.frame_number for f in frames]
    assert video[0]["format"] == "h264" and video[0]["keyframe"]
    decoder = av.CodecContext.create("h264", "r")
    decoded = []
    for v in video:
        data = base64.b64decode(v["data"])
        assert data == frames[video.index(v)].data  # the access unit, byte for byte
        decoded += decoder.decode(av.Packet(data))
    assert decoded and decoded[0].width == 96


WRITER = """
import sys, time
from pathlib import Path
from telesurg.messages import ServoCommand
from telesurg.record.recorder import Recorder
from telesurg.tap import CommandJudged, Tap, Topic
tap = Tap("robot")
recorder = Recorder(tap, Path(sys.argv[1]), role="robot")
recorder.start()
seq = 0
while True:
    seq += 1
    cmd = ServoCommand(0, seq, time.monotonic(), (0.0, 0.0, -0.1), (1.0, 0.0, 0.0, 0.0), 0.3)
    tap.publish_now(Topic.COMMAND_DECISION, CommandJudged(cmd, "console#1", seq, 0.0, "applied", ""))
    if seq == 200:
        print("writing", flush=True)
    time.sleep(0.0005)
"""


def kill_writer(directory: Path, whole_group: bool) -> float:
    """Run WRITER in a subprocess and SIGKILL it (and its writer process too if `whole_group`)."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(directory)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        time.sleep(1.0)
        killed_at = time.time()
        if whole_group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(5)
    return killed_at


def test_a_killed_site_leaves_its_recording_closed_by_the_writer_process(tmp_path: Path) -> None:
    killed_at = kill_writer(tmp_path, whole_group=False)
    path = tmp_path / "robot-0.mcap"
    deadline = time.monotonic() + 10
    while not open_recording(path).closed and time.monotonic() < deadline:  # the writer sees the pipe end
        time.sleep(0.1)
    bodies = [b for topic, _s, _m, b in open_recording(path).decoded() if topic == "/robot/command/decision"]
    assert killed_at - bodies[-1]["clock"]["unix"] <= 0.100


def test_a_killed_site_and_writer_leave_a_readable_file_missing_at_most_100_ms(tmp_path: Path) -> None:
    killed_at = kill_writer(tmp_path, whole_group=True)
    path = tmp_path / "robot-0.mcap"
    rec = open_recording(path)
    assert not rec.closed
    bodies = [b for topic, _s, _m, b in rec.decoded() if topic == "/robot/command/decision"]
    seqs = [b["command"]["cmd_seq"] for b in bodies]
    assert seqs == list(range(1, len(seqs) + 1))  # nothing before the cut is missing
    lost_s = killed_at - bodies[-1]["clock"]["unix"]
    assert lost_s <= 0.100, f"{lost_s * 1000:.0f} ms of records lost"
    # the stock streaming reader reads it too, up to where it was cut off
    stock = 0
    with path.open("rb") as f:
        try:
            for record in StreamReader(f, validate_crcs=True).records:
                stock += isinstance(record, Message)
        except (McapError, EOFError, ValueError, Exception):  # noqa: BLE001 - the cut-off tail
            pass
    assert stock >= len(bodies) - 5


def test_a_stalled_writer_drops_counts_and_records_the_count(tmp_path: Path) -> None:
    tap = Tap("robot")
    recorder = Recorder(tap, tmp_path, role="robot", capacity=100)
    recorder.start()
    recorder.pause()
    time.sleep(0.05)
    started = time.perf_counter()
    for seq in range(1, 351):  # the publisher never waits for the stalled consumer
        tap.publish_now(Topic.COMMAND_DECISION, CommandJudged(command(seq, 1.0), "c#1", seq, 0.0, "applied", ""))
    assert time.perf_counter() - started < 0.5
    recorder.resume()
    stats = recorder.close()
    assert stats["dropped"] == {"command/decision": 250} and stats["records"] == 100
    drops = [b for t, _s, _m, b in read_all(Path(stats["files"][0])) if t == "/robot/recorder/dropped"]
    assert drops and drops[-1]["dropped"] == {"command/decision": 250} and drops[-1]["total"] == 250


class FlakyDisk:
    """A file whose writes fail with ENOSPC while `full` is set (as a full disk would)."""

    full = False

    def __init__(self, path: Path) -> None:
        self._f = open(path, "xb")  # noqa: SIM115

    def write(self, data: bytes) -> int:
        if FlakyDisk.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._f.write(data)

    def __getattr__(self, name: str):
        return getattr(self._f, name)


def test_a_full_disk_raises_a_logged_alarm_counts_drops_and_recording_resumes(tmp_path: Path, caplog) -> None:
    tap = Tap("robot")
    recorder = Recorder(tap, tmp_path, role="robot", retry_s=0.05, opener=FlakyDisk, process=False)
    recorder.start()
    seq = 0

    def burst(n: int) -> None:
        nonlocal seq
        for _ in range(n):
            seq += 1
            tap.publish_now(Topic.COMMAND_DECISION, CommandJudged(command(seq, 1.0), "c#1", seq, 0.0, "applied", ""))
        time.sleep(0.15)

    with caplog.at_level(logging.ERROR, logger="telesurg.record.recorder"):
        burst(20)
        FlakyDisk.full = True
        try:
            burst(30)
            assert recorder.writer is not None and "No space left" in (recorder.writer.alarm or "")
        finally:
            FlakyDisk.full = False
        burst(20)
    stats = recorder.close()
    assert any("ALARM recorder robot: cannot write" in r.message and "No space" in r.message for r in caplog.records)
    assert stats["write_errors"] >= 1 and stats["dropped_total"] >= 30 and stats["alarm"] is None
    assert len(stats["files"]) == 2  # the damaged file is kept; recording went on in a new one
    first = [b["command"]["cmd_seq"] for t, _s, _m, b in read_all(Path(stats["files"][0]))
             if t == "/robot/command/decision"]
    assert first == list(range(1, 21))  # readable up to the error
    second = read_all(Path(stats["files"][1]))
    seqs = [b["command"]["cmd_seq"] for t, _s, _m, b in second if t == "/robot/command/decision"]
    assert seqs and min(seqs) > 50 - 1 and stats["records"] + stats["dropped_total"] == seq
    drops = [b for t, _s, _m, b in second if t == "/robot/recorder/dropped"]
    assert drops[-1]["total"] == stats["dropped_total"] and "disk error" in drops[-1]["reason"]


def test_rotation_by_size_keeps_every_record_in_readable_closed_files(tmp_path: Path) -> None:
    tap = Tap("robot")
    recorder = Recorder(tap, tmp_path, role="robot", rotate_bytes=8_000, flush_interval_s=0.01, process=False)
    recorder.start()
    for seq in range(1, 601):
        tap.publish_now(Topic.COMMAND_DECISION, CommandJudged(command(seq, 1.0), "c#1", seq, 0.0, "applied", ""))
        if seq % 50 == 0:
            time.sleep(0.03)
    stats = recorder.close()
    assert len(stats["files"]) >= 3
    assert [Path(p).name for p in stats["files"]] == [f"robot-{i}.mcap" for i in range(len(stats["files"]))]
    seqs = []
    for path in stats["files"]:
        rec = open_recording(path)
        assert rec.closed and rec.meta["file_index"] == Path(path).stem.split("-")[1]
        seqs += [b["command"]["cmd_seq"] for t, _s, _m, b in rec.decoded() if t == "/robot/command/decision"]
    assert seqs == list(range(1, 601))
