"""Tremor filter figures measured on sampled sine waves through the runtime filter class."""

from __future__ import annotations

import numpy as np
import pytest

from telesurg.console.config import TremorFilterConfig
from telesurg.console.tremor import TremorFilter, measure_filter


@pytest.fixture(scope="module")
def figures():
    return measure_filter(TremorFilterConfig(), rate_hz=1000.0)


def test_attenuates_physiological_tremor_band(figures):
    for freq in (8.0, 10.0, 12.0):
        assert figures.attenuation_db[freq] >= 20.0, (freq, figures.attenuation_db)


def test_adds_little_lag_to_voluntary_motion(figures):
    for freq in (0.5, 1.0, 2.0):
        assert 0.0 < figures.lag_ms[freq] <= 16.0, (freq, figures.lag_ms)
        assert abs(figures.gain_db[freq]) < 0.2


def test_measurement_detects_a_weak_filter():
    """The measurement is not a rubber stamp: a shallow, narrow design fails the 20 dB target."""
    weak = measure_filter(TremorFilterConfig(order=1, stopband_attenuation_db=6.0, passband_ripple_db=3.0),
                          stop_freqs=(8.0,), pass_freqs=(1.0,))
    assert weak.attenuation_db[8.0] < 20.0


def test_held_master_gives_exactly_held_output_and_tremor_is_removed():
    rate = 1000.0
    f = TremorFilter(TremorFilterConfig(), rate)
    hold = np.array([0.01, -0.02, 0.3])
    for _ in range(200):
        out = f.step(hold)
    np.testing.assert_allclose(out, hold, atol=1e-12)
    # slow voluntary motion + 10 Hz, 0.5 mm tremor: residual tremor after settling is < 10 %
    t = np.arange(8000) / rate
    voluntary = 0.02 * np.sin(2 * np.pi * 0.5 * t)
    tremor = 0.0005 * np.sin(2 * np.pi * 10.0 * t)
    f = TremorFilter(TremorFilterConfig(), rate, width=1)
    out = np.array([f.step(np.array([v]))[0] for v in voluntary + tremor])
    lagged = 0.02 * np.sin(2 * np.pi * 0.5 * (t - 0.0146))
    residual = out[4000:] - lagged[4000:]
    assert np.sqrt(np.mean(residual**2)) < 0.1 * 0.0005 / np.sqrt(2)


def test_disabled_filter_is_identity():
    f = TremorFilter(TremorFilterConfig(enabled=False), 1000.0)
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(f.step(x), x)


def test_float_step_equals_array_step():
    """The console's float path gives exactly the array path's samples."""
    config = TremorFilterConfig()
    a, b = TremorFilter(config, 1000.0), TremorFilter(config, 1000.0)
    rng = np.random.default_rng(2)
    for x in np.cumsum(rng.normal(0, 1e-3, (500, 3)), axis=0):
        assert a.step(x).tolist() == b.step_floats(tuple(x))
