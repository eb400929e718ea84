"""Causal streaming Butterworth bandpass (second-order sections, state carried)."""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy.signal import butter, sosfilt_zi

__all__ = ["Bandpass", "as_samples", "sosfilt_step"]


def as_samples(chunk, *, name: str = "chunk") -> np.ndarray:
    """Check a chunk of ECG samples (mV) and return it as a 1-D float64 array.

    Raises:
        ValueError: when the chunk is not 1-D or holds non-finite values.
    """
    x = np.asarray(chunk, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of samples in mV, got shape {x.shape!r}.")
    if not _all_finite(x):
        i = int(np.argmax(~np.isfinite(x)))
        raise ValueError(
            f"{name} holds a non-finite sample ({x[i]!r} at index {i}); expected finite mV values."
        )
    return x


@njit(cache=True)
def _all_finite(x: np.ndarray) -> bool:
    """Whether no sample is NaN or infinite (a tenth of numpy's ``isfinite().all()`` on a live
    chunk: every stage checks its chunk, so this runs several times per chunk and bed)."""
    for v in x:
        if not np.isfinite(v):
            return False
    return True


@njit(cache=True, inline="always")
def sosfilt_step(sos, zi, x):
    """One sample through second-order sections, transposed direct form II (as scipy)."""
    for s in range(sos.shape[0]):
        y = sos[s, 0] * x + zi[s, 0]
        zi[s, 0] = sos[s, 1] * x - sos[s, 4] * y + zi[s, 1]
        zi[s, 1] = sos[s, 2] * x - sos[s, 5] * y
        x = y
    return x


@njit(cache=True)
def _sosfilt(sos, zi, x, y):
    for i in range(x.shape[0]):
        y[i] = sosfilt_step(sos, zi, x[i])


class Bandpass:
    """Causal Butterworth bandpass, pushed chunk by chunk.

    Any chunking of a signal gives bit-identical output to one call on the whole signal
    (the state is carried, never recomputed). The state starts at the steady state of the
    first sample (``sosfilt_zi``), so a record that begins off zero does not ring.

    Args:
        fs: Sampling rate in Hz. Default 360.
        low_hz: Lower cut-off in Hz. Default 0.5 (baseline wander).
        high_hz: Upper cut-off in Hz. Default 40 (mains and muscle noise).
        order: Butterworth order of each edge (the bandpass has twice this). Default 2.
    """

    def __init__(
        self, *, fs: float = 360.0, low_hz: float = 0.5, high_hz: float = 40.0, order: int = 2
    ) -> None:
        if not 0 < low_hz < high_hz < fs / 2:
            raise ValueError(
                f"band must satisfy 0 < low_hz < high_hz < fs/2 = {fs / 2}; "
                f"got low_hz={low_hz}, high_hz={high_hz}."
            )
        self.fs = fs
        self.low_hz = low_hz
        self.high_hz = high_hz
        self.order = order
        self.sos = butter(order, [low_hz, high_hz], btype="bandpass", output="sos", fs=fs)
        self._zi_unit = sosfilt_zi(self.sos)
        self._reset()

    def _reset(self) -> None:
        self._zi = np.zeros_like(self._zi_unit)
        self.n_samples = 0

    def push(self, chunk) -> np.ndarray:
        """Filter the next chunk (mV); return the filtered samples (mV), same length."""
        x = as_samples(chunk)
        y = np.empty_like(x)
        if len(x) == 0:
            return y
        if self.n_samples == 0:
            self._zi = self._zi_unit * x[0]
        _sosfilt(self.sos, self._zi, x, y)
        self.n_samples += len(x)
        return y
