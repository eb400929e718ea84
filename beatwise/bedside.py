"""One bed: beat pipeline + classifier output + rhythm rules + signal quality, and the offline
runner.

:class:`Bedside` is what the live consumer runs per bed and what :func:`run_offline` runs over
a whole record, so the stream and the offline answer come from the very same objects. The
classifier is kept outside: the consumer batches the beats of all beds into one
``predict`` call, then hands each bed its rows back (:meth:`Bedside.accept`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from beatwise.classes import CLASSES
from beatwise.dsp.beats import Beats
from beatwise.pipeline import BeatPipeline
from beatwise.quality import SignalQuality
from beatwise.rhythm import Alert, RhythmMonitor

__all__ = [
    "Bedside",
    "Classifier",
    "OfflineResult",
    "RuleClassifier",
    "beat_record",
    "decision_delay_s",
    "run_offline",
    "takes_template",
    "warm_up",
]


class Classifier(Protocol):
    """What the consumer needs of a model: ``predict(beats) -> (n, 6)`` probabilities in
    :data:`beatwise.classes.CLASSES` order (``beatwise.model.infer.Classifier`` fits)."""

    def predict(self, beats: Beats) -> np.ndarray: ...


class RuleClassifier:
    """A deterministic stand-in for the model (tests, demos without a trained model).

    Labels from the RR context only: premature (pre-RR < ``premature`` x local mean RR)
    with a compensatory pause (post-RR > ``compensatory`` x local mean) -> V; premature
    without one -> A; else N. Row-wise, so batching never changes an answer.

    Args:
        premature: Pre-RR / local-mean-RR ratio under which a beat is premature. Default 0.85.
        compensatory: Post-RR / local-mean-RR ratio over which a pause is compensatory.
            Default 1.10.
    """

    def __init__(self, *, premature: float = 0.85, compensatory: float = 1.10) -> None:
        self.premature = premature
        self.compensatory = compensatory

    def predict(self, beats: Beats) -> np.ndarray:
        rr = np.asarray(beats.rr, dtype=np.float64).reshape(-1, 3)
        pre, post, local = rr[:, 0], rr[:, 1], np.maximum(rr[:, 2], 1e-3)
        early = pre < self.premature * local
        v = early & (post > self.compensatory * local)
        a = early & ~v
        out = np.full((len(rr), len(CLASSES)), 0.02, np.float32)
        idx = np.where(v, CLASSES.index("V"), np.where(a, CLASSES.index("A"), CLASSES.index("N")))
        out[np.arange(len(rr)), idx] = 0.9
        return out


def decision_delay_s(pipeline: BeatPipeline) -> float:
    """Longest time (s) after an R peak until ``pipeline`` has emitted that beat.

    A peak is confirmed within ``detector.max_delay`` samples; the assembler then waits up
    to ``max_post_rr_s`` for the next beat. A quarter second of margin on top.
    """
    a = pipeline.assembler
    return max(a.max_post_rr_s, pipeline.detector.max_delay / pipeline.fs, a.after / a.fs) + 0.25


def beat_record(sample: int, probs: np.ndarray, rr: np.ndarray, *, fs: float = 360.0) -> dict:
    """The JSON-safe description of one classified beat (the ``beat.<bed>`` message body).

    Args:
        sample: R-peak sample (stream index, 360 Hz).
        probs: Its six class probabilities.
        rr: Its RR context in seconds (pre-RR, post-RR, local mean RR).
        fs: Sampling rate, Hz. Default 360.
    """
    # Python floats and ints throughout: round() of a numpy scalar costs several times more,
    # and a live round formats every beat of every bed before the last one is published.
    p = np.asarray(probs, dtype=np.float64)
    rr_s = np.asarray(rr, dtype=np.float64).tolist()
    sample = int(sample)
    local = rr_s[2]
    return {
        "sample": sample,
        "time_s": round(sample / fs, 4),
        "class": CLASSES[int(p.argmax())],
        "probs": [round(x, 6) for x in p.tolist()],
        "rr_s": [round(x, 4) for x in rr_s],
        "hr_bpm": round(60.0 / local, 1) if local > 0 else None,
    }


def _edge_order(edge: tuple[int, bool]) -> tuple[int, bool]:
    """Sort key of a no-ECG edge ``(sample, onset)``: by sample, an onset first."""
    return edge[0], not edge[1]


class Bedside:
    """Pipeline + rhythm rules + signal quality of one bed.

    Call :meth:`push` with each chunk (mV, 360 Hz), classify the returned beats (alone or
    batched with other beds), then :meth:`accept` them with their probabilities; at the end
    :meth:`flush`, classify, :meth:`accept`, then :meth:`finish`.

    The pipeline's :class:`~beatwise.quality.SignalQuality` monitor watches the raw chunks;
    its alerts (``lead_off``, ``noisy_signal``) come out of :meth:`accept` after the rhythm
    alerts, and its flat stretches (and the pipeline's stretches without ECG around a rail,
    :attr:`BeatPipeline.no_ecg`) reach the rhythm rules in sample order with the beats, so
    a flat line never reads as asystole (:meth:`~beatwise.rhythm.RhythmMonitor.signal_off`).
    A beat is emitted up to ``decision_delay_s`` after its R peak, so the edge of a flat
    stretch waits until a later beat has come or no earlier one can come any more; the flat
    stretch is decided within ``flat_s`` (1 s), well before the asystole it cancels could be
    declared (4 s + ``decision_delay_s``). Hence any chunking gives the same alerts here too
    (short of a beat found inside the first second of a flat stretch and emitted before that
    second is over, which needs two detections in a flat signal).

    Args:
        fs: Sampling rate, Hz. Default 360.
        template: Cut beats with their running template (for a classifier that
            :func:`takes_template`). Default False.
        noise_phase: The signal quality's (:class:`~beatwise.quality.SignalQuality`): the
            consumer gives its beds different phases so that beds started together do not
            all judge their noise windows in the same round. Changes no output. Default 0.
    """

    def __init__(self, *, fs: float = 360.0, template: bool = False, noise_phase: int = 0) -> None:
        self.fs = fs
        self.template = template
        self.noise_phase = noise_phase
        self._reset()

    def _reset(self) -> None:
        self.pipeline = BeatPipeline(
            fs=self.fs, template=self.template, noise_phase=self.noise_phase
        )
        # the assembler's max_delay includes the detector's learning phase
        learn = self.pipeline.assembler.max_delay - self.pipeline.detector.max_delay
        self.rhythm = RhythmMonitor(
            fs=self.fs,
            decision_delay_s=decision_delay_s(self.pipeline),
            start_delay_s=max(learn, 0) / self.fs,
        )
        self.counts = dict.fromkeys(CLASSES, 0)
        self._quality_alerts: list[Alert] = []  # decided, not yet out of accept
        # Edges of stretches without ECG (flat, or around a rail), decided, not yet given to
        # the rhythm rules; how many such stretches are open there.
        self._off_edges: list[tuple[int, bool]] = []
        self._off_depth = 0
        # Beats before sample e have all been emitted once the clock reaches
        # max(e, end of the detector's learning phase) + the pipeline's decision delay.
        self._learn = max(learn, 0)
        self._emit_delay = int(round(self.rhythm.decision_delay_s * self.fs))

    @property
    def n_samples(self) -> int:
        return self.pipeline.n_samples

    @property
    def quality(self) -> SignalQuality:
        """The signal-quality monitor (the pipeline's: its flat stretches also cut the RR
        context)."""
        return self.pipeline.quality

    def push(self, chunk) -> Beats:
        """Raw samples (mV) in; beats waiting for classification out."""
        beats = self.pipeline.push(chunk)  # checks the chunk first
        self._quality_alerts += self.pipeline.alerts
        # In sample order, an onset before an end at the same sample; nothing to do (no
        # copy, no list) on the chunks that decide no edge, nearly all of them.
        for edge in self.quality.flat_edges:
            bisect.insort(self._off_edges, edge, key=_edge_order)
        for start, stop in self.pipeline.no_ecg:  # around a rail: no ECG, as if flat
            bisect.insort(self._off_edges, (start, True), key=_edge_order)
            bisect.insort(self._off_edges, (stop, False), key=_edge_order)
        return beats

    def mark_gap(self, start: int, stop: int) -> None:
        """Samples ``start..stop-1`` never came (the consumer bridges them flat): neither the
        beats' RR context (:meth:`BeatPipeline.mark_gap`) nor the heart rate of the rhythm
        rules (:meth:`RhythmMonitor.mark_gap`) is measured across them."""
        self.pipeline.mark_gap(start, stop)  # checks first: a refused gap marks nothing
        self.rhythm.mark_gap(start, stop)

    def flush(self) -> Beats:
        """End of stream: the beats still pending."""
        return self.pipeline.flush()

    def accept(self, beats: Beats, probs: np.ndarray) -> tuple[list[dict], list[Alert]]:
        """Classified beats -> beat records and alerts; then advance the rhythm clock to the
        samples pushed so far."""
        probs = np.asarray(probs).reshape(len(beats), len(CLASSES))
        records = [
            beat_record(s, p, r, fs=self.fs) for s, p, r in zip(beats.sample, probs, beats.rr)
        ]
        for rec in records:
            self.counts[rec["class"]] += 1
        alerts = self._to_rhythm(beats.sample, [r["class"] for r in records], self.n_samples)
        alerts += self.rhythm.advance(self.n_samples)
        alerts += self._quality_alerts
        self._quality_alerts = []
        return records, alerts

    def finish(self) -> list[Alert]:
        """After the last :meth:`accept`: close what is still open."""
        alerts = self._to_rhythm(np.zeros(0, np.int64), [], None) + self._quality_alerts
        self._quality_alerts = []
        # A lead still off at the end stays off for the rhythm rules: no asystole from it.
        alerts += self.quality.finish(self.n_samples)
        return alerts + self.rhythm.finish(self.n_samples)

    def _to_rhythm(self, samples: np.ndarray, labels: list[str], clock: int | None) -> list[Alert]:
        """Beats and flat-stretch edges to the rhythm rules in sample order (a beat at an
        edge's sample after it). An edge goes once a beat after it has come, or once the
        ``clock`` says no beat before it can still come (``None``: end of stream)."""
        out: list[Alert] = []
        done = 0
        while self._off_edges:
            at, flat = self._off_edges[0]
            upto = int(np.searchsorted(samples, at))
            if upto == len(samples) and clock is not None:
                if clock < max(at, self._learn) + self._emit_delay:
                    break
            if upto > done:
                out += self.rhythm.push(samples[done:upto], labels[done:upto])
                done = upto
            # stretches without ECG may overlap (a rail's steps inside a lead off)
            self._off_depth += 1 if flat else -1
            if flat and self._off_depth == 1:
                out += self.rhythm.signal_off(at)
            elif not flat and self._off_depth == 0:
                self.rhythm.signal_on(at)
            self._off_edges.pop(0)
        return out + self.rhythm.push(samples[done:], labels[done:])


@dataclass
class OfflineResult:
    """Everything a bed produced: beat records and alerts, in emission order."""

    beats: list[dict] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)


def run_offline(
    signal, classifier: Classifier, *, chunk_samples: int | None = None
) -> OfflineResult:
    """Pipeline + classifier + rhythm rules over one signal, without any socket.

    Args:
        signal: Samples in mV at 360 Hz.
        classifier: Anything with ``predict(beats) -> (n, 6)``.
        chunk_samples: Push in chunks of this many samples (default: the whole signal at
            once). Any value gives the same beats and alerts.
    """
    x = np.asarray(signal, dtype=np.float32)
    bed = Bedside(template=takes_template(classifier))
    res = OfflineResult()
    step = len(x) if not chunk_samples else int(chunk_samples)
    for i in range(0, len(x), max(step, 1)):
        beats = bed.push(x[i : i + step])
        recs, alerts = bed.accept(beats, _predict(classifier, beats))
        res.beats += recs
        res.alerts += alerts
    beats = bed.flush()
    recs, alerts = bed.accept(beats, _predict(classifier, beats))
    res.beats += recs
    res.alerts += alerts + bed.finish()
    return res


def warm_up(classifier: Classifier) -> OfflineResult:
    """Run one throwaway bed over 8 s of a synthetic ECG in 1-s chunks, its end included
    (returns what it found: beats at 75 bpm, no alerts).

    numba loads each compiled function at its first call; a live consumer calls this before
    its first message, so that cost falls neither on the first beats of a run nor on the
    first bed to end (measured: the round in which 48 beds ended took 40 ms, 7 of them
    loading the detector's flush).
    """
    t = np.arange(8 * 360) / 360.0
    x = np.zeros_like(t)
    for r in np.arange(0.4, 8.0, 0.8):  # narrow 1-mV spikes at 75 bpm
        x += np.exp(-0.5 * ((t - r) / 0.012) ** 2)
    return run_offline(x, classifier, chunk_samples=360)


def takes_template(classifier: Classifier) -> bool:
    """Whether ``classifier`` needs each beat's running template (a
    :class:`~beatwise.model.infer.Classifier` whose card says so; False for anything else)."""
    return bool(getattr(classifier, "takes_template", False))


def _predict(classifier: Classifier, beats: Beats) -> np.ndarray:
    if not len(beats):
        return np.zeros((0, len(CLASSES)), np.float32)
    return np.asarray(classifier.predict(beats), dtype=np.float32)
