"""Signal quality: technical alerts on the raw ECG (mV, 360 Hz), pushed chunk by chunk.

:class:`SignalQuality` watches the samples :meth:`beatwise.bedside.Bedside.push` receives,
before any filtering, and raises two technical alerts as episodes (onset, end; never one per
chunk):

============= ========= ======================================================================
kind          severity  definition
============= ========= ======================================================================
lead_off      warning   onset when the raw signal stays within ``flat_mv`` (0.02 mV
                        peak-to-peak) for ``flat_s`` (1 s): a disconnected lead, or one
                        saturated at a rail; sample = start of that flat stretch. A data
                        gap's fill (:meth:`SignalQuality.mark_gap`) is no lead off: a flat
                        second that overlaps one does not count, so a lead that stays off
                        after the gap is raised ``flat_s`` later, from the first block after
                        the fill. End when no flat stretch has started for ``live_s`` (2 s);
                        sample = where the signal first moved again
noisy_signal  advisory  onset when, over ``noise_window_s`` (3 s), the high-frequency noise
                        floor exceeds ``noise_on_mv`` (0.25 mV: 20-150 Hz noise at about
                        3.5 dB SNR on mitdb 100) or the baseline drifts faster than
                        ``drift_on_mv_s`` (2.5 mV/s: heavy baseline wander); sample = middle
                        of that window. End once both have stayed under their ``*_off`` levels
                        (0.15 mV, 1.5 mV/s) for ``noise_clear_s`` (5 s); sample = middle of the
                        first clean window. Windows that touch a flat stretch count as clean
============= ========= ======================================================================

Why ``noisy_signal`` is an advisory and ``lead_off`` a warning: with a lead off nothing is
monitored, so someone must go to the bed; a noisy ECG is still monitored (beats are still
found, the rhythm alarms stay armed), it only says that the rhythm alerts of that stretch
deserve less trust. Raising it as a warning would add to the alarm fatigue it is meant to
explain.

How the two are measured, per block of 0.25 s (the per-sample pass compiled with numba, the
rest vectorised over blocks):

* flatness: peak-to-peak of the raw samples over the last ``flat_s`` (whole blocks). The
  quietest second of the 48 MIT-BIH records spans 0.05 mV (mitdb 201 and 232, in pauses),
  so 0.02 mV leaves a live but beat-less signal (a real asystole) alone.
* noise floor: RMS of the second difference ``x[n] - 2 x[n-1] + x[n-2]`` (a high-pass: gain
  1 at 60 Hz, 2 at 90 Hz, under 0.03 below 10 Hz) per block; its median over the window
  ignores the blocks that hold a QRS. The 48 MIT-BIH records stay under 0.15 mV (mitdb 104,
  noisy); 20-150 Hz noise at 0 dB SNR added to mitdb 100 reads 0.35-0.41 mV.
* drift: ``|m(t) - m(t - 1 s)|`` per second, where ``m`` is the mean over one second (the
  beat's own shape averages out), median over the window. The 48 MIT-BIH records stay
  under 2.0 mV/s except mitdb 116 around its electrode artefacts (3.0); a 3 mV, 0.3 Hz
  wander added to mitdb 100 reads 2.6-3.2 mV/s. A step into or out of a rail would read as
  drift too, hence windows that touch a flat stretch are left to ``lead_off``.

Every decision is taken on whole blocks aligned to the stream's sample 0, so any chunking
yields the same alerts (:mod:`tests.contracts`). Decisions come late by design: a flat
stretch is known ``flat_s`` after it began; a noise window up to ``flat_s`` + 2 s after it
ended (it waits for the flat windows that could cover it, and is judged 2 s at a time).
Memory is bounded: the unfinished block and the statistics of the last few seconds of
blocks.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from beatwise.dsp.filter import as_samples
from beatwise.rhythm import Alert

__all__ = ["BLOCK_S", "NOISE_PHASES", "SignalQuality"]

#: The monitor's time step, seconds: statistics are kept per block of this length.
BLOCK_S = 0.25
#: Length of the mean the drift compares, seconds.
_DRIFT_MEAN_S = 1.0
#: Noise windows are judged once this many are due (2 s): live chunks are short (0.1 s),
#: and the cost of a judgement hardly depends on how many windows it takes. (Flat windows
#: are judged at once: the rhythm rules wait for them.)
_STEP_BLOCKS = 8
#: How many ``noise_phase`` values :class:`SignalQuality` takes (one per block of a step).
NOISE_PHASES = _STEP_BLOCKS


class SignalQuality:
    """Technical alerts (``lead_off``, ``noisy_signal``) on the raw ECG (see module doc).

    Durations are rounded to whole blocks of :data:`BLOCK_S`.

    Args:
        fs: Sampling rate, Hz. Default 360.
        flat_mv: Peak-to-peak (mV) under which the signal counts as flat. Default 0.02.
        flat_s: How long (s) the signal must stay flat to raise ``lead_off``. Default 1.0.
        live_s: How long (s) the signal must stay free of flat stretches to end ``lead_off``.
            Default 2.0.
        noise_window_s: Window (s) of the noise-floor and drift medians. Default 3.0.
        noise_on_mv: Noise floor (mV, RMS of the second difference) that raises
            ``noisy_signal``. Default 0.25.
        noise_off_mv: Noise floor (mV) under which it may end. Default 0.15.
        drift_on_mv_s: Baseline drift (mV/s) that raises ``noisy_signal``. Default 2.5.
        drift_off_mv_s: Baseline drift (mV/s) under which it may end. Default 1.5.
        noise_clear_s: How long (s) both must stay under their ``*_off`` levels to end
            ``noisy_signal``. Default 5.0.
        noise_phase: Judge the first noise windows this many blocks sooner (0 to 7; the
            judgements come every 8 blocks): beds started together then do that work in
            different rounds. The alerts are the same for every phase. Default 0.

    A caller that bridges missing samples marks them first (:meth:`mark_gap`).

    After each :meth:`push`, :attr:`flat_edges` lists where flat stretches (``flat_s`` or
    longer, without hysteresis) began and ended, for the rhythm rules
    (:meth:`beatwise.rhythm.RhythmMonitor.signal_off`).
    """

    def __init__(
        self,
        *,
        fs: float = 360.0,
        flat_mv: float = 0.02,
        flat_s: float = 1.0,
        live_s: float = 2.0,
        noise_window_s: float = 3.0,
        noise_on_mv: float = 0.25,
        noise_off_mv: float = 0.15,
        drift_on_mv_s: float = 2.5,
        drift_off_mv_s: float = 1.5,
        noise_clear_s: float = 5.0,
        noise_phase: int = 0,
    ) -> None:
        if not fs >= 4 / BLOCK_S:
            raise ValueError(f"SignalQuality: fs={fs!r} Hz; expected >= {4 / BLOCK_S:g} Hz.")
        for name, value in (
            ("flat_s", flat_s),
            ("live_s", live_s),
            ("noise_window_s", noise_window_s),
            ("noise_clear_s", noise_clear_s),
        ):
            if not value >= BLOCK_S:
                raise ValueError(
                    f"SignalQuality: {name}={value!r} s; expected >= one block ({BLOCK_S} s)."
                )
        if not (isinstance(noise_phase, int) and 0 <= noise_phase < _STEP_BLOCKS):
            raise ValueError(
                f"SignalQuality: noise_phase={noise_phase!r}; expected 0 <= noise_phase < "
                f"{_STEP_BLOCKS} (an int)."
            )
        if not flat_mv > 0:
            raise ValueError(f"SignalQuality: flat_mv={flat_mv!r} mV; expected > 0.")
        for off_name, off, on_name, on in (
            ("noise_off_mv", noise_off_mv, "noise_on_mv", noise_on_mv),
            ("drift_off_mv_s", drift_off_mv_s, "drift_on_mv_s", drift_on_mv_s),
        ):
            if not 0 < off <= on:
                raise ValueError(
                    f"SignalQuality: {off_name}={off!r}, {on_name}={on!r}; expected "
                    f"0 < {off_name} <= {on_name} (hysteresis)."
                )
        self.fs = fs
        self.flat_mv = flat_mv
        self.flat_s = flat_s
        self.live_s = live_s
        self.noise_window_s = noise_window_s
        self.noise_on_mv = noise_on_mv
        self.noise_off_mv = noise_off_mv
        self.drift_on_mv_s = drift_on_mv_s
        self.drift_off_mv_s = drift_off_mv_s
        self.noise_clear_s = noise_clear_s
        self.noise_phase = noise_phase
        # In blocks.
        self._block = int(round(BLOCK_S * fs))
        self._k_flat = _blocks(flat_s)
        self._k_live = _blocks(live_s)
        self._k_win = _blocks(noise_window_s)
        self._k_clear = _blocks(noise_clear_s)
        self._k_mean = _blocks(_DRIFT_MEAN_S)
        # Blocks a noise window's statistics read (the drift compares two means before it).
        self._k_span = self._k_win + 2 * self._k_mean - 1
        # A noise window is judged once the flat windows that could cover it are known.
        self._lag = self._k_flat - 1
        self._reset()

    def _reset(self) -> None:
        self._n = 0  # samples pushed
        self._nb = 0  # whole blocks seen
        self._tail = np.zeros(0)  # samples of the unfinished block
        self._prev2 = np.zeros(2)  # the two samples before it
        # Rows per block (min, max, mean, HF RMS, 1.0 where the flat window ending there is
        # flat) of the last blocks, as many as the next judgements read.
        self._hist = np.zeros((5, 0))
        self._quiet = False  # was the last flat window flat
        self._live_run = 0  # windows since the last flat one
        self._next_noise = self._k_span - 1  # the next block whose noise window is judged
        self._due = _STEP_BLOCKS - self.noise_phase  # windows due before the next judgement
        self._good_run = 0  # clean noise windows in a row
        self.active: dict[str, Alert] = {}  # kind -> onset alert of open episodes
        self.flat_edges: list[tuple[int, bool]] = []
        self._gaps: list[tuple[int, int]] = []  # marked fills [start, stop) not yet behind

    @property
    def n_samples(self) -> int:
        """Samples pushed so far."""
        return self._n

    @property
    def block_samples(self) -> int:
        """Samples per block (:data:`BLOCK_S`); flat edges fall on block starts."""
        return self._block

    def decided_at(self, sample: int, flat: bool) -> int:
        """How many samples had been pushed when the edge ``(sample, flat)`` of
        :attr:`flat_edges` was decided: a flat stretch's start once its first ``flat_s`` are
        in, its end once the block where the signal moved is complete."""
        return int(sample) + (self._k_flat if flat else 1) * self._block

    # -- input -------------------------------------------------------------------------------

    def push(self, chunk) -> list[Alert]:
        """Raw samples (mV) in; the alerts decided meanwhile out.

        Also sets :attr:`flat_edges`: ``(sample, True)`` where a flat stretch began,
        ``(sample, False)`` where the signal moved again, decided during this chunk.
        """
        x = as_samples(chunk)
        self.flat_edges = []
        if not len(x):
            return []
        if self._n == 0:
            self._prev2 = np.full(2, x[0])  # steady start: no step before the first sample
        # Keep the fills that the flat seconds judged from here on can overlap.
        horizon = self._n - self._k_flat * self._block - self._block
        self._gaps = [g for g in self._gaps if g[1] > horizon]
        self._n += len(x)
        y = np.concatenate([self._tail, x]) if len(self._tail) else x
        b = self._block
        nb = len(y) // b
        if nb == 0:
            self._tail = y
            return []
        self._tail = y[nb * b :].copy()
        self._add_blocks(y[: nb * b], nb)
        out = self._lead_off(nb)
        return out + self._noise(final=False)

    def mark_gap(self, start: int, stop: int) -> None:
        """Samples ``start..stop-1`` never came; the caller fills them (flat at the last
        sample, then a ramp: :func:`beatwise.pipeline.bridge`). A flat second that overlaps
        them raises no ``lead_off`` (see the module doc). Mark a gap before its samples."""
        if not 0 <= start < stop:
            raise ValueError(
                f"SignalQuality.mark_gap: start={start!r}, stop={stop!r}; expected "
                "0 <= start < stop."
            )
        self._gaps.append((int(start), int(stop)))

    def filled(self, start: int, stop: int) -> bool:
        """Whether a marked gap overlaps samples ``start..stop-1`` (one recent enough: those
        of the last ``flat_s`` and after)."""
        return any(a < stop and start < z for a, z in self._gaps)

    def finish(self, clock: int | None = None) -> list[Alert]:
        """End of stream at sample ``clock`` (default: the samples pushed): judge the noise
        windows still waiting, then close what is open."""
        out = self._noise(final=True)
        end = self._n if clock is None else int(clock)
        return out + [self._close(kind, end) for kind in list(self.active)]

    # -- rules -------------------------------------------------------------------------------

    def _add_blocks(self, body: np.ndarray, nb: int) -> None:
        """Append the statistics of ``nb`` whole blocks to :attr:`_hist`."""
        new = _block_stats(self._prev2, body, self._block)
        self._prev2 = body[-2:].copy()
        # Keep what the judgements read: the support of the noise windows not judged yet,
        # and the flat windows of the new blocks.
        oldest = min(self._next_noise - self._k_span + 1, self._nb - self._k_flat + 1)
        self._nb += nb
        self._hist = np.concatenate([self._hist, new], axis=1)[:, -(self._nb - oldest) :]

    def _col(self, g: int) -> int:
        """Column of :attr:`_hist` that holds block ``g`` (global index)."""
        return g - (self._nb - self._hist.shape[1])

    def _lead_off(self, nb: int) -> list[Alert]:
        """Flat windows of the ``nb`` new blocks (into row 4), flat edges, lead_off."""
        k, b, hist = self._k_flat, self._block, self._hist
        first = self._nb - nb  # global index of the first new block
        skip = min(max(k - 1 - first, 0), nb)  # new blocks without a whole window behind
        quiet = np.zeros(nb, bool)
        n_quiet = 0
        if skip < nb:
            c = self._col(first + skip - k + 1)  # where the first whole window begins
            lo, hi, n_quiet = _flat_windows(
                hist[0, c:], hist[1, c:], k, self.flat_mv, quiet[skip:]
            )
        if not self._quiet and "lead_off" not in self.active and not n_quiet:
            self._live_run += nb  # nothing flat, nothing open: nothing to decide
            return []
        hist[4, self._col(first) :] = quiet
        idx = np.arange(nb)
        opens = quiet  # a flat second that overlaps a fill opens no lead_off
        if self._gaps:
            w = (first + idx - k + 1) * b  # where each new block's flat second begins
            fill = np.zeros(nb, bool)
            for a, z in self._gaps:
                fill |= (a < w + k * b) & (w < z)
            opens = quiet & ~fill
        # Flat stretches, for the rhythm rules: where the windows turn flat / stop being flat.
        prev = np.concatenate([[self._quiet], quiet[:-1]])
        for j in np.flatnonzero(quiet != prev).tolist():
            g = first + j
            self.flat_edges.append(((g - k + 1) * b, True) if quiet[j] else (g * b, False))
        # Episodes, with hysteresis: end once no window has been flat for live_s.
        last_quiet = np.maximum.accumulate(np.where(quiet, idx, -1))
        run = np.where(last_quiet >= 0, idx - last_quiet, self._live_run + idx + 1)
        out: list[Alert] = []
        i = 0
        while i < nb:
            if "lead_off" not in self.active:
                j = _first(opens, i)
                if j < 0:
                    break
                level = (hi[j - skip] + lo[j - skip]) / 2
                out.append(self._open("lead_off", (first + j - k + 1) * b, level_mv=level))
            else:
                j = _first(run >= self._k_live, i)
                if j < 0:
                    break
                out.append(self._close("lead_off", (first + j - self._k_live + 1) * b))
            i = j + 1
        self._quiet = bool(quiet[-1])
        self._live_run = int(run[-1])
        return out

    def _noise(self, *, final: bool) -> list[Alert]:
        """Judge the noise windows whose flat windows are all known (at least
        ``_STEP_BLOCKS`` of them, fewer the first time by ``noise_phase``, unless
        ``final``); noisy_signal."""
        w, m, b, span, hist = self._k_win, self._k_mean, self._block, self._k_span, self._hist
        g0, g1 = self._next_noise, self._nb - 1 - self._lag  # window ends to judge
        if g1 < g0 or (g1 - g0 + 1 < self._due and not final):
            return []
        self._next_noise, self._due = g1 + 1, _STEP_BLOCKS
        c, c1 = self._col(g0 - span + 1), self._col(g1) + 1  # support of the windows
        hf = _median(_windows(hist[3, c + 2 * m - 1 : c1], w))
        means = _windows(hist[2, c:c1], m).mean(axis=1)
        drift = np.abs(means[m:] - means[:-m])
        drift /= _DRIFT_MEAN_S
        drift = _median(_windows(drift, w))
        # A window that touches a flat stretch is lead_off's business: a step into or out of
        # a rail would read as drift. It counts as clean.
        flat = _windows(hist[4, c : c1 + self._lag], span + self._lag).max(axis=1) > 0
        hf_bad, drift_bad = hf > self.noise_on_mv, drift > self.drift_on_mv_s
        bad = ~flat & (hf_bad | drift_bad)
        good = flat | ((hf < self.noise_off_mv) & (drift < self.drift_off_mv_s))
        if "noisy_signal" not in self.active and not bad.any():
            not_good = np.flatnonzero(~good)  # nothing to decide: count the clean run
            n = len(good)
            self._good_run = n - 1 - int(not_good[-1]) if len(not_good) else self._good_run + n
            return []
        idx = np.arange(len(good))
        last_bad = np.maximum.accumulate(np.where(good, -1, idx))
        run = np.where(last_bad >= 0, idx - last_bad, self._good_run + idx + 1)
        out: list[Alert] = []
        i = 0
        while i < len(good):
            if "noisy_signal" not in self.active:
                j = _first(bad, i)
                if j < 0:
                    break
                cause = "+".join(
                    c for c, on in (("noise", hf_bad[j]), ("wander", drift_bad[j])) if on
                )
                out.append(
                    self._open(
                        "noisy_signal",
                        (g0 + j + 1 - w // 2) * b,
                        cause=cause,
                        noise_mv=hf[j],
                        drift_mv_s=drift[j],
                    )
                )
            else:
                j = _first(run >= self._k_clear, i)
                if j < 0:
                    break
                g = g0 + j - self._k_clear + 1  # the first clean window of the run
                out.append(self._close("noisy_signal", (g + 1 - w // 2) * b))
            i = j + 1
        self._good_run = int(run[-1])
        return out

    def _open(self, kind: str, sample: int, **detail) -> Alert:
        d = {k: v if isinstance(v, str) else round(float(v), 3) for k, v in detail.items()}
        a = Alert(kind, "onset", int(sample), None, d)
        self.active[kind] = a
        return a

    def _close(self, kind: str, sample: int) -> Alert:
        onset = self.active.pop(kind)
        d = {
            "onset_sample": onset.sample,
            "duration_s": round((sample - onset.sample) / self.fs, 3),
        }
        return Alert(kind, "end", int(sample), None, d)


@njit(cache=True)
def _block_stats(prev2: np.ndarray, body: np.ndarray, b: int) -> np.ndarray:
    """Per block of ``b`` samples of ``body`` (whole blocks; ``prev2`` the two samples
    before it): rows min, max, mean, RMS of the second difference ``x[n] - 2 x[n-1] +
    x[n-2]``, and 0.0 (row 4, filled by the flat windows). One pass, no temporaries: this
    runs for every bed about four times a second."""
    nb = len(body) // b
    out = np.empty((5, nb))
    x2, x1 = prev2[0], prev2[1]
    for i in range(nb):
        lo = hi = body[i * b]
        total = 0.0
        energy = 0.0
        for j in range(i * b, (i + 1) * b):
            x = body[j]
            lo = min(lo, x)
            hi = max(hi, x)
            total += x
            d2 = x - x1 - x1 + x2
            energy += d2 * d2
            x2, x1 = x1, x
        out[0, i] = lo
        out[1, i] = hi
        out[2, i] = total / b
        out[3, i] = np.sqrt(energy / b)
        out[4, i] = 0.0
    return out


@njit(cache=True)
def _flat_windows(mins: np.ndarray, maxs: np.ndarray, k: int, flat_mv: float, quiet: np.ndarray):
    """Lowest and highest value over each run of ``k`` consecutive blocks (from their ``mins``
    and ``maxs``), and whether that span is under ``flat_mv`` (into ``quiet``, one per run);
    returns ``(lo, hi, how many are quiet)``."""
    n = len(mins) - k + 1
    lo = np.empty(n)
    hi = np.empty(n)
    n_quiet = 0
    for i in range(n):
        a, z = mins[i], maxs[i]
        for j in range(i + 1, i + k):
            a = min(a, mins[j])
            z = max(z, maxs[j])
        lo[i], hi[i] = a, z
        quiet[i] = z - a < flat_mv
        n_quiet += quiet[i]
    return lo, hi, n_quiet


def _blocks(seconds: float) -> int:
    return max(int(round(seconds / BLOCK_S)), 1)


def _windows(a: np.ndarray, w: int) -> np.ndarray:
    """Rows of ``w`` consecutive values of the 1-D array ``a``, as a view: what
    ``sliding_window_view`` gives, without its cost per call (it runs per block live)."""
    a = np.ascontiguousarray(a)
    s = a.strides[0]
    return np.ndarray((len(a) - w + 1, w), a.dtype, buffer=a, strides=(s, s))


def _median(rows: np.ndarray) -> np.ndarray:
    """Median of each row (a sort of short rows is cheaper than ``np.median``'s partition)."""
    s = np.sort(rows, axis=1)
    k = s.shape[1]
    return (s[:, (k - 1) // 2] + s[:, k // 2]) / 2


def _first(mask: np.ndarray, start: int) -> int:
    """Index of the first True of ``mask`` at or after ``start``; -1 when none."""
    hits = np.flatnonzero(mask[start:])
    return int(hits[0]) + start if len(hits) else -1
