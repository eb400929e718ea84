"""One-to-one matching of detected to reference beats (beatwise.eval.matching)."""

from __future__ import annotations

import numpy as np
import pytest

from beatwise.eval.matching import match_beats

TOL = 54  # samples: round(0.150 s * 360 Hz)


def _match(det, ref, tol=TOL):
    d2r, r2d = match_beats(
        np.array(det, dtype=np.int64), np.array(ref, dtype=np.int64), tolerance=tol
    )
    return d2r.tolist(), r2d.tolist()


def test_exact_hits_match_in_order():
    assert _match([100, 400, 700], [100, 400, 700]) == ([0, 1, 2], [0, 1, 2])


@pytest.mark.parametrize("offset", [54, -54])
def test_tolerance_is_inclusive(offset):
    assert _match([1000 + offset], [1000]) == ([0], [0])


@pytest.mark.parametrize("offset", [55, -55])
def test_beyond_tolerance_is_fp_and_fn(offset):
    assert _match([1000 + offset], [1000]) == ([-1], [-1])


def test_detection_between_two_references_goes_to_the_nearer():
    # 130 is 30 from 100 and 20 from 150: it matches 150; 100 is missed.
    assert _match([130], [100, 150]) == ([1], [-1, 0])
    assert _match([120], [100, 150]) == ([0], [0, -1])


def test_duplicate_detection_is_one_tp_and_one_fp():
    d2r, r2d = _match([500, 500], [500])
    assert sorted(d2r) == [-1, 0]
    assert r2d in ([0], [1])


def test_nearest_pair_wins_over_time_order():
    # Both detections are within tolerance of 140; the nearer (130, 10 away) takes it, not
    # the earlier (100, 40 away), which is left a false positive.
    assert _match([100, 130], [140]) == ([-1, 0], [1])


@pytest.mark.parametrize(
    ("det", "ref", "expected"),
    [
        ([], [], ([], [])),
        ([], [10, 20], ([], [-1, -1])),
        ([10, 20], [], ([-1, -1], [])),
    ],
)
def test_empty_inputs(det, ref, expected):
    assert _match(det, ref) == expected


def test_returns_int64_arrays():
    d2r, r2d = match_beats(np.array([5]), np.array([5]), tolerance=0)
    assert d2r.dtype == np.int64 and r2d.dtype == np.int64


@pytest.mark.parametrize(
    ("det", "ref", "name"),
    [([300, 100], [100, 300], "detected"), ([100, 300], [300, 100], "reference")],
)
def test_unsorted_input_raises_naming_it(det, ref, name):
    with pytest.raises(ValueError, match=name):
        _match(det, ref)


def test_negative_tolerance_raises():
    with pytest.raises(ValueError, match="tolerance"):
        _match([1], [1], tol=-1)
