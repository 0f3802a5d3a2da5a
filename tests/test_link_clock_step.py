"""The clock offset follows a clock step within a few probes instead of keeping the pre-step
min-RTT sample for up to 64 of them (telesurg simulate found stale commands applied that way)."""

from __future__ import annotations

import pytest

from telesurg.link.testing import SkewedClock, make_pair
from telesurg.netem.profiles import parse_profile
from telesurg.netem.virtual import VirtualNetwork

WAN = parse_profile({"name": "t", "path": [{"name": "a", "both": {"delay_ms": 50.0, "jitter_ms": 2.0}},
                                           {"name": "b", "both": {"delay_ms": 80.0, "jitter_ms": 3.0}}]})


@pytest.mark.parametrize("step_s", [0.075, -0.075, 1.0, -10.0])
def test_offset_follows_a_console_clock_step(step_s: float) -> None:
    """(A forward step longer than session_timeout_s looks to the console like that much silence
    from the robot: its session ends and it reconnects, see test_link_reconnect.py.)"""
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
