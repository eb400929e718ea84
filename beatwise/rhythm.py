"""Rhythm and alarm rules: a chunk-free state machine over classified beats and a sample clock.

The same :class:`RhythmMonitor` runs in the offline runner and in the live consumer. Its
only inputs are the classified beats (R-peak sample, class) in order and the sample clock
(samples received), so any chunking of the signal yields the same set of alerts.

Rules (``fs`` = 360 Hz; RR = interval between consecutive R peaks; a "run" is a maximal
sequence of consecutive beats of one class):

========== =========== ========================================================================
kind       severity    definition
========== =========== ========================================================================
pvc        advisory    event: a V run of length 1 (isolated PVC), outside bigeminy/trigeminy;
                       reported at the next non-V beat
couplet    warning     event: a V run of exactly 2; reported at the next non-V beat
vtach      critical    onset at the 3rd consecutive V beat when the run's rate (60 / mean RR
                       between its V beats) is > 100 bpm; end at the first non-V beat
vrun       warning     as vtach, rate <= 100 bpm (slow ventricular / idioventricular run)
bigeminy   warning     onset when the last 6 beats alternate V / non-V; end when it breaks
trigeminy  warning     onset when the last 9 beats repeat (non-V, non-V, V); end when it breaks
svpb       advisory    event: each A beat of an A run of length 1-2, or of a slow run (<= 100
                       bpm); reported at the next non-A beat
svt        warning     onset at the 3rd consecutive A beat when their rate is > 100 bpm; end
                       at the first non-A beat
brady      warning     onset when HR < 50 bpm (HR = 60 / mean of the last 8 RR); end at >= 55
tachy      warning     onset when HR > 120 bpm; end at <= 115 bpm
pause      warning     event: RR > 2 s; reported at the beat that ends it, sample = its start
asystole   critical    onset when no R peak for 4 s (stream start counts as a beat); declared
                       as soon as the pipeline guarantees no beat can still arrive in those
                       4 s (``decision_delay_s`` later), or at the late beat; end at that beat.
                       Not from a flat signal: see "Lead off" below
paced      advisory    onset when >= 6 of the last 8 beats are paced (``/``); end at <= 2
========== =========== ========================================================================

Two technical alarms come from the raw signal, not from the beats: ``lead_off`` (warning)
and ``noisy_signal`` (advisory), defined in :mod:`beatwise.quality`;
:class:`beatwise.bedside.Bedside` runs them next to these rules.

Lead off: while the signal is flat (a stretch of ``flat_s`` under ``flat_mv`` peak-to-peak,
:meth:`RhythmMonitor.signal_off` / :meth:`RhythmMonitor.signal_on`), there is no ECG to be
silent. Asystole is then counted from where the signal moves again, not from the last beat
(a flat line is not asystole; a live signal without beats still is, also right after the
lead comes back), unless the 4 s without a beat had passed before the signal went flat. The
RR interval across a flat stretch is not an RR: no pause, and not in the heart rate; nor is
one across samples that never came (:meth:`RhythmMonitor.mark_gap`). Nor are the beats
either side consecutive: the V or A run open when the signal went flat (or the data stopped)
ends there, its PVC, couplet or SVPBs reported then, and a bigeminy or trigeminy pattern
counts only the beats after it.

The live consumer adds two technical alarms that the sample clock cannot see (see
``stream``): ``signal_loss`` (no samples for 1.5 s, warning) and ``data_gap`` (a sequence
jump, warning).

Every alert carries ``sample``: the onset (or event, or end) sample, deterministic; and
``beat_sample``: the R peak of the beat that completed the condition (``None`` for
clock-declared alerts), from which alarm delays are measured.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from beatwise.classes import class_of

__all__ = [
    "EPISODES",
    "KINDS",
    "NAMES",
    "SEVERITY",
    "Alert",
    "RhythmMonitor",
    "bpm_tenths",
    "labels_from_symbols",
]

#: Severity of every alert kind; "critical" > "warning" > "advisory".
SEVERITY: dict[str, str] = {
    "vtach": "critical",
    "asystole": "critical",
    "vrun": "warning",
    "couplet": "warning",
    "bigeminy": "warning",
    "trigeminy": "warning",
    "svt": "warning",
    "brady": "warning",
    "tachy": "warning",
    "pause": "warning",
    "signal_loss": "warning",
    "data_gap": "warning",
    "lead_off": "warning",
    "pvc": "advisory",
    "svpb": "advisory",
    "paced": "advisory",
    "noisy_signal": "advisory",
}
KINDS: tuple[str, ...] = tuple(SEVERITY)

#: Plain names for the monitor and reports.
NAMES: dict[str, str] = {
    "vtach": "V-tach",
    "asystole": "Asystole",
    "vrun": "Ventricular run",
    "couplet": "Couplet",
    "bigeminy": "Bigeminy",
    "trigeminy": "Trigeminy",
    "svt": "SVT run",
    "brady": "Bradycardia",
    "tachy": "Tachycardia",
    "pause": "Pause",
    "signal_loss": "Signal loss",
    "data_gap": "Data gap",
    "lead_off": "Lead off",
    "noisy_signal": "Noisy signal",
    "pvc": "PVC",
    "svpb": "SVPB",
    "paced": "Paced rhythm",
}

# Episodes in order of priority for the "current rhythm" line.
#: Episode kinds, most serious first (the "current rhythm" is the first one open).
EPISODES = (
    "asystole",
    "vtach",
    "vrun",
    "svt",
    "bigeminy",
    "trigeminy",
    "tachy",
    "brady",
    "paced",
)
_DOMINANT_NAMES = {
    "N": "Sinus rhythm",
    "L": "LBBB rhythm",
    "R": "RBBB rhythm",
    "A": "Atrial ectopy",
    "V": "Ventricular ectopy",
    "/": "Paced rhythm",
}


def bpm_tenths(bpm: float, *, up: bool) -> float:
    """A rate to 0.1 bpm, rounded up or down (not to nearest): beside a threshold, a
    49.96-bpm low must not read 50. Float noise first goes (a steady 75 stays 75.0)."""
    tenths = round(bpm * 10, 6)
    return (math.ceil(tenths) if up else math.floor(tenths)) / 10


@dataclass(eq=True)
class Alert:
    """One alarm message.

    Attributes:
        kind: One of :data:`KINDS`.
        state: ``"onset"``, ``"end"`` or ``"event"`` (a one-off condition).
        severity: ``"critical"``, ``"warning"`` or ``"advisory"``.
        sample: Onset / end / event sample (at 360 Hz, stream index).
        beat_sample: R peak of the beat that completed the condition, or None when the
            sample clock declared it.
        detail: Extra JSON-safe facts (run length in beats, rate in bpm, duration in s, ...).
    """

    kind: str
    state: str
    sample: int
    beat_sample: int | None = None
    detail: dict = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return SEVERITY[self.kind]

    @property
    def name(self) -> str:
        return NAMES[self.kind]

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "state": self.state,
            "severity": self.severity,
            "sample": int(self.sample),
            "beat_sample": None if self.beat_sample is None else int(self.beat_sample),
            "detail": self.detail,
        }


def labels_from_symbols(symbols: Iterable[str]) -> list[str]:
    """MIT-BIH annotation symbols -> six-class labels (``"?"`` outside the six)."""
    return [class_of(s) or "?" for s in symbols]


class RhythmMonitor:
    """Rhythm and alarm rules over classified beats and a sample clock (see module doc).

    Args:
        fs: Sampling rate of the sample indices, Hz. Default 360.
        decision_delay_s: Longest time (s) after an R peak until the pipeline has emitted
            that beat; the clock rule (asystole) waits this long so a late beat cannot
            contradict it. Default 3.25 (the beat assembler waits up to 3 s for the next beat).
        start_delay_s: Extra wait (s) before the first beat, while the detector learns
            (its first beats are confirmed late). Default 0.
        hr_beats: RR intervals in the heart-rate average. Default 8.
    """

    def __init__(
        self,
        *,
        fs: float = 360.0,
        decision_delay_s: float = 3.25,
        start_delay_s: float = 0.0,
        hr_beats: int = 8,
    ) -> None:
        if fs <= 0 or decision_delay_s < 0 or start_delay_s < 0 or hr_beats < 1:
            raise ValueError(
                f"RhythmMonitor(fs={fs!r}, decision_delay_s={decision_delay_s!r}, "
                f"start_delay_s={start_delay_s!r}, hr_beats={hr_beats!r}): expected fs > 0, "
                "delays >= 0 s, hr_beats >= 1."
            )
        self.fs = fs
        self.decision_delay_s = decision_delay_s
        self.start_delay_s = start_delay_s
        self.hr_beats = hr_beats
        self._reset()

    def _reset(self) -> None:
        self._last: int | None = None  # last R peak
        self._clock = 0
        self._labels: deque[str] = deque(maxlen=9)
        self._since_cut = 0  # beats since the last lead off / data gap (the V pattern's reach)
        self._rrs: deque[float] = deque(maxlen=self.hr_beats)
        self._run_cls: str | None = None  # class of the current V / A run
        self._run: list[int] = []  # its R peaks
        self.active: dict[str, Alert] = {}  # kind -> onset alert of open episodes
        self._asystole_from = 0  # sample of the "virtual" beat the asystole clock counts from
        self._off = False  # the signal is flat (lead off): no ECG, so no asystole
        self._gap = False  # it went flat since the last beat: the next RR is no RR
        self._missing: deque[tuple[int, int]] = deque()  # [a, b) not yet behind the last beat
        self._n_beats = 0

    # -- inputs --------------------------------------------------------------------------

    def push(self, samples: Iterable[int], labels: Iterable[str]) -> list[Alert]:
        """Classified beats in R-peak order -> the alerts they raise."""
        out: list[Alert] = []
        for s, lab in zip(np.asarray(samples, dtype=np.int64).tolist(), labels):
            out += self._beat(int(s), str(lab))
        return out

    def signal_off(self, sample: int) -> list[Alert]:
        """The signal is flat from ``sample`` on (lead off): the silence that reaches into it
        is no asystole, the RR interval across it no RR (see module doc).

        Returns the asystole that had begun before it (4 s without a beat on a live signal),
        if the sample clock has not declared it yet.
        """
        out = self._asystole_before(int(sample))
        out += self._close_run(int(sample), None)  # the beats after it are not consecutive
        self._since_cut = 0
        self._off = True
        self._gap = True
        return out

    def mark_gap(self, start: int, stop: int) -> None:
        """Samples ``start..stop-1`` never came (a data gap the caller bridged): no RR
        interval is measured across them (no pause, and not in the heart rate), so the
        heart rate is not read low for want of data."""
        if not 0 <= start < stop:
            raise ValueError(f"gap {start}..{stop}: expected 0 <= start < stop (samples).")
        self._missing.append((int(start), int(stop)))

    def _asystole_before(self, sample: int) -> list[Alert]:
        """The asystole onset, if more than 4 s without a beat on a live signal lie before
        ``sample`` and the clock has not declared it yet. ``beat_sample`` is None as when the
        clock declares it: the same alert whichever way it is found."""
        if self._off or "asystole" in self.active or sample - self._asystole_from <= 4.0 * self.fs:
            return []
        start = self._asystole_from + int(round(4.0 * self.fs))
        return [self._open("asystole", start, None, {"since_sample": self._asystole_from})]

    def signal_on(self, sample: int) -> None:
        """The flat signal moves again at ``sample``: the asystole clock counts from there."""
        self._off = False
        self._asystole_from = max(self._asystole_from, int(sample))

    def advance(self, clock: int) -> list[Alert]:
        """The sample clock reached ``clock`` (samples received so far)."""
        self._clock = max(self._clock, int(clock))
        out: list[Alert] = []
        if not self._off and "asystole" not in self.active:
            start = self._asystole_from + int(round(4.0 * self.fs))
            wait = self.decision_delay_s + (self.start_delay_s if self._last is None else 0.0)
            if self._clock >= start + int(round(wait * self.fs)):
                out.append(
                    self._open("asystole", start, None, {"since_sample": self._asystole_from})
                )
        return out

    def finish(self, clock: int) -> list[Alert]:
        """End of stream at sample ``clock``: resolve pending runs, close open episodes."""
        self._clock = max(self._clock, int(clock))
        out = self._asystole_before(self._clock)
        out += self._close_run(self._clock, None)
        for kind in list(self.active):
            out.append(self._close(kind, self._clock, None))
        return out

    # -- state read by the monitor ---------------------------------------------------------

    @property
    def hr_bpm(self) -> float | None:
        """Heart rate, bpm: 60 / mean of the last ``hr_beats`` RR intervals (None before 1)."""
        n = len(self._rrs)
        if not n:
            return None
        # np.mean's sum exactly (numpy's own reduction order), without np.mean's overhead:
        # a third of the time, read at every beat
        return 60.0 / (float(np.add.reduce(np.fromiter(self._rrs, np.float64, n))) / n)

    @property
    def rhythm(self) -> str:
        """Plain name of the current rhythm: the most serious open episode, else the
        dominant class of the last beats."""
        for kind in EPISODES:
            if kind in self.active:
                return NAMES[kind]
        if not self._labels:
            return "—"
        labs = [x for x in self._labels if x != "?"] or ["N"]
        dominant = max(set(labs), key=labs.count)
        return _DOMINANT_NAMES.get(dominant, "Sinus rhythm")

    # -- rules -------------------------------------------------------------------------------

    def _open(self, kind: str, sample: int, beat: int | None, detail: dict | None = None) -> Alert:
        a = Alert(kind, "onset", int(sample), beat, dict(detail or {}))
        self.active[kind] = a
        return a

    def _close(self, kind: str, sample: int, beat: int | None, detail: dict | None = None) -> Alert:
        onset = self.active.pop(kind)
        d = {
            "onset_sample": onset.sample,
            "duration_s": round((sample - onset.sample) / self.fs, 3),
        }
        d.update(detail or {})
        return Alert(kind, "end", int(sample), beat, d)

    def _rate(self, peaks: list[int]) -> float:
        return 60.0 * self.fs * (len(peaks) - 1) / max(peaks[-1] - peaks[0], 1)

    def _close_run(self, sample: int, beat: int | None) -> list[Alert]:
        """The current V or A run ended (at ``sample``)."""
        out: list[Alert] = []
        cls, run = self._run_cls, self._run
        if cls == "V":
            if len(run) == 1 and not ({"bigeminy", "trigeminy"} & self.active.keys()):
                out.append(Alert("pvc", "event", run[0], beat))
            elif len(run) == 2:
                out.append(Alert("couplet", "event", run[0], beat, {"beats": 2}))
            for kind in ("vtach", "vrun"):
                if kind in self.active:
                    out.append(
                        self._close(
                            kind,
                            sample,
                            beat,
                            {"beats": len(run), "rate_bpm": round(self._rate(run), 1)},
                        )
                    )
        elif cls == "A":
            if "svt" in self.active:
                out.append(
                    self._close(
                        "svt",
                        sample,
                        beat,
                        {"beats": len(run), "rate_bpm": round(self._rate(run), 1)},
                    )
                )
            else:
                out += [Alert("svpb", "event", r, beat, {"run": len(run)}) for r in run]
        self._run_cls, self._run = None, []
        return out

    def _beat(self, s: int, lab: str) -> list[Alert]:
        out: list[Alert] = []
        if self._last is not None and s <= self._last:
            raise ValueError(
                f"beat at sample {s}: expected beats in increasing order (last {self._last})."
            )
        # Asystole: a late beat ends it (opening it first if the clock had not yet).
        out += self._asystole_before(s)
        if "asystole" in self.active:
            out.append(self._close("asystole", s, s))
        self._asystole_from = s
        last = self._last
        crossed = [a for a, b in self._missing if last is not None and a < s and b > last]
        if crossed:  # the beats either side of a data gap are not consecutive
            out += self._close_run(crossed[0], None)
            self._since_cut = 0
        if last is not None and not self._gap and not crossed:
            rr = (s - self._last) / self.fs
            if rr > 2.0:
                out.append(Alert("pause", "event", self._last, s, {"duration_s": round(rr, 3)}))
            self._rrs.append(rr)
        self._gap = self._off
        self._last = s
        while self._missing and self._missing[0][1] <= s:  # behind us: no later RR crosses it
            self._missing.popleft()
        self._n_beats += 1
        self._labels.append(lab)
        self._since_cut += 1

        # Runs of V / A.
        if lab != self._run_cls:
            out += self._close_run(s, s)
            if lab in ("V", "A"):
                self._run_cls, self._run = lab, [s]
        else:
            self._run.append(s)
        if len(self._run) == 3:
            rate = self._rate(self._run)
            if lab == "V":
                kind = "vtach" if rate > 100.0 else "vrun"
                out.append(self._open(kind, self._run[0], s, {"rate_bpm": round(rate, 1)}))
            elif rate > 100.0:
                out.append(self._open("svt", self._run[0], s, {"rate_bpm": round(rate, 1)}))

        # Bigeminy / trigeminy on the last beats' V pattern.
        isv = [x == "V" for x in self._labels][-self._since_cut :]  # no pattern across a cut
        big = len(isv) >= 6 and all(isv[i] != isv[i - 1] for i in range(len(isv) - 5, len(isv)))
        tri = (
            len(isv) >= 9 and all(isv[i] == isv[i - 3] for i in range(3, 9)) and sum(isv[-3:]) == 1
        )
        for kind, now in (("bigeminy", big), ("trigeminy", tri)):
            if now and kind not in self.active:
                out.append(self._open(kind, s, s))
            elif not now and kind in self.active:
                out.append(self._close(kind, s, s))

        # Heart rate (hysteresis: brady ends at 55, tachy at 115 bpm).
        hr = self.hr_bpm
        if hr is not None and len(self._rrs) == self.hr_beats:
            # The rate rounded away from the threshold it crossed: to nearest, a 49.96-bpm
            # bradycardia (< 50) read "hr_bpm": 50.0.
            low, high = bpm_tenths(hr, up=False), bpm_tenths(hr, up=True)
            for kind, on, off, at_on, at_off in (
                ("brady", hr < 50.0, hr >= 55.0, low, high),
                ("tachy", hr > 120.0, hr <= 115.0, high, low),
            ):
                if on and kind not in self.active:
                    out.append(self._open(kind, s, s, {"hr_bpm": at_on}))
                elif off and kind in self.active:
                    out.append(self._close(kind, s, s, {"hr_bpm": at_off}))

        # Paced rhythm.
        last8 = list(self._labels)[-8:]
        n_paced = last8.count("/")
        if n_paced >= 6 and "paced" not in self.active:
            out.append(self._open("paced", s, s))
        elif n_paced <= 2 and "paced" in self.active:
            out.append(self._close("paced", s, s))
        return out
