"""The one beat pipeline: causal bandpass -> online Pan-Tompkins -> beat assembler, with
the signal-quality monitor beside them on the raw samples.

The dataset builder, the evaluator and the live consumer all cut beats with this class, so
the model is trained on exactly the beats it will be served.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from beatwise.dsp.beats import BeatAssembler, Beats
from beatwise.dsp.detector import OnlinePanTompkins
from beatwise.dsp.filter import Bandpass, as_samples
from beatwise.quality import SignalQuality
from beatwise.records import FS
from beatwise.rhythm import Alert

__all__ = [
    "GAP_RAMP",
    "RAIL_SAMPLES",
    "SETTLE_S",
    "STEP_MV",
    "WINDOW_AFTER",
    "WINDOW_BEFORE",
    "BeatPipeline",
    "bridge",
]

#: Window samples before the R peak (at 360 Hz).
WINDOW_BEFORE = 100
#: Window samples from the R peak on (at 360 Hz).
WINDOW_AFTER = 180
#: Samples over which a gap's bridge ramps to the data that resumes (0.25 s).
GAP_RAMP = FS // 4
#: A change of the raw signal from one sample to the next above this (mV) is a step, no ECG
#: (1.6 times the fastest in the 126 records: 0.96 mV, svdb 880 resampled to 360 Hz).
STEP_MV = 1.5
#: Samples that must stay flat after a step for it to be a step into a rail (22 ms).
RAIL_SAMPLES = 8
#: Seconds after a flat stretch in which no beat is taken: the bandpass swings over 0.5 mV
#: for 1.2 s after a 5-mV step out of a rail.
SETTLE_S = 1.5


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
    a 5-s lead off: 9 false SVPBs with the shipped model). And beats around it are not
    taken (:meth:`BeatAssembler.blank`), as the steps into and out of it are no ECG:

    * from one quality block (0.25 s) before it: even a small step into a flat stretch
      reads as a QRS (mitdb 100, a 0.3-mV step: a false PVC);
    * to :data:`SETTLE_S` after it: the bandpass rings after the step out of a rail, and the
      model called the first beats V (mitdb 208, a 5-mV rail: a false V-tach);
    * and, for a step into a rail (over :data:`STEP_MV` from one sample to the next, then
      :data:`RAIL_SAMPLES` flat), the beats whose window holds it and the step itself,
      decided as soon as those samples are in, so also when the stream ends before the
      stretch is (a 5-mV step at the end of a window made a V beat and a false ventricular
      run); one whose window's last few samples hold the step may be out already;
    * for a step out of a flat stretch too short for a lead off (over :data:`STEP_MV`
      after :data:`RAIL_SAMPLES` flat: an electrode pop), the beats whose window holds it,
      and :data:`SETTLE_S` after it (mitdb 208, a 0.7-s rail: a false V-tach).

    Around a rail those beats hold no ECG (:attr:`no_ecg`): no RR is measured across them,
    and the rhythm rules take them as the signal off -- a dropped beat's RR read as a pause
    (mitdb 100, a 0.7-s rail), the blanked seconds as an asystole.

    A data gap's fill is flat too, but has no step (flat at the last sample, then a ramp to
    the data): a stretch whose first second overlaps a marked gap, or an end inside one, is
    not blanked (nor is it a lead off: :meth:`SignalQuality.mark_gap`). Every decision falls
    on a sample (a stretch's start ``flat_s`` in, its end one block after the signal moved),
    before any beat it concerns is out but for the one above; the assembler takes each chunk
    in pieces cut at those samples, so any chunking gives the same beats. A beat out before a
    stretch was decided keeps its RR (the last beat before a long lead off: post-RR capped at
    3 s, as before a real pause). The fastest change in the 126 records is 0.96 mV per sample
    and none holds a flat stretch, so the dataset is cut as before.

    The quality alerts (``lead_off``, ``noisy_signal``) decided during the last :meth:`push`
    are in :attr:`alerts`.

    Args:
        fs: Sampling rate in Hz; the pipeline is defined at 360 Hz (resample first, as
            :func:`beatwise.records.load_record` does).
        template: Give each beat its running template, for models that take it
            (:attr:`beatwise.model.infer.Classifier.takes_template`). Default False.
        noise_phase: :class:`~beatwise.quality.SignalQuality`'s (spreads the work of beds
            started together; changes no output). Default 0.
    """

    def __init__(self, *, fs: float = FS, template: bool = False, noise_phase: int = 0) -> None:
        if fs != FS:
            raise ValueError(f"fs must be {FS} Hz (resample the record first); got {fs}.")
        self.fs = fs
        self.template = template
        self.noise_phase = noise_phase
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
        self.quality = SignalQuality(fs=self.fs, noise_phase=self.noise_phase)
        #: Quality alerts decided during the last push.
        self.alerts: list[Alert] = []
        #: Stretches without ECG decided during the last push, ``(start, stop)``: the beats
        #: dropped around a step into or out of a rail. No RR is measured across them, and
        #: the rhythm rules take them as the signal off (:class:`beatwise.bedside.Bedside`).
        self.no_ecg: list[tuple[int, int]] = []
        self._flat_from, self._flat_real = 0, True  # where the open flat stretch began, in data
        self._tail = np.zeros(0)  # the last raw samples: a step's look-back and look-ahead
        self._rail_next = 1  # the first sample whose step into a rail is not judged yet
        self._rail_out_next = 0  # ... whose step out of a flat stretch is not judged yet

    @property
    def n_samples(self) -> int:
        """Samples pushed so far."""
        return self.filter.n_samples

    def push(self, chunk) -> Beats:
        """Push raw samples (mV); return the beats completed meanwhile."""
        x = as_samples(chunk)
        xf = self.filter.push(x)
        n0 = self.n_samples - len(xf)
        self.alerts = self.quality.push(x)
        self.no_ecg = []
        peaks, confirmed = self.detector.push_timed(xf)
        # Decisions, at the sample they are taken: (decided at, flat edge or step sample).
        events = [
            (self.quality.decided_at(at, flat), "flat" if flat else "live", at)
            for at, flat in self.quality.flat_edges
        ]
        events += self._rails(x, n0)
        parts, done = [], 0
        for decided, what, at in sorted(events):
            cut = decided - n0
            parts.append(self._assemble(xf, peaks, confirmed, n0, done, cut))
            done = cut
            self._decide(what, at)
        parts.append(self._assemble(xf, peaks, confirmed, n0, done, len(xf)))
        return parts[0] if len(parts) == 1 else Beats.concat(parts, self.assembler.width)

    def _decide(self, what: str, at: int) -> None:
        """Apply one decision (see the class doc) to the assembler, at the sample it is taken:
        ``"rail"`` (a step into a rail at ``at``), ``"flat"`` / ``"live"`` (a flat stretch
        begins / ends at ``at``)."""
        b, settle = self.quality.block_samples, int(SETTLE_S * self.fs)
        if what == "rail":  # the beats whose window holds the step, and the step itself
            self.assembler.blank(at - WINDOW_AFTER + 1, at + b)
            # ... and no RR across them: a rail too short for a lead off (an electrode pop)
            # dropped a beat, and the RR over it and the rail read as a pause
            self.no_ecg += self._cut_rr(at - WINDOW_AFTER + 1, at + b)
        elif what == "rail_out":  # the step out of a flat stretch too short for a lead off
            self.assembler.blank(at - WINDOW_AFTER + 1, at + settle)
            self.no_ecg += self._cut_rr(at - WINDOW_AFTER + 1, at + settle)
        elif what == "flat":  # a fill's first second overlaps its marked gap
            real = not self.quality.filled(at, self.quality.decided_at(at, True))
            self._flat_from, self._flat_real = at, real
            if real:
                self.assembler.blank(at - b)  # open until the end is decided
        else:
            real = not self.quality.filled(at, at + 1)
            if self._flat_real:
                self.assembler.blank(self._flat_from - b, at + settle if real else at)
            elif real:
                self.assembler.blank(at, at + settle)
            self._cut_rr(self._flat_from, at)

    def _cut_rr(self, start: int, stop: int) -> list[tuple[int, int]]:
        """No RR context across ``start..stop-1``, from after the last beat out on; the
        stretch marked, if any is left."""
        floor = self.assembler.last_emitted
        start = max(start, 0 if floor is None else floor + 1)
        if start >= stop:
            return []
        self.assembler.mark_gap(start, stop)
        return [(start, stop)]

    def _rails(self, raw: np.ndarray, n0: int) -> list[tuple[int, str, int]]:
        """Steps into and out of a rail judged with this chunk: ``(decided at, "rail",
        step sample)`` for each sample ``k`` over :data:`STEP_MV` from the one before, with
        ``k`` to ``k + RAIL_SAMPLES - 1`` flat, judged once those are in; ``(k, "rail_out",
        k)`` for one with the :data:`RAIL_SAMPLES` before ``k`` flat. Heavy noise jumps as
        far, but does not stay flat."""
        z = np.concatenate((self._tail, raw))
        z0 = n0 - len(self._tail)  # global index of z[0]
        n = n0 + len(raw)
        out = []
        flat_mv = self.quality.flat_mv
        for j in _steps(z, STEP_MV).tolist():
            k = z0 + j + 1
            if self._rail_next <= k <= n - RAIL_SAMPLES:
                after = z[j + 1 : j + 1 + RAIL_SAMPLES]
                if after.max() - after.min() < flat_mv:
                    out.append((k + RAIL_SAMPLES, "rail", k))
            if k >= self._rail_out_next and j + 1 >= RAIL_SAMPLES:
                before = z[j + 1 - RAIL_SAMPLES : j + 1]
                if before.max() - before.min() < flat_mv:
                    out.append((k, "rail_out", k))
        self._rail_next = max(self._rail_next, n - RAIL_SAMPLES + 1)
        self._rail_out_next = n
        self._tail = z[-RAIL_SAMPLES:]
        return out

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
        self.quality.mark_gap(start, stop)

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


@njit(cache=True)
def _steps(z: np.ndarray, step_mv: float) -> np.ndarray:
    """Indices ``j`` where ``|z[j + 1] - z[j]| > step_mv`` (mV): candidate steps into or out
    of a rail, looked for in every chunk of every bed."""
    out = np.empty(max(len(z) - 1, 0), np.int64)
    n = 0
    for j in range(len(z) - 1):
        if abs(z[j + 1] - z[j]) > step_mv:
            out[n] = j
            n += 1
    return out[:n]
