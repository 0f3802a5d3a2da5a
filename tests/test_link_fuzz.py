"""The link under hostile input: mutated real traffic is never accepted and every datagram is counted
once; what an unauthenticated sender gets back; a handshake flood does not disturb an established
console's control; a long run keeps memory flat and rekeys in time. Figures: bench/fuzz_link.py."""

from __future__ import annotations

import pytest

from telesurg.link.testing import make_hub, make_pair
from telesurg.netem.virtual import VirtualNetwork
from telesurg.simulate.linkfuzz import LAN, amplification, capture_hub, capture_pair, flood, fuzz
from telesurg.simulate.longrun import long_run

N = 100_000  # per target; ~2-6 s each on the 2-vCPU VM


@pytest.fixture(scope="module")
def pair_capture():
    return capture_pair()


def test_fuzzed_datagrams_into_a_live_server_core_are_never_accepted(pair_capture) -> None:
    client, server, corpus = pair_capture
    assert len(corpus) > 1000 and server.established
    report = fuzz(server, corpus, N)
    assert report.total == N
    assert (report.accepted, report.leaked, report.exceptions, report.double_counted) == (0, 0, 0, 0)
    assert report.counted + report.absorbed == N  # every datagram moved one counter, or fed a handshake
    # only handshake frames a pending handshake took, or the few new handshakes the gate let in
    assert report.absorbed <= report.fed["handshake_reorder"] + report.fed["new_session"]
    assert report.reasons["replay"] > 0 and report.reasons["auth"] > 0 and report.reasons["half_open_full"] > 0
    assert "internal_error" not in report.reasons
    assert server.established  # the real session survived


def test_fuzzed_datagrams_into_a_live_hub_are_never_accepted() -> None:
    hub, corpus = capture_hub()
    report = fuzz(hub, corpus, N, seed=9)
    assert (report.accepted, report.leaked, report.exceptions, report.double_counted) == (0, 0, 0, 0)
    assert report.counted + report.absorbed == N
    assert hub.established and len(hub.sessions()) == 1


def test_a_mixed_junk_stream_gets_back_less_than_it_sent(pair_capture) -> None:
    _, _, corpus = pair_capture
    for target in (make_pair(seed=3)[1], make_hub(1, seed=4)[0]):
        a = amplification(target, corpus, 1000)
        assert a.handshakes_started > 0 and a.ratio <= 1.0, a


def test_clienthello_replays_are_not_amplified(pair_capture) -> None:
    _, _, corpus = pair_capture
    a = amplification(make_pair(seed=3)[1], corpus, 100, rate_hz=2.0, kinds=("new_session",))
    assert a.ratio <= 1.0, a


def test_spoofed_handshake_flood_leaves_established_control_untouched(pair_capture) -> None:
    _, _, corpus = pair_capture
    quiet, flooded, counters = flood(corpus, flood_hz=2000.0, phase_s=1.0)
    assert flooded.flood_datagrams >= 1900 and counters["half_open_full"] > 1800
    assert quiet.delivered >= quiet.sent - 1 and flooded.delivered >= flooded.sent - 1
    assert flooded.percentile(0.99) <= quiet.percentile(0.99) + 0.5


def test_seven_minutes_of_operation_keep_memory_flat_and_rekey_in_time() -> None:
    report = long_run(400.0, control_hz=20.0, sample_every_s=100.0)
    assert report.delivered >= report.sent - 2
    assert report.rekeys >= 3 and report.max_rekey_interval_s <= 120.05
    assert report.longest_delivery_gap_s < 0.1  # no gap in traffic across rekeys
    assert report.memory_samples_kib[-1][1] - report.memory_samples_kib[1][1] < 32  # KiB after warm-up
    assert all(fraction < 1e-4 for fraction in report.wrap_fractions.values())  # 4 h: x36


def test_server_timer_advances_when_the_peer_goes_silent_across_a_rekey() -> None:
    client, server, _, _ = make_pair(rekey_s=1.0)
    net = VirtualNetwork(client, server, LAN)
    client.connect(0.0)
    net.run_until(0.5)
    assert server.established
    net.path_down("*")
    net.run_until(5.0)  # VirtualNetwork raises RuntimeError("no progress ...") on a timer that never advances
    assert server.counters["rekeys"] == 1  # one rekey sent; the next waits until the peer confirms it
