"""One-to-one matching of detected beats to reference beats within a tolerance."""

from __future__ import annotations

import numpy as np

__all__ = ["match_beats"]


def match_beats(
    detected: np.ndarray, reference: np.ndarray, *, tolerance: int
) -> tuple[np.ndarray, np.ndarray]:
    """Match detected beats to reference beats one-to-one, nearest pairs first.

    Args:
        detected: Detected beat sample indices, increasing.
        reference: Reference beat sample indices, increasing.
        tolerance: Largest allowed distance in samples (inclusive), e.g. 54 for 150 ms
            at 360 Hz.

    Returns:
        ``(det_to_ref, ref_to_det)``: for each detected beat the index of its reference beat
        (-1 when unmatched: a false positive), and for each reference beat the index of its
        detection (-1 when missed: a false negative).
    """
    detected = np.asarray(detected, dtype=np.int64)
    reference = np.asarray(reference, dtype=np.int64)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 samples, got {tolerance}.")
    for name, arr in (("detected", detected), ("reference", reference)):
        if arr.ndim != 1 or (len(arr) > 1 and np.any(np.diff(arr) < 0)):
            raise ValueError(f"{name} must be a 1-D increasing array of sample indices.")
    det_to_ref = np.full(len(detected), -1, dtype=np.int64)
    ref_to_det = np.full(len(reference), -1, dtype=np.int64)
    if len(detected) == 0 or len(reference) == 0:
        return det_to_ref, ref_to_det
    # Candidate pairs: each detection with the references within tolerance.
    lo = np.searchsorted(reference, detected - tolerance, side="left")
    hi = np.searchsorted(reference, detected + tolerance, side="right")
    counts = hi - lo
    di = np.repeat(np.arange(len(detected)), counts)
    ri = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)]) if counts.sum() else di
    dist = np.abs(detected[di] - reference[ri])
    # Nearest pairs first; ties broken by time so the result is deterministic.
    order = np.lexsort((ri, di, dist))
    for k in order:
        d, r = di[k], ri[k]
        if det_to_ref[d] < 0 and ref_to_det[r] < 0:
            det_to_ref[d] = r
            ref_to_det[r] = d
    return det_to_ref, ref_to_det
