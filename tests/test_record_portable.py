"""The records the recorder and the dashboard send to their processes come back as the site's own objects."""

from __future__ import annotations

import io
import pickle

import numpy as np

from telesurg.messages import ArmId, ArmTelemetry, ServoCommand, Telemetry
from telesurg.record.portable import from_portable, pickled_in_slices, to_portable, unpickled_slices
from telesurg.robot.driver import ArmOperatingState, OperatingState, Pose
from telesurg.tap import CommandJudged, CommandReceived, Topic

CMD = ServoCommand(int(ArmId.PSM1), 41, 1234.000123456789, (0.01, -0.02, 0.0512345678901),
                   (0.9238795325112867, 0.0, 0.3826834323650898, 0.0), 0.31415926, 0x05)


def _through_the_pipe(record):  # noqa: ANN001, ANN202
    portable = to_portable(record)
    return from_portable(pickle.loads(pickle.dumps(portable, protocol=pickle.HIGHEST_PROTOCOL)))


def _only_builtins(value) -> bool:  # noqa: ANN001
    if type(value) in (tuple, list):
        return all(_only_builtins(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _only_builtins(v) for k, v in value.items())
    return type(value) in (str, bytes, int, float, bool, type(None))


def test_commands_received_judged_and_sent_come_back_equal_and_travel_as_builtins() -> None:
    received = (Topic.COMMAND_RECEIVED, 5.0, CommandReceived(CMD, "console#3", 77, "b", 4.999, -0.012))
    judged = (Topic.COMMAND_DECISION, 5.001, CommandJudged(CMD, "console#3", 77, None, "rejected", "stale"))
    sent = (Topic.COMMAND_SENT, 5.0, (CMD, CMD))
    for record in (received, judged, sent):
        assert _only_builtins(to_portable(record))
        topic, t, payload = _through_the_pipe(record)
        assert (topic, t, payload) == record
        assert type(topic) is str and type(payload) is type(record[2])


def test_a_supervisor_tick_keeps_its_poses_jaws_and_operating_states() -> None:
    pose = Pose(np.array([0.01, 0.02, 0.03]), np.array([1.0, 0.0, 0.0, 0.0]))
    operating = {"PSM1": ArmOperatingState(OperatingState.FAULT, True, False)}
    record = (Topic.SUPERVISOR_INPUT, 7.0, ("tick", {"PSM1": pose}, {"PSM1": 0.4}, operating))
    assert _only_builtins(to_portable(record))
    _, _, (call, measured, jaw, back) = _through_the_pipe(record)
    assert call == "tick" and jaw == {"PSM1": 0.4}
    assert measured == {"PSM1": (0.01, 0.02, 0.03, 1.0, 0.0, 0.0, 0.0)}
    assert back == operating and back["PSM1"].state is OperatingState.FAULT


def test_telemetry_and_other_records_pass_unchanged_and_a_damaged_one_is_left_for_the_writer() -> None:
    arm = ArmTelemetry(int(ArmId.PSM1), 1, 2, 99, (0.1, 0.2, 0.3), (1.0, 0.0, 0.0, 0.0), 0.5, owner=3)
    telemetry = (Topic.TELEMETRY, 8.0, Telemetry(8.0, 2, (arm,)))
    assert _through_the_pipe(telemetry) == telemetry
    video = (Topic.VIDEO, 8.1, (b"\x00\x01", b"\x02"))
    assert _through_the_pipe(video) == video
    damaged = (str(Topic.COMMAND_DECISION), 9.0, (b"\x01\x02", "console#3", 1, None, "applied", ""))
    assert from_portable(damaged) == damaged


def test_slices_come_back_in_order_and_an_unpicklable_record_is_counted_not_fatal() -> None:
    records = [(Topic.COMMAND_DECISION, 10.0 + i, CommandJudged(CMD, "console#3", i, -0.01, "applied", ""))
               for i in range(19)]
    records.insert(11, (Topic.ALARM, 10.5, {"callback": lambda: None}))  # a payload pickle refuses
    data, lost = pickled_in_slices(records, {"drops": 2})
    back = list(unpickled_slices(io.BytesIO(data)))
    assert lost == 1
    assert len(back) == 3 and all(extra == {"drops": 2} for _, extra in back)  # 20 records, 8 a slice
    rebuilt = [record for part, _ in back for record in part]
    assert rebuilt == [r for r in records if r[0] != Topic.ALARM]
    assert pickled_in_slices([])[1] == 0 and list(unpickled_slices(io.BytesIO(pickled_in_slices([])[0]))) == [([], None)]
