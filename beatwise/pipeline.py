"""The one beat pipeline: causal bandpass -> online Pan-Tompkins -> beat assembler, with
the signal-quality monitor beside them on the raw samples.

The dataset builder, the evaluator and the live consumer all cut beats with this class, so
the model is trained on exactly the beats it will be served.
"""

from __future__ import annotations

import numpy as np

from beatwise.dsp.beats import BeatAssembler, Beats
from beatwise.dsp.detector import OnlinePanTompkins
from beatwise.dsp.filter import Bandpass
from beatwise.quality import SignalQuality
from beatwise.records import FS
from beatwise.rhythm import Alert

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

    A flat stretch of the raw signal (a lead off and back on:
    :class:`~beatwise.quality.SignalQuality`'s ``flat_edges``) is, for the RR context, a gap
    like samples that never came (:meth:`mark_gap`): measured across it, the seconds without
    a beat inflated the local mean RR, and the next ten beats looked premature (mitdb 100,
    a 5-s lead off: 9 false SVPBs with the shipped model). And no beat is taken from one
    quality block (0.25 s) before it to one block after it (:meth:`BeatAssembler.blank`):
    the step into or out of a rail reads as a QRS, which the model called V (mitdb 100 with
    a 5-mV rail: a false ventricular run across the lead off). Its start is decided
    ``flat_s`` (1 s) in, its end one block after the signal moved, before any beat after
    them is out; the assembler takes each chunk in pieces cut at those samples, so any
    chunking gives the same beats. A beat out before the stretch was decided stays, with
    its RR (the last beat before a long lead off: post-RR capped at 3 s, as before a real
    pause). None of the 126 records holds a flat stretch: the dataset is cut as before.

    The quality alerts (``lead_off``, ``noisy_signal``) decided during the last :meth:`push`
    are in :attr:`alerts`.

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
        self.quality = SignalQuality(fs=self.fs)
        #: Quality alerts decided during the last push.
        self.alerts: list[Alert] = []
        self._flat_from, self._flat_real = 0, True  # where the open flat stretch began, in data
        self._data_gaps: list[tuple[int, int]] = []  # marked, recent: bridges are no lead off

    @property
    def n_samples(self) -> int:
        """Samples pushed so far."""
        return self.filter.n_samples

    def push(self, chunk) -> Beats:
        """Push raw samples (mV); return the beats completed meanwhile."""
        xf = self.filter.push(chunk)  # the filter checks the chunk
        n0 = self.n_samples - len(xf)
        self.alerts = self.quality.push(chunk)
        peaks, confirmed = self.detector.push_timed(xf)
        parts, done, b = [], 0, self.quality.block_samples
        for at, flat in self.quality.flat_edges:
            cut = self.quality.decided_at(at, flat) - n0
            parts.append(self._assemble(xf, peaks, confirmed, n0, done, cut))
            done = cut
            # A bridge has no step at either end (flat at the last sample, then a ramp to the
            # data): only an edge in real data is blanked.
            real = not any(a <= at < z for a, z in self._data_gaps)
            if flat:
                self._flat_from, self._flat_real = at, real
                if real:
                    self.assembler.blank(at - b)  # open until the end is decided
                continue
            if self._flat_real:
                self.assembler.blank(self._flat_from - b, at + b if real else at)
            elif real:
                self.assembler.blank(at, at + b)
            floor = self.assembler.last_emitted
            start = self._flat_from if floor is None else max(self._flat_from, floor + 1)
            if start < at:
                self.assembler.mark_gap(start, at)
        parts.append(self._assemble(xf, peaks, confirmed, n0, done, len(xf)))
        # a flat stretch still to be decided starts after this
        horizon = self.n_samples - self.quality.decided_at(0, True)
        self._data_gaps = [g for g in self._data_gaps if g[1] > horizon]
        return Beats.concat(parts, self.assembler.width)

    def _assemble(self, xf, peaks, confirmed, n0: int, a: int, b: int) -> Beats:
        """Samples ``a..b-1`` of the chunk (starting at global ``n0``) to the assembler, with
        the peaks confirmed among them."""
        if a == 0 and b == len(xf):
            return self.assembler.push(xf, peaks, confirmed)
        mine = (confirmed >= n0 + a) & (confirmed < n0 + b)
        return self.assembler.push(xf[a:b], peaks[mine], confirmed[mine])

    def mark_gap(self, start: int, stop: int) -> None:
        """Samples ``start..stop-1`` never came (bridged by the caller): no RR interval is
        measured across them, and a T wave left by a QRS lost in them is not taken for a
        beat (:meth:`BeatAssembler.mark_gap`, :meth:`OnlinePanTompkins.mark_gap`)."""
        self.assembler.mark_gap(start, stop)  # checks first: a refused gap marks nothing
        self.detector.mark_gap(start, stop)
        self._data_gaps.append((int(start), int(stop)))

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
