"""The sites' fixed-memory delay percentiles agree with exact ones to within one bin."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from telesurg.apps.common import DelayHistogram, percentiles


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=-50.0, max_value=900.0, allow_nan=False), min_size=1, max_size=400))
def test_percentiles_match_the_exact_ones_within_a_bin(values: list[float]) -> None:
    hist = DelayHistogram()
    for v in values:
        hist.add(v)
    ordered = sorted(values)
    for q in (50, 99):
        exact = ordered[max(0, int(np.ceil(q / 100 * len(values))) - 1)]  # the nearest-rank percentile
        assert exact - 1e-9 <= hist.percentile(q) <= exact + DelayHistogram.FINE_STEP_MS + 1e-9
    assert hist.report()["max"] == round(max(values), 3)


def test_long_tail_and_out_of_range_delays_are_counted_and_the_max_is_exact() -> None:
    hist = DelayHistogram()
    for _ in range(98):
        hist.add(0.25)
    hist.add(2500.0)  # a stall: coarse bins
    hist.add(90_000.0)  # beyond the last bin
    hist.add(float("nan"))  # ignored
    assert hist.count == 100
    report = hist.report()
    assert 0.25 <= report["p50"] <= 0.26 and report["max"] == 90_000.0  # p50 within one 10 µs bin
    assert 2500.0 <= report["p99"] <= 2501.0
    assert DelayHistogram().report() == percentiles([])  # empty: the same zeros as before


def test_memory_does_not_grow_with_the_session() -> None:
    hist = DelayHistogram()
    before = hist._counts.nbytes
    rng = np.random.default_rng(1)
    for v in rng.normal(0.4, 0.1, 200_000):
        hist.add(float(v))
    assert hist._counts.nbytes == before < 2_000_000 and hist.count == 200_000
    assert abs(hist.percentile(50) - 0.4) < 0.02
