"""The one beat pipeline: causal bandpass -> online Pan-Tompkins -> beat assembler.

The dataset builder, the evaluator and the live consumer all cut beats with this class, so
the model is trained on exactly the beats it will be served.
"""

from __future__ import annotations

import numpy as np

from beatwise.dsp.beats import BeatAssembler, Beats
from beatwise.dsp.detector import OnlinePanTompkins
from beatwise.dsp.filter import Bandpass
from beatwise.records import FS

__all__ = ["WINDOW_AFTER", "WINDOW_BEFORE", "BeatPipeline"]

#: Window samples before the R peak (at 360 Hz).
WINDOW_BEFORE = 100
#: Window samples from the R peak on (at 360 Hz).
WINDOW_AFTER = 180


class BeatPipeline:
    """Raw ECG (mV, 360 Hz) in, beats (windows + RR context) out, chunk by chunk.

    Args:
        fs: Sampling rate in Hz; the pipeline is defined at 360 Hz (resample first, as
            :func:`beatwise.records.load_record` does).
    """

    def __init__(self, *, fs: float = FS) -> None:
        if fs != FS:
            raise ValueError(f"fs must be {FS} Hz (resample the record first); got {fs}.")
        self.fs = fs
        self._reset()

    def _reset(self) -> None:
        self.filter = Bandpass(fs=self.fs)
        self.detector = OnlinePanTompkins(fs=self.fs)
        self.assembler = BeatAssembler(
            fs=self.fs,
            before=WINDOW_BEFORE,
            after=WINDOW_AFTER,
            max_delay=self.detector.max_delay + self.detector._learn,
        )

    @property
    def n_samples(self) -> int:
        """Samples pushed so far."""
        return self.filter.n_samples

    def push(self, chunk) -> Beats:
        """Push raw samples (mV); return the beats completed meanwhile."""
        xf = self.filter.push(chunk)  # the filter checks the chunk
        peaks, confirmed = self.detector.push_timed(xf)
        return self.assembler.push(xf, peaks, confirmed)

    def mark_gap(self, start: int, stop: int) -> None:
        """Samples ``start..stop-1`` never came (bridged by the caller): no RR interval is
        measured across them (:meth:`BeatAssembler.mark_gap`)."""
        self.assembler.mark_gap(start, stop)

    def flush(self) -> Beats:
        """End of stream: return the beats still pending."""
        peaks, confirmed = self.detector.flush()
        beats = self.assembler.push(np.zeros(0), peaks, confirmed)
        rest = self.assembler.flush()
        return Beats.concat([beats, rest], self.assembler.width)

    def run(self, signal) -> Beats:
        """Whole signal in one go (push + flush) on a fresh state."""
        self._reset()
        return Beats.concat([self.push(signal), self.flush()], self.assembler.width)
