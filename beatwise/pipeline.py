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

__all__ = ["GAP_RAMP", "WINDOW_AFTER", "WINDOW_BEFORE", "BeatPipeline", "bridge"]

#: Window samples before the R peak (at 360 Hz).
WINDOW_BEFORE = 100
#: Window samples from the R peak on (at 360 Hz).
WINDOW_AFTER = 180
#: Samples over which a gap's bridge ramps to the data that resumes (0.25 s).
GAP_RAMP = FS // 4


def bridge(missing: int, last: float, toward: float | None = None) -> np.ndarray:
    """Samples standing in for ``missing`` raw samples that never came, so the sample clock
    -- and every later R-peak index -- stays true (mark them with
    :meth:`BeatPipeline.mark_gap`).

    Flat at ``last`` (the last sample before the gap), then, when the first sample after
    the gap is known (``toward``), a ramp to it over the last :data:`GAP_RAMP` samples: a
    step there reads as a QRS complex (12 mitdb records, 240 gaps of 3 s, measured when the
    ramp came in: 17 false beats in the second after the gap with a step, 9 with the ramp;
    ``beatwise bench gaps`` measures the ramp today).
    """
    x = np.full(max(int(missing), 0), last, np.float32)
    if toward is not None and len(x):
        k = min(GAP_RAMP, len(x))
        x[len(x) - k :] = np.linspace(last, toward, k + 2)[1:-1]
    return x


class BeatPipeline:
    """Raw ECG (mV, 360 Hz) in, beats (windows + RR context) out, chunk by chunk.

    Args:
        fs: Sampling rate in Hz; the pipeline is defined at 360 Hz (resample first, as
            :func:`beatwise.records.load_record` does).
        template: Give each beat its running template, for models that take it
            (:attr:`beatwise.model.infer.Classifier.takes_template`). Default False.
    """

    def __init__(self, *, fs: float = FS, template: bool = False) -> None:
        if fs != FS:
            raise ValueError(f"fs must be {FS} Hz (resample the record first); got {fs}.")
        self.fs = fs
        self.template = template
        self._reset()

    def _reset(self) -> None:
        self.filter = Bandpass(fs=self.fs)
        self.detector = OnlinePanTompkins(fs=self.fs)
        self.assembler = BeatAssembler(
            fs=self.fs,
            before=WINDOW_BEFORE,
            after=WINDOW_AFTER,
            max_delay=self.detector.max_delay + self.detector._learn,
            template=self.template,
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
        measured across them, and a T wave left by a QRS lost in them is not taken for a
        beat (:meth:`BeatAssembler.mark_gap`, :meth:`OnlinePanTompkins.mark_gap`)."""
        self.assembler.mark_gap(start, stop)  # checks first: a refused gap marks nothing
        self.detector.mark_gap(start, stop)

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
