"""The clock offset follows a clock step within a few probes instead of keeping the pre-step
min-RTT sample for up to 64 of them (telesurg simulate found stale commands applied that way)."""

from __future__ import annotations

import pytest

from telesurg.link.config import LinkTuning
from telesurg.link.gate import HandshakeGate
from telesurg.link.testing import SkewedClock, make_pair
from telesurg.netem.profiles import parse_profile
from telesurg.netem.virtual import VirtualNetwork

WAN = parse_profile({"name": "t", "path": [{"name": "a", "both": {"delay_ms": 50.0, "jitter_ms": 2.0}},
                                           {"name": "b", "both": {"delay_ms": 80.0, "jitter_ms": 3.0}}]})


@pytest.mark.parametrize("step_s", [0.075, -0.075, 1.0, -10.0, 10.0])
def test_offset_follows_a_console_clock_step(step_s: float) -> None:
    client, server, _, _ = make_pair()
    console = SkewedClock(client, 3.0)  # the console's clock runs 3 s ahead of the robot's
    net = VirtualNetwork(console, server, WAN, seed=5)
    client.connect(3.0)
    net.run_until(4.0)
    assert server.clock_offset() == pytest.approx(3.0, abs=0.003)
    console.offset += step_s
    net.run_until(4.2)  # a few probes on each path (20 Hz)
    assert server.clock_offset() == pytest.approx(3.0 + step_s, abs=0.003)
    assert server.counters["clock_steps"] >= 1


def test_jitter_and_two_paths_alone_never_look_like_a_step() -> None:
    client, server, _, _ = make_pair()
    net = VirtualNetwork(SkewedClock(client, -1.5), server, WAN, seed=6)
    client.connect(-1.5)
    net.run_until(30.0)
    assert server.clock_offset() == pytest.approx(-1.5, abs=0.003)
    assert server.counters["clock_steps"] == 0 and client.counters["clock_steps"] == 0


@pytest.mark.parametrize("step_s", [10.0, -10.0])
def test_a_local_clock_step_is_noticed_at_once_and_ends_no_session(step_s: float) -> None:
    """The robot's own clock steps. Back: every deadline it had set lay 10 s ahead, so it stopped
    probing, and its offset (all it judges commands with) stayed off by the step for 10 s. Forward:
    the first timer after it took the 10 s for the console's silence and ended the session, which the
    console, still hearing the robot's probes... did not. Now it probes again at once and counts no
    silence for the time its clock skipped (tests/test_clock_step_e2e.py: the same with the sites)."""
    client, server, _, _ = make_pair()
    robot = SkewedClock(server, 0.0)
    net = VirtualNetwork(SkewedClock(client, 3.0), robot, WAN, seed=7)
    client.connect(3.0)
    net.run_until(4.0)
    assert server.clock_offset() == pytest.approx(3.0, abs=0.003)
    robot.offset += step_s
    net.run_until(4.2)  # one RTT on each path is 100-160 ms
    assert server.established and client.established
    assert server.counters["peer_silent"] == 0 and client.counters["peer_silent"] == 0
    assert server.clock_offset() == pytest.approx(3.0 - step_s, abs=0.003)
    assert server.counters["clock_steps"] == 1
    probes = {name: s.probes_sent for name, s in server.path_stats().items()}
    net.run_until(5.0)
    assert all(s.probes_sent - probes[name] >= 14 for name, s in server.path_stats().items())  # 20 Hz on
    assert all(s.state.value == "up" for s in server.path_stats().values())


def test_the_handshake_rate_limit_owes_nothing_for_a_clock_stepped_back() -> None:
    gate = HandshakeGate(LinkTuning(handshake_rate_per_s=2.0, handshake_burst=2))
    assert gate.admit("10.0.0.1", 0, 100.0) is None
    assert gate.admit("10.0.0.1", 0, 100.0) is None
    assert gate.admit("10.0.0.1", 0, 100.0) == "rate_limited"  # the burst is spent
    assert gate.admit("10.0.0.1", 0, 90.0) == "rate_limited"  # the clock stepped back 10 s
    assert gate.admit("10.0.0.1", 0, 90.6) is None  # 0.6 s later, refilled as always
