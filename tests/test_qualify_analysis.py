"""Sans-I/O qualification pieces: session figures from hand-made samples, echo payloads, thresholds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from telesurg import qualify_wire as protocol
from telesurg.apps.robot_checks import echo_probe
from telesurg.qualify.analysis import Session, distribution, loss_bursts, rfc3550_jitter
from telesurg.qualify.thresholds import ThresholdError, Thresholds, load_thresholds
from telesurg.qualify.verdict import NO_GO, NOT_RUN, WARN, judge, overall


@given(st.lists(st.booleans(), max_size=300))
def test_loss_bursts_account_for_every_loss(outcomes):
    bursts = loss_bursts(outcomes)
    assert sum(bursts) == outcomes.count(False)
    assert all(b >= 1 for b in bursts)
    # bursts are separated by deliveries: as many runs as False-after-True (or at start) transitions
    starts = sum(1 for i, o in enumerate(outcomes) if not o and (i == 0 or outcomes[i - 1]))
    assert len(bursts) == starts


@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=200))
def test_distribution_is_ordered_and_bounded(values):
    d = distribution(values)
    assert d["n"] == len(values)
    assert min(values) - 1e-3 <= d["p50"] <= d["p99"] <= d["p999"] <= d["max"] + 1e-3
    assert d["max"] == pytest.approx(max(values), abs=1e-3)


def test_jitter_ignores_a_constant_offset_and_sees_alternation():
    assert rfc3550_jitter([100.0] * 50) == 0.0
    alternating = [100.0 + (4.0 if i % 2 else 0.0) for i in range(400)]
    assert rfc3550_jitter(alternating) == pytest.approx(4.0, rel=0.01)
    assert rfc3550_jitter([x + 1e6 for x in alternating]) == pytest.approx(rfc3550_jitter(alternating))


def _feed_path(session: Session, path: str, fwd_s: float, rev_s: float, offset: float, lost: set[int],
               n: int = 1000, interval: float = 0.005) -> None:
    """Probes with known one-way delays, peer clock ahead by `offset`, the `lost` ids unanswered."""
    for i in range(n):
        sent = i * interval
        if i in lost:
            session.add_probe(path, i, sent, None, None)
        else:
            session.add_probe(path, i, sent, sent + fwd_s + rev_s, sent + fwd_s + offset)


def test_session_recovers_per_path_delays_loss_and_bursts():
    s = Session()
    s.clock_offset = 12.5  # the robot's clock runs 12.5 s ahead
    _feed_path(s, "a", 0.050, 0.055, 12.5, lost={10, 11, 12, 500})
    _feed_path(s, "b", 0.080, 0.085, 12.5, lost=set())
    f = s.network_figures(0.0, 10.0)
    a, b = f["paths"]["a"], f["paths"]["b"]
    assert a["probes"] == 1000 and a["lost"] == 4 and a["loss_pct"] == pytest.approx(0.4)
    assert a["loss_bursts"] == {"count": 2, "max": 3, "mean": 2.0, "max_ms": pytest.approx(15.0)}
    assert a["rtt_ms"]["p50"] == pytest.approx(105.0, abs=0.01)
    assert a["one_way_ms"]["forward"]["p50"] == pytest.approx(50.0, abs=0.01)
    assert a["one_way_ms"]["reverse"]["p50"] == pytest.approx(55.0, abs=0.01)
    assert b["one_way_ms"]["forward"]["p50"] == pytest.approx(80.0, abs=0.01)
    assert f["differential_ms"]["forward"] == pytest.approx(30.0, abs=0.01)
    assert f["differential_ms"]["rtt"] == pytest.approx(60.0, abs=0.01)
    # a window selects by send time
    assert s.network_figures(0.0, 1.0)["paths"]["a"]["probes"] == 200


def test_growing_queue_shows_as_one_way_delay_trend():
    s = Session()
    for i in range(400):  # forward delay grows 2 ms per second of sending
        sent = i * 0.01
        s.add_probe("a", i, sent, sent + 0.1 + 0.002 * sent, sent + 0.05 + 0.002 * sent)
    t = s.owd_trend("a", 0.0, 4.0)
    assert t["forward_ms_per_s"] == pytest.approx(2.0, rel=0.01)
    assert t["forward_growth_ms"] == pytest.approx(8.0, rel=0.01)
    assert abs(t["reverse_ms_per_s"]) < 1e-6


def test_stream_tells_command_loss_from_reply_loss():
    s = Session()
    s.open_stream(1, "load")
    for seq in range(1, 101):
        s.echo_sent(1, seq, seq * 0.001)
    for seq in range(1, 101):
        if seq in (5, 6):
            continue  # replies lost on the way back; the robot's count says the requests arrived
        if seq == 50:
            continue  # request lost
        received = seq - (1 if seq > 50 else 0)
        s.echo_reply(1, seq, seq * 0.001 + 0.05, received, "a" if seq % 3 else "b", seq * 0.001 + 0.1)
    assert not s.echo_reply(1, 999, 0.0, 0, "a", 0.0)  # unknown sequence numbers are ignored
    f = s.stream_figures(1)
    assert f["sent"] == 100 and f["robot_received"] == 99 and f["replies"] == 97
    assert f["lost_forward"] == 1 and f["lost_reply"] == 2
    assert f["rtt_ms"]["p50"] == pytest.approx(100.0, abs=0.01)
    assert sum(f["first_copy_paths"].values()) == 97 and f["rate_hz"] == pytest.approx(1000.0)


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.floats(0, 1e9), st.integers(0, protocol.MAX_REPLY_PAD))
def test_echo_reply_keeps_the_request_and_adds_robot_time(stream, seq, t_sent, pad):
    reply = echo_probe(protocol.request(stream, seq, t_sent, pad), 42.0)
    assert reply is not None and len(reply) == protocol.HEADER_SIZE + pad
    decoded = protocol.decode(reply)
    assert (decoded.kind, decoded.stream, decoded.seq, decoded.t_sent, decoded.t_robot) == (
        protocol.KIND_REPLY, stream, seq, t_sent, 42.0)
    assert decoded.robot_received >= 1


@given(st.binary(max_size=80))
def test_echo_probe_never_raises_on_garbage(data):
    echo_probe(data, 0.0)  # None or a reply; never an exception out of the receive path


def test_echo_counts_requests_per_stream():
    counts = [protocol.decode(echo_probe(protocol.request(777_001, i, 0.0), 0.0)).robot_received for i in range(5)]
    assert counts == [1, 2, 3, 4, 5]
    assert echo_probe(protocol.EchoProbe(protocol.KIND_REPLY, 1, 1, 0.0).encode(), 0.0) is None


def test_thresholds_defaults_and_file_errors_name_the_field(tmp_path):
    t = Thresholds()
    assert (t.rtt_warn_ms, t.rtt_alarm_ms, t.rtt_critical_ms, t.loss_alarm_pct) == (200, 300, 500, 1.0)
    good = tmp_path / "t.toml"
    good.write_text("[qualify]\nrtt_alarm_ms = 250.0\n")
    assert load_thresholds(good).rtt_alarm_ms == 250.0
    bad = tmp_path / "bad.toml"
    bad.write_text("rtt_warn_ms = 400.0\nloss_alarm_pct = -1\n")
    with pytest.raises(ThresholdError, match="loss_alarm_pct"):
        load_thresholds(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text("rtt_alarm = 1\n")
    with pytest.raises(ThresholdError, match="rtt_alarm"):
        load_thresholds(typo)


def test_verdict_names_failing_criteria_and_never_passes_what_did_not_run():
    s = Session()
    _feed_path(s, "a", 0.1, 0.1, 0.0, lost=set(range(0, 1000, 40)))  # RTT 200 ms, 2.5 % loss
    _feed_path(s, "b", 0.05, 0.05, 0.0, lost=set())
    figures = {"network": s.network_figures(0, 10)}
    criteria = judge(figures, Thresholds(rtt_warn_ms=150))
    by_name = {c.name: c for c in criteria}
    assert by_name["path a: loss"].status == NO_GO and by_name["path a: loss"].measured == pytest.approx(2.5)
    assert by_name["path a: RTT p99"].status == WARN
    assert by_name["path b: loss"].status == "go"
    assert by_name["load"].status == NOT_RUN and by_name["failover"].status == NOT_RUN
    assert overall(criteria) == NO_GO
    assert np.isclose(by_name["path a: RTT p99"].limit, 300.0)
