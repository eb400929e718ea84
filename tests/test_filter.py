from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import sosfilt

from beatwise.dsp.filter import Bandpass, as_samples
from tests.contracts import CHUNKINGS, chunk_sizes, split


def _run(chunks):
    f = Bandpass()
    return np.concatenate([f.push(c) for c in chunks])


@pytest.mark.parametrize("kind", CHUNKINGS)
def test_chunk_invariance_on_real_record(record, kind):
    x = record("mitdb", "208").signal[:60_000]
    whole = _run([x])
    assert np.array_equal(_run(split(x, chunk_sizes(kind, len(x)))), whole)


def test_matches_scipy_sosfilt_with_steady_start():
    x = np.random.default_rng(1).standard_normal(5000) + 3.0
    f = Bandpass()
    y = f.push(x)
    ref, _ = sosfilt(f.sos, x, zi=f._zi_unit * x[0])
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12)


def test_steady_start_does_not_ring_on_offset():
    # A record that starts at +2 mV DC must not produce a start-up transient.
    y = Bandpass().push(np.full(3600, 2.0))
    assert np.abs(y).max() < 1e-9


def test_passband_and_stopband():
    fs = 360.0
    t = np.arange(int(20 * fs)) / fs
    # second-order edges: -3 dB at the cut-offs, about -21 dB at 100 Hz, -20 dB at 0.05 Hz
    for hz, lo, hi in ((10.0, 0.9, 1.1), (0.05, 0.0, 0.1), (100.0, 0.0, 0.1)):
        y = Bandpass().push(np.sin(2 * np.pi * hz * t))
        gain = np.abs(y[-int(5 * fs) :]).max()
        assert lo <= gain <= hi, (hz, gain)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 3)), "1-D"),
        (np.array([0.0, np.nan]), "non-finite"),
        (np.array([np.inf]), "non-finite"),
        (np.array([1.0, -np.inf, np.inf, 2.0]), "non-finite.*index 1"),
    ],
)
def test_bad_chunks_are_refused_and_state_kept(bad, match):
    x = np.random.default_rng(2).standard_normal(1000)
    f, ref = Bandpass(), Bandpass()
    a = f.push(x[:500])
    with pytest.raises(ValueError, match=match):
        f.push(bad)
    # The refused chunk left no trace: the stream goes on as if it never came.
    assert np.array_equal(np.concatenate([a, f.push(x[500:])]), ref.push(x))


def test_bad_band_is_refused():
    with pytest.raises(ValueError, match="low_hz"):
        Bandpass(low_hz=50.0, high_hz=40.0)


def test_huge_finite_samples_are_accepted():
    """The finite check is per sample: values whose sum overflows are still finite."""
    x = np.full(4, 1e308)
    assert np.array_equal(as_samples(x), x)
