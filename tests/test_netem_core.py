"""DirectionEmulator: statistics of each impairment, order, counters, repeatability (virtual time only)."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telesurg.netem.core import DirectionEmulator, Impairment


def run(emu: DirectionEmulator, times: list[float], size: int = 20) -> list[tuple[float, bytes]]:
    """Submit one packet (its index as payload) at each time; return (departure, payload) in order."""
    out: list[tuple[float, bytes]] = []
    for i, t in enumerate(times):
        _drain(emu, t, out)
        emu.submit(i.to_bytes(4, "big") + bytes(size - 4), t)
    _drain(emu, float("inf"), out)
    return out


def _drain(emu: DirectionEmulator, until: float, out: list[tuple[float, bytes]]) -> None:
    while (t := emu.next_time()) is not None and t <= until:
        out.extend((t, p) for p in emu.pop_due(t))


def index(payload: bytes) -> int:
    return int.from_bytes(payload[:4], "big")


def delays(out: list[tuple[float, bytes]], times: list[float]) -> list[float]:
    return [(dep - times[index(p)]) * 1000 for dep, p in out]


def test_no_impairment_delivers_immediately_in_order() -> None:
    emu = DirectionEmulator(Impairment(), seed=1)
    emu.submit(b"x", 5.0)
    emu.submit(b"y", 5.0)
    assert emu.next_time() == 5.0
    assert emu.pop_due(5.0) == [b"x", b"y"]
    assert emu.next_time() is None
    assert emu.stats.delivered == 2 and emu.stats.in_flight == 0


def test_fixed_delay_is_exact_and_not_early() -> None:
    emu = DirectionEmulator(Impairment(delay_ms=50), seed=1)
    emu.submit(b"x", 1.0)
    assert emu.pop_due(1.0499) == []
    assert emu.next_time() == pytest.approx(1.05)
    assert emu.pop_due(1.05) == [b"x"]


def test_normal_jitter_mean_and_spread() -> None:
    times = [i * 0.1 for i in range(5000)]  # spaced far wider than the jitter: FIFO clamp never binds
    out = run(DirectionEmulator(Impairment(delay_ms=50, jitter_ms=5), seed=7), times)
    d = delays(out, times)
    assert statistics.fmean(d) == pytest.approx(50, abs=0.3)
    assert statistics.stdev(d) == pytest.approx(5, rel=0.05)


def test_pareto_jitter_same_mean_and_spread_with_heavy_right_tail() -> None:
    times = [i * 0.2 for i in range(20000)]
    out = run(DirectionEmulator(Impairment(delay_ms=50, jitter_ms=5, jitter_dist="pareto"), seed=3), times)
    d = delays(out, times)
    assert statistics.fmean(d) == pytest.approx(50, abs=0.3)
    assert statistics.stdev(d) == pytest.approx(5, rel=0.15)
    assert statistics.median(d) < statistics.fmean(d) - 0.5  # right skew
    assert min(d) >= 50 - 5 * 0.578  # bounded below: Lomax starts at 0
    assert max(d) > 50 + 4 * 5  # a heavy tail reaches far


def test_jitter_preserves_order_at_1khz_yet_delay_varies() -> None:
    times = [i * 0.001 for i in range(5000)]
    out = run(DirectionEmulator(Impairment(delay_ms=80, jitter_ms=3), seed=11), times)
    assert [index(p) for _, p in out] == list(range(5000))
    d = delays(out, times)
    assert statistics.stdev(d) > 1.0
    assert 80 <= statistics.fmean(d) <= 80 + 2 * 3  # the FIFO clamp only ever delays, by under ~1 SD


def test_reorder_lets_later_packets_overtake() -> None:
    times = [i * 0.001 for i in range(10000)]
    emu = DirectionEmulator(Impairment(delay_ms=20, reorder=0.05, reorder_extra_ms=5), seed=5)
    order = [index(p) for _, p in run(emu, times)]
    overtaken, highest = 0, -1
    for i in order:
        overtaken += i < highest
        highest = max(highest, i)
    assert emu.stats.reordered == pytest.approx(500, abs=3 * (10000 * 0.05 * 0.95) ** 0.5)
    # every held packet is passed by the packets sent within reorder_extra_ms after it (unless those
    # were held too, which is rare at 5 %)
    assert overtaken == pytest.approx(emu.stats.reordered, abs=5) and overtaken > 400
    assert sorted(order) == list(range(10000))


def test_bernoulli_loss_rate() -> None:
    emu = DirectionEmulator(Impairment(loss=0.1), seed=2)
    out = run(emu, [i * 0.001 for i in range(20000)])
    sigma = (20000 * 0.1 * 0.9) ** 0.5
    assert emu.stats.dropped_loss == pytest.approx(2000, abs=4 * sigma)
    assert len(out) == 20000 - emu.stats.dropped_loss


def test_gilbert_elliott_bursts_are_geometric() -> None:
    imp = Impairment(ge_p=0.01, ge_r=0.25)
    emu = DirectionEmulator(imp, seed=9)
    n = 200_000
    out = run(emu, [i * 0.001 for i in range(n)], size=4)
    received = {index(p) for _, p in out}
    bursts, current = [], 0
    for i in range(n):
        if i in received:
            if current:
                bursts.append(current)
            current = 0
        else:
            current += 1
    assert emu.stats.dropped_loss / n == pytest.approx(imp.mean_loss(), rel=0.1)  # 0.038
    assert statistics.fmean(bursts) == pytest.approx(1 / imp.ge_r, rel=0.1)  # mean burst 4 packets
    share_single = bursts.count(1) / len(bursts)
    assert share_single == pytest.approx(imp.ge_r, abs=0.03)  # geometric: P(len = 1) = r
    assert max(bursts) >= 15  # real bursts, not isolated drops


def test_duplicates_and_counters_balance() -> None:
    emu = DirectionEmulator(Impairment(duplicate=0.2, delay_ms=1), seed=4)
    out = run(emu, [i * 0.001 for i in range(10000)])
    s = emu.stats
    assert s.duplicated == pytest.approx(2000, abs=4 * (10000 * 0.2 * 0.8) ** 0.5)
    assert len(out) == 10000 + s.duplicated == s.delivered
    ids = [index(p) for _, p in out]
    assert ids == sorted(ids) and len(set(ids)) == 10000


def test_corruption_flips_exactly_one_bit() -> None:
    emu = DirectionEmulator(Impairment(corrupt=0.3), seed=6)
    sent = [bytes([i % 256]) * 32 for i in range(5000)]
    for i, data in enumerate(sent):
        emu.submit(data, i * 0.001)
    got = emu.pop_due(10.0)
    flipped = [sum(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True)) for a, b in zip(sent, got, strict=True)]
    assert set(flipped) <= {0, 1}
    assert sum(flipped) == emu.stats.corrupted
    assert emu.stats.corrupted == pytest.approx(1500, abs=4 * (5000 * 0.3 * 0.7) ** 0.5)


def test_rate_limit_throughput_spacing_and_tail_drop() -> None:
    rate = 100_000.0  # bytes/s
    emu = DirectionEmulator(Impairment(rate_bps=rate, queue_limit=10, delay_ms=5), seed=1)
    times = [i * 0.005 for i in range(2000)]  # 1000-byte packets at 200/s = 200 kB/s offered
    out = run(emu, times, size=1000)
    deps = [t for t, _ in out]
    throughput = len(out) * 1000 / (deps[-1] - deps[0])
    assert throughput == pytest.approx(rate, rel=0.02)
    gaps = [b - a for a, b in zip(deps, deps[1:], strict=False)]
    assert min(gaps) == pytest.approx(0.01, rel=1e-6)  # one 1000-byte packet per 10 ms
    assert emu.stats.dropped_queue == pytest.approx(1000, rel=0.05)
    assert max(delays(out, times)) <= 5 + 10 * 10 + 1e-6  # queue wait bounded by the limit


def test_rate_limit_under_capacity_adds_only_serialisation() -> None:
    emu = DirectionEmulator(Impairment(rate_bps=1_000_000), seed=1)
    times = [i * 0.01 for i in range(100)]
    d = delays(run(emu, times, size=1000), times)
    assert d == pytest.approx([1.0] * 100)
    assert emu.stats.dropped_queue == 0


def test_down_drops_in_flight_and_new_packets_until_up() -> None:
    emu = DirectionEmulator(Impairment(delay_ms=100), seed=1)
    emu.submit(b"early", 0.0)
    emu.submit(b"in-flight", 0.05)
    emu.down(now=0.1)  # "early" departed at 0.1 exactly: it made it out before the cut
    assert emu.is_down
    emu.submit(b"during", 0.12)
    assert emu.pop_due(1.0) == [b"early"]
    assert emu.stats.dropped_down == 2
    emu.up()
    emu.submit(b"after", 1.0)
    assert emu.pop_due(1.1) == [b"after"]


def test_set_changes_delay_and_rejects_bad_values_naming_the_field() -> None:
    emu = DirectionEmulator(Impairment(delay_ms=10), seed=1)
    emu.set(delay_ms=30, loss=0.0)
    emu.submit(b"x", 0.0)
    assert emu.next_time() == pytest.approx(0.03)
    with pytest.raises(ValueError, match="loss"):
        emu.set(loss=1.5)
    with pytest.raises(ValueError, match="delay_msec"):
        emu.set(delay_msec=1)
    emu.revert("delay_ms")
    assert emu.impairment.delay_ms == 10


def test_gilbert_elliott_without_recovery_is_rejected() -> None:
    with pytest.raises(ValueError, match="ge_r"):
        Impairment(ge_p=0.1)


def test_same_seed_same_run_other_seed_differs() -> None:
    imp = Impairment(delay_ms=40, jitter_ms=4, loss=0.05, duplicate=0.05, corrupt=0.05, reorder=0.02)
    times = [i * 0.001 for i in range(3000)]
    first = run(DirectionEmulator(imp, seed=42), times)
    assert run(DirectionEmulator(imp, seed=42), times) == first
    assert run(DirectionEmulator(imp, seed=43), times) != first


impairments = st.builds(
    Impairment,
    delay_ms=st.floats(0, 200),
    jitter_ms=st.floats(0, 50),
    jitter_dist=st.sampled_from(["normal", "pareto"]),
    loss=st.floats(0, 1),
    duplicate=st.floats(0, 1),
    rate_bps=st.none() | st.floats(1_000, 1e7),
    queue_limit=st.integers(1, 50),
)


@settings(max_examples=60, deadline=None)
@given(imp=impairments, gaps=st.lists(st.floats(0, 0.05), min_size=1, max_size=200), seed=st.integers(0, 2**32))
def test_without_reorder_order_is_kept_and_every_packet_is_accounted(
    imp: Impairment, gaps: list[float], seed: int
) -> None:
    times, t = [], 0.0
    for g in gaps:
        t += g
        times.append(t)
    emu = DirectionEmulator(imp, seed=seed)
    out = run(emu, times)
    ids = [index(p) for _, p in out]
    assert ids == sorted(ids)
    assert all(dep >= times[index(p)] for dep, p in out)  # never before it was sent
    s = emu.stats
    assert s.submitted == len(times)
    assert s.in_flight == 0 and s.delivered == len(out)
