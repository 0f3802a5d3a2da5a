"""Wire messages: every valid message round-trips; every malformed payload raises DecodeError only."""

import contextlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telesurg.messages import (
    FLAG_CLUTCH,
    FLAG_ENGAGED,
    ArmTelemetry,
    DecodeError,
    ServoBundle,
    ServoCommand,
    Telemetry,
    decode,
)

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(arm=st.integers(0, 2), seq=st.integers(0, 2**64 - 1), t=finite, pos=st.tuples(finite, finite, finite),
       quat=st.tuples(finite, finite, finite, finite), jaw=finite, flags=st.integers(0, 255))
def test_servo_command_round_trips(arm, seq, t, pos, quat, jaw, flags):
    cmd = ServoCommand(arm, seq, t, pos, quat, jaw, flags)
    assert decode(cmd.encode()) == cmd


def test_flags_are_decoded():
    cmd = ServoCommand(0, 1, 0.0, (0, 0, 0), (1, 0, 0, 0), 0.0, FLAG_ENGAGED | FLAG_CLUTCH)
    back = decode(cmd.encode())
    assert back.engaged and back.clutch and not back.reengage


def test_telemetry_round_trips():
    arms = tuple(ArmTelemetry(i, 1, 3, 100 + i, (0.1, 0.2, 0.3), (1, 0, 0, 0), 0.5) for i in range(3))
    tel = Telemetry(12.5, 2, arms)
    assert decode(tel.encode()) == tel


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_decode_error(data):
    with contextlib.suppress(DecodeError):
        decode(data)


def test_non_finite_and_bad_arm_are_rejected():
    good = ServoCommand(0, 1, 0.0, (0, 0, 0), (1, 0, 0, 0), 0.0).encode()
    nan = ServoCommand(0, 1, math.nan, (0, 0, 0), (1, 0, 0, 0), 0.0).encode()
    with pytest.raises(DecodeError, match="non-finite"):
        decode(nan)
    bad_arm = bytearray(good)
    bad_arm[2] = 9
    with pytest.raises(DecodeError, match="arm"):
        decode(bytes(bad_arm))
    with pytest.raises(DecodeError, match="length"):
        decode(good[:-1])
    with pytest.raises(DecodeError, match="version"):
        decode(bytes([good[0], 99]) + good[2:])


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2**64 - 1), finite), min_size=1, max_size=8))
def test_servo_bundle_round_trips(items):
    bundle = ServoBundle(tuple(ServoCommand(arm, seq, t, (0.1, 0.2, 0.3), (1, 0, 0, 0), 0.4) for arm, seq, t in items))
    assert decode(bundle.encode()) == bundle


def test_bad_bundles_are_rejected_by_reason():
    one = ServoCommand(0, 1, 0.0, (0, 0, 0), (1, 0, 0, 0), 0.0)
    good = ServoBundle((one, one)).encode()
    with pytest.raises(DecodeError, match="length"):
        decode(good[:-1])
    with pytest.raises(DecodeError, match="bundle_count"):
        decode(bytes([good[0], good[1], 0]))
    telemetry = Telemetry(0.0, 0, ()).encode()
    smuggled = bytes([good[0], good[1], 1]) + telemetry + bytes(len(one.encode()) - len(telemetry))
    with pytest.raises(DecodeError):
        decode(smuggled)


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2**64 - 1), finite, st.tuples(finite, finite, finite),
                          finite, st.integers(0, 255)), min_size=0, max_size=8))
def test_bundle_bytes_are_the_head_and_each_command_back_to_back(items):
    """The one-Struct bundle encoding is byte-identical to concatenating the single-command encodings."""
    commands = tuple(ServoCommand(arm, seq, t, pos, (1.0, 0.0, -0.0, 0.0), jaw, flags)
                     for arm, seq, t, pos, jaw, flags in items)
    expected = bytes([4, 1, len(commands)]) + b"".join(c.encode() for c in commands)
    assert ServoBundle(commands).encode() == expected


@given(st.lists(st.tuples(st.integers(0, 2), st.tuples(finite, finite, finite), finite, finite), min_size=1,
                max_size=8), finite)
def test_force_feedback_round_trips(items, t):
    from telesurg.messages import ArmForce, ForceFeedback

    message = ForceFeedback(t, tuple(ArmForce(arm, f, (1.0, 0.0, 0.0, 0.0), e1, e2) for arm, f, e1, e2 in items))
    assert decode(message.encode()) == message


def test_bad_force_messages_are_rejected_by_reason():
    from telesurg.messages import ArmForce, ForceFeedback

    good = ForceFeedback(1.0, (ArmForce(0, (0.1, 0.0, -2.0), (1, 0, 0, 0), 0.5, 0.7),)).encode()
    with pytest.raises(DecodeError, match="length"):
        decode(good[:-1])
    with pytest.raises(DecodeError, match="force_count"):
        decode(bytes([good[0], good[1], 0]) + good[3:])
    bad_arm = bytearray(good)
    bad_arm[12] = 7
    with pytest.raises(DecodeError, match="arm"):
        decode(bytes(bad_arm))
    nan = ForceFeedback(1.0, (ArmForce(0, (math.nan, 0.0, 0.0), (1, 0, 0, 0)),)).encode()
    with pytest.raises(DecodeError, match="non-finite"):
        decode(nan)
    with pytest.raises(DecodeError, match="version"):
        decode(bytes([good[0], 99]) + good[2:])
