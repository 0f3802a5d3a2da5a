"""`telesurg record info|merge|export-csv` and `telesurg replay` on recordings of a real supervisor run
(JournaledSupervisor + ServoLoop + MuJoCo SimDriver under a virtual clock), and their one-line errors."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from mcap.writer import Writer

from telesurg.apps.robot_safety_feed import SafetyEventFeed
from telesurg.cli import main
from telesurg.messages import FLAG_ENGAGED, FLAG_REENGAGE, ArmId, ServoCommand
from telesurg.record.journal import JournaledSupervisor
from telesurg.record.reader import open_recording
from telesurg.record.recorder import Recorder
from telesurg.record.replay import replay
from telesurg.robot.config import CartConfig
from telesurg.robot.roles import INSTRUMENT_ARMS
from telesurg.robot.safety_config import SupervisorConfig, workspaces_from_cart
from telesurg.robot.servo import ServoConfig, ServoLoop
from telesurg.robot.sim import SimDriver
from telesurg.tap import CommandJudged, Tap, Topic

OWNER = "console#1"
CONSOLE_CLOCK = 1000.0  # the console's monotonic clock runs this far ahead of the robot's
PATH_DELAY = 0.05


def inward(config: SupervisorConfig, arm: str, pos, metres: float):
    """`pos` moved `metres` toward the middle of the arm's workspace (a jump that stays inside it)."""
    box = config.workspace_for(arm)
    centre = np.array([(lo + hi) / 2 for lo, hi in zip(box.low, box.high, strict=True)])
    direction = centre - np.asarray(pos)
    return np.asarray(pos) + metres * direction / np.linalg.norm(direction)


def record_robot_session(directory: Path, console_tap: Tap | None = None) -> Path:
    """~2.5 s of a supervised session in virtual time: follow, stale/duplicate/jump/intruder commands,
    a watchdog hold, a latch cleared locally, a re-engage, a takeover and hand-back, an e-stop."""
    tap = Tap("robot")
    cart = CartConfig()
    driver = SimDriver(cart)
    config = SupervisorConfig(workspace=workspaces_from_cart(cart))
    sup = JournaledSupervisor(config, INSTRUMENT_ARMS, tap)

    def on_decision(cmd, decision, now, offset, sender, link_seq) -> None:
        tap.publish(Topic.COMMAND_DECISION, now, CommandJudged(cmd, sender, link_seq, offset,
                                                               decision.outcome.value, decision.reason))

    loop = ServoLoop(sup, driver, ServoConfig(), on_decision=on_decision)
    feed = SafetyEventFeed(tap, sup, loop.local_console)
    recorder = Recorder(tap, directory, role="robot")
    recorder.start()
    now = 50.0
    tap.publish(Topic.CLOCK, now, {"console": CONSOLE_CLOCK})
    loop.operator(lambda console, t: console.enable(t))
    loop.operator(lambda console, t: [sup.assign(arm, OWNER, t) for arm in INSTRUMENT_ARMS])
    seq = {arm: 0 for arm in INSTRUMENT_ARMS}
    link_seq = 0

    def step(n: int = 1) -> None:
        nonlocal now
        for _ in range(n):
            now = round(now + 0.001, 9)
            loop.step(now)

    def send(arm: str, pos, quat, flags=FLAG_ENGAGED, t_sent=None, sender=OWNER, cmd_seq=None) -> None:
        nonlocal link_seq
        if cmd_seq is None:
            seq[arm] += 1
            cmd_seq = seq[arm]
        link_seq += 1
        sent = (now - PATH_DELAY + CONSOLE_CLOCK) if t_sent is None else t_sent
        cmd = ServoCommand(ArmId[arm].value, cmd_seq, sent, tuple(float(v) for v in pos),
                           tuple(float(v) for v in quat), 0.3, flags)
        if console_tap is not None and sender == OWNER:
            console_tap.publish(Topic.COMMAND_SENT, sent, (cmd,))
        loop.submit(cmd, sender, link_seq, CONSOLE_CLOCK)

    step(20)
    tap.publish(Topic.SITE, now, {"event": "start", "role": "robot", "software": "test",
                                  "config": {"safety": config.model_dump(mode="json")}})
    start = {arm: sup.setpoint(arm) for arm in INSTRUMENT_ARMS}

    def follow(ms: int, reengage_first: bool) -> None:
        for i in range(ms):
            for arm in INSTRUMENT_ARMS:
                pose = driver.arms()[arm].measured_cp() if (i == 0 and reengage_first) else start[arm]
                pos = pose.position + [0.00005 * i, 0.0, 0.0]
                send(arm, pos, pose.orientation, FLAG_ENGAGED | (FLAG_REENGAGE if i == 0 and reengage_first else 0))
            if i == 50:  # a stale one, a duplicate, a jump and an intruder, among the good ones
                send("PSM1", start["PSM1"].position, start["PSM1"].orientation, t_sent=now - 1.0 + CONSOLE_CLOCK)
                send("PSM1", start["PSM1"].position, start["PSM1"].orientation, cmd_seq=seq["PSM1"])
                send("PSM2", inward(config, "PSM2", start["PSM2"].position, 0.015), start["PSM2"].orientation)
                send("PSM2", start["PSM2"].position, start["PSM2"].orientation, sender="intruder#9")
            step()
            if i % 50 == 0:
                feed.poll()

    follow(300, reengage_first=True)
    step(1200)  # silence: watchdog hold, then latched after the fault time
    feed.poll()
    time.sleep(0.3)  # let the recorder close a chunk here: the truncation test cuts the file after it
    loop.operator(lambda console, t: console.clear_latch(t))
    step(5)
    follow(200, reengage_first=True)
    loop.operator(lambda console, t: console.takeover(t, "PSM2"))
    step(5)
    loop.operator(lambda console, t: console.hand_back(t, "PSM2"))
    follow(100, reengage_first=True)
    loop.operator(lambda console, t: console.emergency_stop(t))
    step(10)
    follow(3, reengage_first=False)  # refused: the e-stop is engaged
    feed.poll()
    tap.publish(Topic.SITE, now, {"event": "stop", "role": "robot"})
    stats = recorder.close()
    assert stats["dropped_total"] == 0
    return Path(stats["files"][0])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("rec")
    console_tap = Tap("console", clock=lambda: time.monotonic() + CONSOLE_CLOCK)
    console_rec = Recorder(console_tap, directory, role="console")
    console_rec.start()
    console_tap.publish(Topic.CLOCK, 50.0 + CONSOLE_CLOCK, {"robot": -CONSOLE_CLOCK})
    robot = record_robot_session(directory, console_tap)
    console = Path(console_rec.close()["files"][0])
    return robot, console


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr().out
    assert "Traceback" not in out
    return code, out


def test_replay_reaches_the_same_decisions_transitions_and_holds(recorded, capsys) -> None:
    result = replay([recorded[0]])
    s = result.summary()
    assert result.match and result.conclusive and result.complete_session, s["mismatches"]
    assert s["decisions"] > 1000 and s["transitions"]["recorded"] >= 8 and s["holds"]["recorded"] >= 2
    outcomes = s["outcomes"]  # the session exercised the interesting reasons
    for reason in ("rejected:stale", "rejected:duplicate", "rejected:jump", "rejected:not_owner", "rejected:estop"):
        assert outcomes.get(reason, 0) >= 1, outcomes
    code, out = run_cli(capsys, "replay", str(recorded[0]))
    assert code == 0 and "SAME DECISIONS" in out and "100.000 %" in out


def test_replay_finds_a_changed_supervisor_configuration(recorded, capsys) -> None:
    result = replay([recorded[0]], safety_overrides={"freshness_s": 0.04})  # below the 50 ms path delay
    assert not result.match and result.decisions_matched < result.decisions
    code, out = run_cli(capsys, "replay", str(recorded[0]), "--set", "watchdog_s=0.5")
    assert code == 1 and "DIFFERENT" in out and "hold recorded but not replayed" in out


def rewrite(src: Path, dst: Path, edit) -> None:
    """Copy a recording message by message, letting `edit(topic, body)` change a body (tampering)."""
    rec = open_recording(src)
    with dst.open("wb") as f:
        w = Writer(f)
        w.start(profile="telesurg")
        w.add_metadata("telesurg", dict(rec.meta))
        channels: dict[int, int] = {}
        for channel, m in rec.messages():
            if channel.id not in channels:
                schema = rec.schemas[channel.schema_id]
                sid = w.register_schema(schema.name, schema.encoding, schema.data)
                channels[channel.id] = w.register_channel(channel.topic, channel.message_encoding, sid)
            body = json.loads(m.data)
            edit(channel.topic, body)
            w.add_message(channels[channel.id], m.log_time, json.dumps(body).encode(), m.publish_time, m.sequence)
        w.finish()


def test_replay_finds_a_tampered_recording(recorded, tmp_path, capsys) -> None:
    done = []

    def move_one_command(topic: str, body: dict) -> None:
        if topic == "/robot/command/decision" and body["outcome"] == "applied" and not done and \
                body["command"]["cmd_seq"] > 100 and body["command"]["arm"] == 0:
            # recorded as applied: a 3 cm jump no supervisor applies
            body["command"]["position"] = list(inward(SupervisorConfig(workspace=workspaces_from_cart(CartConfig())),
                                                      "PSM1", body["command"]["position"], 0.03))
            done.append(body)

    tampered = tmp_path / "robot-0.mcap"
    rewrite(recorded[0], tampered, move_one_command)
    code, out = run_cli(capsys, "replay", str(tampered))
    assert code == 1 and "recorded applied '', replay rejected 'jump'" in out


def test_info_lists_channels_counts_and_time_range(recorded, capsys) -> None:
    code, out = run_cli(capsys, "record", "info", "--json", str(recorded[0]))
    s = json.loads(out)
    assert code == 0 and s["closed"] and s["dropped_total"] == 0 and s["duration_s"] > 1.0
    assert s["channels"]["/robot/command/decision"]["schema"] == "telesurg.CommandJudged"
    assert s["channels"]["/robot/safety/input"]["messages"] > 1000
    code, out = run_cli(capsys, "record", "info", str(recorded[0]))
    assert code == 0 and "closed cleanly" in out and "/robot/safety/input" in out


def test_merge_puts_both_sites_on_the_robot_clock(recorded, tmp_path, capsys) -> None:
    merged = tmp_path / "op.mcap"
    code, out = run_cli(capsys, "record", "merge", str(recorded[0]), str(recorded[1]), "-o", str(merged))
    assert code == 0 and "robot's clock" in out
    sent, judged = {}, {}
    for topic, _schema, m, body in open_recording(merged).decoded():
        if topic == "/console/command/sent":
            for c in body["commands"]:
                sent[(c["arm"], c["cmd_seq"], c["t_sent"])] = m.log_time
        elif topic == "/robot/command/decision":
            c = body["command"]
            judged[(c["arm"], c["cmd_seq"], c["t_sent"])] = m.log_time
    gaps = sorted((judged[k] - sent[k]) / 1e9 for k in judged if k in sent)
    # the console's clock runs 1000 s ahead; on one timeline each command is judged one path delay (+ the
    # servo period it waits for) later; the stale commands were stamped 1 s earlier
    fresh = [g for g in gaps if g < 0.5]
    assert len(fresh) > 1000 and all(PATH_DELAY <= g <= PATH_DELAY + 0.0012 for g in fresh), (fresh[0], fresh[-1])
    assert len(gaps) - len(fresh) == 3 and abs(gaps[-1] - 1.001) < 0.001


def test_export_csv_writes_trajectories_and_segments(recorded, tmp_path, capsys) -> None:
    code, _ = run_cli(capsys, "record", "export-csv", str(recorded[0]), "-o", str(tmp_path / "csv"))
    assert code == 0
    with (tmp_path / "csv" / "PSM1_commanded.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {"applied", "rejected"} <= {r["outcome"] for r in rows}
    with (tmp_path / "csv" / "segments.csv").open() as f:
        segments = list(csv.DictReader(f))
    assert segments and all(0.0 < float(s["economy_of_motion"]) <= 1.0 for s in segments if s["economy_of_motion"])
    assert sum(float(s["path_length_mm"]) for s in segments if s["arm"] == "PSM1") > 10.0


def test_a_truncated_recording_is_read_up_to_the_cut(recorded, tmp_path, capsys) -> None:
    cut = tmp_path / "robot-0.mcap"
    data = recorded[0].read_bytes()
    chunks = [o for o, op, _n in open_recording(recorded[0])._offsets if op == 0x06]
    assert len(chunks) >= 2, chunks  # the session spans chunks (see the pause in record_robot_session)
    cut.write_bytes(data[: chunks[-1] + 100])  # a crash while the last chunk was being written
    code, out = run_cli(capsys, "record", "info", str(cut))
    out = " ".join(out.split())  # rich wraps long lines
    assert code == 0 and "NOT CLOSED" in out and "cut off inside a CHUNK record at offset" in out
    result = replay([cut])
    assert result.truncated and result.decisions > 100 and result.decisions_matched == result.decisions


def test_bad_input_gives_one_line_errors(recorded, tmp_path, capsys) -> None:
    damaged = tmp_path / "damaged.mcap"
    data = bytearray(recorded[0].read_bytes())
    rec = open_recording(recorded[0])
    chunk_offset = next(o for o, op, _n in rec._offsets if op == 0x06)
    data[chunk_offset + 200: chunk_offset + 216] = bytes(16)
    damaged.write_bytes(bytes(data))
    code, out = run_cli(capsys, "replay", str(damaged))
    assert code == 2 and out.count("\n") == 1 and f"offset {chunk_offset}" in out and "damaged" in out

    text = tmp_path / "notes.mcap"
    text.write_text("hello\n")
    code, out = run_cli(capsys, "record", "info", str(text))
    assert code == 2 and out.strip() == f"telesurg record info: {text}: not an MCAP file (no MCAP magic at offset 0)"

    other = tmp_path / "future.mcap"
    with other.open("wb") as f:
        w = Writer(f)
        w.start()
        w.add_metadata("telesurg", {"schema_version": "telesurg-mcap/9", "site": "robot", "role": "robot",
                                    "wall_offset": "0.0"})
        w.finish()
    code, out = run_cli(capsys, "replay", str(other))
    assert code == 2 and "recorded as telesurg-mcap/9; this telesurg reads telesurg-mcap/1" in out

    code, out = run_cli(capsys, "replay", str(recorded[1]))
    assert code == 2 and "recorded by a 'console' site" in out
    code, out = run_cli(capsys, "record", "merge", str(tmp_path / "missing.mcap"), "-o", str(tmp_path / "x.mcap"))
    assert code == 2 and "cannot open" in out and out.count("\n") == 1
    shutil.rmtree(tmp_path / "csv", ignore_errors=True)
