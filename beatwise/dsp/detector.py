"""Online Pan-Tompkins QRS detector (numba), pushed chunk by chunk.

Follows Pan & Tompkins, "A real-time QRS detection algorithm", IEEE TBME 32(3), 1985:

1. a 5-15 Hz bandpass of the (already 0.5-40 Hz filtered) input,
2. the five-point derivative, squaring, and a 150 ms moving-window integration (MWI),
3. peaks of the MWI, each paired with the largest bandpassed amplitude and the largest
   slope in the window that produced it,
4. two sets of adaptive thresholds -- on the MWI peaks (SPKI/NPKI) and on the bandpassed
   peaks (SPKF/NPKF) -- a peak is a QRS when it passes both,
5. a 200 ms refractory period; T-wave discrimination (a peak within 360 ms of the last QRS
   whose slope is under half the last QRS slope is a T wave),
6. two RR averages (all recent RRs, and the recent RRs within 92-116 % of the average) and a
   search-back: when no QRS comes within 140 % (paper: 166 %) of the RR average, the
   largest peak since the last QRS that passes 0.47 (paper: half) of the thresholds is
   taken as a QRS.

Beyond the paper (each measured with ``beatwise eval detect`` on mitdb and svdb):
thresholds act on MWI ** 0.6 rather than on the MWI, so small beats next to big ectopics
stay above threshold; search-back looks only at peaks 0.6 RR or more after the last QRS
(see below for the exception); and a deflection within 240 ms of the last apex that has
the opposite polarity or under half its amplitude is taken as another lobe of the same
(wide) complex, not as a new beat.

Two more rules (``beatwise eval detect``, gross, mitdb / svdb: DER 0.47 % -> 0.38 % /
0.27 % -> 0.24 %):

* The T-wave test knows the record's T waves. After each QRS of typical slope (within
  1/1.4-1.4 times the running average) the largest MWI peak in its T-wave window, relative
  to the QRS's own MWI peak, updates a running T-wave level (an average over ~8 beats; only
  beats whose window held no other QRS). A peak in the T-wave window of a typical QRS that
  is over ``t_level`` (6) times that level is not a T wave, whatever its slope: slow early
  PVCs (mitdb 210) are kept, while records with tall T waves (svdb 801, 865) have a high
  level and keep the test, and the tall T wave of a PVC (not a typical QRS) still faces it.
* A QRS is held back until no later peak can replace it: a peak within 240 ms (and within
  0.6 of the regular RR average: tachycardias, svdb 848) of it, over 1.1 times its MWI peak
  and steeper, replaces it -- the first one was a tall P wave or the front of a complex
  (mitdb 108, svdb 805). The state changed by the first accept is restored, then the second
  is accepted.

One more (gross mitdb Se / +P 99.76 / 99.86 % -> 99.81 / 99.84 %, svdb 99.93 / 99.83 % ->
99.93 / 99.82 %): search-back also takes a peak 0.35-0.6 RR after the last QRS when that QRS
was typical, the peak lies past its T-wave window (360 ms) and its MWI peak is over twice
the record's T-wave level (as above). These are small early ectopic beats hidden behind a
large normal one and its compensatory pause (the aberrated APCs of mitdb 201); late T waves
and the back of a PVC stay out. With it, search-back starts at 140 % of the RR average and
takes peaks over 0.47 of the thresholds.

The index reported for each QRS is its apex in the *input* signal: the largest deflection
of the record's dominant polarity near the MWI peak (the other polarity only when three
times larger), so beat windows cut from that signal are centred the same way on every beat.

Decision delay (bounded, in samples after the reported apex): a QRS is confirmed when its
MWI peak has halved or 150 ms passed, and reported once no peak can replace it: 240 ms +
150 ms after its MWI peak, or earlier when the next QRS or a later peak decides it
(typically 0.3-0.6 s after the apex); a beat found by
search-back is confirmed at 140 % of the RR average after the previous QRS, and only
candidates younger than ``max_delay_s`` (2.0 s) are searched; beats of the first 2 s
(the learning phase) are confirmed at the end of it. Hence every R peak is reported at most
``max_delay_s`` after its apex (see :attr:`OnlinePanTompkins.max_delay`).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy.signal import butter

from beatwise.dsp.filter import as_samples, sosfilt_step

__all__ = ["OnlinePanTompkins"]

# Integer state slots.
_G = 0  # global index of the next sample
_LEARNING = 1  # 1 while in the learning phase
_PK_IDX = 2  # index of the running MWI maximum (-1: none)
_LAST_P = 3  # MWI-peak index of the last QRS (-1: none)
_LAST_APEX = 4  # apex index of the last QRS
_NCAND = 5  # number of stored candidates
_NRR = 6  # RRs seen
_RR_MISS = 7  # consecutive RRs outside the regular limits
_SB_AT = 8  # search back once the clock passes this sample
_LAST_TYP = 9  # 1 when the last QRS had a typical slope
_PEND = 10  # 1 while the last QRS is accepted but not yet reported
_NI = 11  # the slots above: saved and restored around a replaceable accept
_MWI_W = 11  # MWI width in samples (a constant)
_GAPS = 12  # first samples after the last _NGAPS marked data gaps, oldest first (-1: none)
_NGAPS = 8
_NI_ALL = _GAPS + _NGAPS

# Float state slots.
(
    _SPKI,
    _NPKI,
    _SPKF,
    _NPKF,
    _PK_MAX,
    _MWI_SUM,
    _LAST_SLOPE,
    _LEARN_MAX,
    _LEARN_SUM,
    _LAST_AMP,
    _POL_EMA,
    _TCUR,
    _TLEVEL,
    _LAST_AI,
    _SLOPE_EMA,
    _PEND_AI,
    _PEND_SL,
) = range(17)
_NF = 17

# Tunable constants, in DEFAULT_PARAMS order.
_TH, _SB, _TW, _SBRR, _SBMIN, _AMP, _HALF, _TIMEOUT, _REFR = range(9)
_APLO, _APHI, _DOM, _MINRR, _LOBE, _POL = range(9, 15)
_TLEV, _TYP, _REP, _REPW, _REPRR, _SBT, _SBTL = range(15, 22)

#: Detector settings (seconds where a time). Tuned on mitdb + svdb with
#: ``beatwise eval detect``; Pan & Tompkins' own value in brackets where they give one.
DEFAULT_PARAMS: dict[str, float] = {
    # threshold = noise level + th * (signal level - noise level)  [0.25]
    "th": 0.35,
    # search-back accepts peaks over sb * threshold  [0.5]
    "sb": 0.47,
    # T wave: within twave_s of a QRS with a slope under tw * its slope  [0.5]
    "tw": 0.5,
    # search back when no QRS for sbrr * regular RR average  [1.66]
    "sbrr": 1.4,
    # ... among peaks at least sb_min * RR average after the last QRS (not its T wave)
    "sb_min": 0.35,
    # thresholds act on MWI ** amp: 1 = energy (PT), 0.5 = amplitude. 0.6 keeps small
    # beats beside big ectopics (bigeminy) above threshold without admitting noise.
    "amp": 0.6,
    # an MWI peak is confirmed once the MWI falls under half of it, or after timeout
    "half": 0.5,
    "timeout": 0.150,
    # no QRS within refractory of the last one (MWI peaks)  [0.200]
    "refractory": 0.200,
    # apex search window: apex_lo .. apex_hi before the MWI peak
    "apex_lo": 0.190,
    "apex_hi": 0.060,
    # apex of the record's dominant polarity unless the other is dom times larger
    "dom": 3.0,
    # same complex, not a new beat: apex within min_rr of the last apex and either of the
    # opposite polarity (pol = 1) or under lobe * its amplitude (wide PVC lobes)
    "min_rr": 0.24,
    "lobe": 0.5,
    "pol": 1.0,
    # ... unless the last QRS was typical (slope within 1 / (1 + typical) .. 1 + typical
    # times the running average) and the peak is over t_level times the MWI peak that this
    # record's T waves reach after a typical QRS (learned online); 0 turns it off
    "t_level": 6.0,
    "typical": 0.4,
    # a QRS is replaced by a steeper peak over replace times its MWI peak that comes within
    # replace_s (or replace_rr * regular RR average, if shorter) after it: the QRS was a
    # tall P wave or another precursor; 0 turns it off
    "replace": 1.1,
    "replace_s": 0.24,
    "replace_rr": 0.6,
    # search-back takes a peak between sb_min and sb_t * RR average after the last QRS
    # only when that QRS was typical, the peak lies past the T-wave window and its MWI
    # peak is over sb_tl times this record's T-wave level: an early small ectopic beat
    # (the aberrated APCs of mitdb 201), not a late T wave or the back of a PVC
    "sb_t": 0.6,
    "sb_tl": 2.0,
}

_RING = 256  # ring buffers of recent samples (power of two)
_MASK = _RING - 1
_NCAND_MAX = 64
_NRR_AVG = 8

# Candidate columns: MWI-peak index, MWI amplitude, band amplitude, slope, apex index.
_CP, _CAI, _CAF, _CSL, _CAPEX, _CAMP = range(6)


@njit(cache=True, inline="always")
def _thresholds(fs_, par):
    ti = fs_[_NPKI] + par[_TH] * (fs_[_SPKI] - fs_[_NPKI])
    tf = fs_[_NPKF] + par[_TH] * (fs_[_SPKF] - fs_[_NPKF])
    return ti, tf


@njit(cache=True, inline="always")
def _same_complex(is_, fs_, par, apex, amp):
    """A deflection too close to the last QRS apex and much smaller than it is another
    lobe of the same (wide) complex, not a new beat."""
    if apex - is_[_LAST_APEX] >= par[_MINRR]:
        return False
    last = fs_[_LAST_AMP]
    if par[_POL] > 0 and amp * last < 0.0:
        return True
    return abs(amp) < par[_LOBE] * abs(last)


@njit(cache=True, inline="always")
def _gap_between(is_, last, p):
    """The end (first sample after it) of the latest marked data gap that ends after MWI
    peak ``last`` and not after ``p``; -1 when none does."""
    for j in range(_NI_ALL - 1, _GAPS - 1, -1):
        stop = is_[j]
        if last < stop <= p:
            return stop
    return -1


@njit(cache=True, inline="always")
def _is_twave(is_, fs_, par, p, ai, slope, twave):
    """T-wave discrimination for an MWI peak at ``p`` that passed the thresholds."""
    last = is_[_LAST_P]
    stop = _gap_between(is_, last, p)
    if stop >= 0:
        # The first peak after a data gap: a QRS lost in the gap may have left its T wave
        # here. Within the T-wave window of the latest such QRS (its MWI peak at most one
        # MWI width past the gap), a peak under half the slope of the last QRS seen is
        # taken for that T wave.
        return p - stop - is_[_MWI_W] < twave and slope < par[_TW] * fs_[_LAST_SLOPE]
    if last < 0:
        return False
    if p - last >= twave:
        return False
    if slope >= par[_TW] * fs_[_LAST_SLOPE]:
        return False
    # Far above this record's T waves (after a typical QRS, so not a PVC's own tall T wave):
    # an early ectopic beat, not a T wave.
    if par[_TLEV] > 0.0 and is_[_LAST_TYP] == 1:
        return ai < par[_TLEV] * fs_[_TLEVEL] * fs_[_LAST_AI]
    return True


@njit(cache=True)
def _commit(is_, out, n_out):
    """Report the pending QRS."""
    if is_[_PEND] == 0:
        return n_out
    is_[_PEND] = 0
    out[n_out, 0] = is_[_LAST_APEX]
    out[n_out, 1] = is_[_G] - 1
    return n_out + 1


@njit(cache=True)
def _accept(is_, fs_, par, rr, rr2, p, ai, af, slope, apex, amp, searchback, twave, out, n_out):
    """Register a QRS: update signal levels, RR averages; append its apex to ``out``."""
    n_out = _commit(is_, out, n_out)
    if searchback:
        fs_[_SPKI] = 0.25 * ai + 0.75 * fs_[_SPKI]
        fs_[_SPKF] = 0.25 * af + 0.75 * fs_[_SPKF]
    else:
        fs_[_SPKI] = 0.125 * ai + 0.875 * fs_[_SPKI]
        fs_[_SPKF] = 0.125 * af + 0.875 * fs_[_SPKF]
    last = is_[_LAST_P]
    if last >= 0:
        r = p - last
        # learn the T-wave level from typical beats whose T-wave window held no other QRS
        if r >= twave and is_[_LAST_TYP] == 1:
            fs_[_TLEVEL] = 0.125 * fs_[_TCUR] + 0.875 * fs_[_TLEVEL]
        fs_[_TCUR] = 0.0
        if _gap_between(is_, last, p) < 0:  # no RR interval across a data gap
            k = is_[_NRR] % _NRR_AVG
            rr[k] = r
            is_[_NRR] += 1
            avg2 = rr2.mean()
            if 0.92 * avg2 <= r <= 1.16 * avg2:
                # shift into the regular-RR buffer
                for j in range(_NRR_AVG - 1):
                    rr2[j] = rr2[j + 1]
                rr2[_NRR_AVG - 1] = r
                is_[_RR_MISS] = 0
            else:
                is_[_RR_MISS] += 1
                if is_[_RR_MISS] >= _NRR_AVG:
                    # the rhythm changed: trust the recent RRs
                    for j in range(_NRR_AVG):
                        rr2[j] = rr[j]
                    is_[_RR_MISS] = 0
    is_[_LAST_P] = p
    is_[_LAST_APEX] = apex
    is_[_SB_AT] = p + int(par[_SBRR] * rr2.mean())
    fs_[_LAST_SLOPE] = slope
    if fs_[_SLOPE_EMA] == 0.0:
        fs_[_SLOPE_EMA] = slope
    q = slope / fs_[_SLOPE_EMA]
    is_[_LAST_TYP] = 1 if 1.0 / (1.0 + par[_TYP]) <= q <= 1.0 + par[_TYP] else 0
    fs_[_SLOPE_EMA] = 0.125 * slope + 0.875 * fs_[_SLOPE_EMA]
    fs_[_LAST_AMP] = amp
    fs_[_LAST_AI] = ai
    fs_[_POL_EMA] = 0.9 * fs_[_POL_EMA] + (0.1 if amp >= 0.0 else -0.1)
    if par[_REP] > 0.0 and not searchback:
        # reported once no peak can replace it (see _classify)
        is_[_PEND] = 1
        fs_[_PEND_AI] = ai
        fs_[_PEND_SL] = slope
        return n_out
    out[n_out, 0] = apex
    out[n_out, 1] = is_[_G] - 1  # the sample at which it was confirmed
    return n_out + 1


@njit(cache=True)
def _backup(is_, fs_, rr, rr2, bk):
    """Save the state an accept changes, so that a replacement can undo it."""
    n = 0
    for j in range(_NI):
        bk[n] = is_[j]
        n += 1
    for j in range(_NF):
        bk[n] = fs_[j]
        n += 1
    for j in range(_NRR_AVG):
        bk[n] = rr[j]
        bk[n + _NRR_AVG] = rr2[j]
        n += 1


@njit(cache=True)
def _restore(is_, fs_, rr, rr2, bk):
    """Undo the last accept (the clock and the candidates found since stay)."""
    g = is_[_G]
    n = 0
    for j in range(_NI):
        is_[j] = int(bk[n])
        n += 1
    for j in range(_NF):
        fs_[j] = bk[n]
        n += 1
    for j in range(_NRR_AVG):
        rr[j] = bk[n]
        rr2[j] = bk[n + _NRR_AVG]
        n += 1
    is_[_G] = g
    is_[_NCAND] = 0


@njit(cache=True)
def _classify(
    is_, fs_, par, rr, rr2, cand, bk, p, ai, af, slope, apex, amp, refractory, twave, out, n_out
):
    """Decide one MWI peak in normal (non-learning) mode."""
    if is_[_PEND] == 1:
        if p - is_[_LAST_P] >= par[_REPW]:
            n_out = _commit(is_, out, n_out)
        elif (
            ai > par[_REP] * fs_[_PEND_AI]
            and slope > fs_[_PEND_SL]
            and p - is_[_LAST_P] < par[_REPRR] * rr2.mean()
        ):
            # the pending QRS was a precursor (a tall P wave): take this one instead
            _restore(is_, fs_, rr, rr2, bk)
            return _accept(
                is_, fs_, par, rr, rr2, p, ai, af, slope, apex, amp, False, twave, out, n_out
            )
    last = is_[_LAST_P]
    if last >= 0 and refractory <= p - last < twave:
        # the largest peak in the T-wave window, relative to its QRS
        fs_[_TCUR] = max(fs_[_TCUR], ai / fs_[_LAST_AI])
    if last >= 0 and (p - last < refractory or _same_complex(is_, fs_, par, apex, amp)):
        return n_out
    ti, tf = _thresholds(fs_, par)
    if ai > ti and af > tf:
        if _is_twave(is_, fs_, par, p, ai, slope, twave):
            fs_[_NPKI] = 0.125 * ai + 0.875 * fs_[_NPKI]
            fs_[_NPKF] = 0.125 * af + 0.875 * fs_[_NPKF]
            return n_out
        if par[_REP] > 0.0:
            n_out = _commit(is_, out, n_out)
            _backup(is_, fs_, rr, rr2, bk)
        n_out = _accept(
            is_, fs_, par, rr, rr2, p, ai, af, slope, apex, amp, False, twave, out, n_out
        )
        is_[_NCAND] = 0
        return n_out
    fs_[_NPKI] = 0.125 * ai + 0.875 * fs_[_NPKI]
    fs_[_NPKF] = 0.125 * af + 0.875 * fs_[_NPKF]
    # keep it for search-back
    nc = is_[_NCAND]
    if nc == _NCAND_MAX:
        for j in range(nc - 1):
            cand[j, :] = cand[j + 1, :]
        nc -= 1
    cand[nc, _CP] = p
    cand[nc, _CAI] = ai
    cand[nc, _CAF] = af
    cand[nc, _CSL] = slope
    cand[nc, _CAPEX] = apex
    cand[nc, _CAMP] = amp
    is_[_NCAND] = nc + 1
    return n_out


@njit(cache=True)
def _searchback(is_, fs_, par, rr, rr2, cand, g, refractory, twave, max_delay, out, n_out):
    """Search back among stored candidates when no QRS came for 166 % of the RR average."""
    n_out = _commit(is_, out, n_out)
    while True:
        last = is_[_LAST_P]
        if last < 0 or is_[_NCAND] == 0:
            return n_out
        if g <= is_[_SB_AT]:
            return n_out
        ti, tf = _thresholds(fs_, par)
        rr2_mean = rr2.mean()
        best = -1
        best_ai = 0.0
        for j in range(is_[_NCAND]):
            p = cand[j, _CP]
            if p - last < refractory or g - cand[j, _CAPEX] > max_delay:
                continue
            if p - last < par[_SBMIN] * rr2_mean:
                continue
            if p - last < par[_SBT] * rr2_mean and (
                is_[_LAST_TYP] == 0
                or p - last < twave
                or cand[j, _CAI] < par[_SBTL] * fs_[_TLEVEL] * fs_[_LAST_AI]
            ):
                continue
            if _same_complex(is_, fs_, par, int(cand[j, _CAPEX]), cand[j, _CAMP]):
                continue
            if cand[j, _CAI] <= par[_SB] * ti or cand[j, _CAF] <= par[_SB] * tf:
                continue
            if _is_twave(is_, fs_, par, p, cand[j, _CAI], cand[j, _CSL], twave):
                continue
            if cand[j, _CAI] > best_ai:
                best_ai = cand[j, _CAI]
                best = j
        if best < 0:
            return n_out
        n_out = _accept(
            is_,
            fs_,
            par,
            rr,
            rr2,
            int(cand[best, _CP]),
            cand[best, _CAI],
            cand[best, _CAF],
            cand[best, _CSL],
            int(cand[best, _CAPEX]),
            cand[best, _CAMP],
            True,
            twave,
            out,
            n_out,
        )
        # drop the chosen one and all before it
        k = 0
        for j in range(best + 1, is_[_NCAND]):
            cand[k, :] = cand[j, :]
            k += 1
        is_[_NCAND] = k


@njit(cache=True)
def _end_learning(is_, fs_, par, rr, rr2, cand, bk, refractory, twave, out, n_out):
    n = is_[_NCAND]
    fs_[_SPKI] = fs_[_LEARN_MAX]
    fs_[_NPKI] = 0.5 * fs_[_LEARN_SUM] ** par[_AMP]
    maxf = 0.0
    for j in range(n):
        maxf = max(maxf, cand[j, _CAF])
    fs_[_SPKF] = maxf
    fs_[_NPKF] = 0.0
    fs_[_TLEVEL] = 1.0
    is_[_LEARNING] = 0
    is_[_NCAND] = 0
    buf = cand[:n, :].copy()
    for j in range(n):
        n_out = _classify(
            is_,
            fs_,
            par,
            rr,
            rr2,
            cand,
            bk,
            int(buf[j, _CP]),
            buf[j, _CAI],
            buf[j, _CAF],
            buf[j, _CSL],
            int(buf[j, _CAPEX]),
            buf[j, _CAMP],
            refractory,
            twave,
            out,
            n_out,
        )
    return n_out


@njit(cache=True)
def _detect(
    x,
    sos,
    zi,
    is_,
    fs_,
    par,
    ring_x,
    ring_b,
    ring_sq,
    rr,
    rr2,
    cand,
    bk,
    out,
    w,
    refractory,
    twave,
    peak_timeout,
    learn,
    max_delay,
    apex_lo,
    apex_hi,
):
    n_out = 0
    # Hot per-sample state in locals (written back before any call that reads it).
    g = is_[_G]
    mwi_sum = fs_[_MWI_SUM]
    pk_max = fs_[_PK_MAX]
    pk_idx = is_[_PK_IDX]
    half = par[_HALF]
    learning = is_[_LEARNING] == 1
    for i in range(x.shape[0]):
        xi = x[i]
        ring_x[g & _MASK] = xi
        b = sosfilt_step(sos, zi, xi)
        ring_b[g & _MASK] = b
        # five-point derivative (Pan & Tompkins eq. 4), squared
        d = (
            2.0 * b
            + ring_b[(g - 1) & _MASK]
            - ring_b[(g - 3) & _MASK]
            - 2.0 * ring_b[(g - 4) & _MASK]
        )
        sq = d * d
        mwi_sum += sq - ring_sq[(g - w) & _MASK]
        ring_sq[g & _MASK] = sq
        mwi = mwi_sum / w
        mwi = max(mwi, 0.0)
        if learning:
            fs_[_LEARN_SUM] += mwi / learn

        # Peak of the MWI: a maximum, confirmed when the MWI has halved or timed out.
        emit = False
        if pk_idx < 0 or mwi > pk_max:
            pk_max = mwi
            pk_idx = g
        elif mwi < half * pk_max or g - pk_idx > peak_timeout:
            emit = pk_max > 0.0
        g += 1
        is_[_G] = g
        if emit:
            p = pk_idx
            ai = pk_max ** par[_AMP]
            pk_idx = -1
            pk_max = 0.0
            # band amplitude and slope over the window that built this MWI peak
            af = 0.0
            slope = 0.0
            for k in range(p - w - 4, p + 1):
                v = abs(ring_b[k & _MASK])
                af = max(af, v)
                s = ring_sq[k & _MASK]
                slope = max(slope, s)
            slope = np.sqrt(slope)
            # Apex in the input signal: the largest deflection of the record's dominant
            # polarity, unless the other polarity is much larger (par[_DOM] times).
            pos = p - apex_hi
            neg = pos
            best_pos = -np.inf
            best_neg = -np.inf
            for k in range(p - apex_lo, p - apex_hi + 1):
                v = ring_x[k & _MASK]
                if v > best_pos:
                    best_pos = v
                    pos = k
                if -v > best_neg:
                    best_neg = -v
                    neg = k
            if fs_[_POL_EMA] >= 0.0:
                apex = pos if best_pos * par[_DOM] >= best_neg else neg
            else:
                apex = neg if best_neg * par[_DOM] >= best_pos else pos
            if learning:
                if p >= w:  # skip the integrator's start-up
                    nc = is_[_NCAND]
                    if nc < _NCAND_MAX:
                        cand[nc, _CP] = p
                        cand[nc, _CAI] = ai
                        cand[nc, _CAF] = af
                        cand[nc, _CSL] = slope
                        cand[nc, _CAPEX] = apex
                        cand[nc, _CAMP] = ring_x[apex & _MASK]
                        is_[_NCAND] = nc + 1
                    fs_[_LEARN_MAX] = max(fs_[_LEARN_MAX], ai)
            else:
                n_out = _classify(
                    is_,
                    fs_,
                    par,
                    rr,
                    rr2,
                    cand,
                    bk,
                    p,
                    ai,
                    af,
                    slope,
                    apex,
                    ring_x[apex & _MASK],
                    refractory,
                    twave,
                    out,
                    n_out,
                )
        if learning:
            if g >= learn:
                n_out = _end_learning(
                    is_, fs_, par, rr, rr2, cand, bk, refractory, twave, out, n_out
                )
                learning = False
        else:
            # every MWI peak within replace_s of the pending QRS has been decided
            if is_[_PEND] == 1 and g - 1 - is_[_LAST_P] > par[_REPW] + peak_timeout:
                n_out = _commit(is_, out, n_out)
            if g - 1 > is_[_SB_AT] and is_[_NCAND] > 0:
                n_out = _searchback(
                    is_, fs_, par, rr, rr2, cand, g - 1, refractory, twave, max_delay, out, n_out
                )
    fs_[_MWI_SUM] = mwi_sum
    fs_[_PK_MAX] = pk_max
    is_[_PK_IDX] = pk_idx
    return n_out


class OnlinePanTompkins:
    """Causal, chunk-invariant Pan-Tompkins QRS detector.

    Args:
        fs: Sampling rate in Hz of the input. Default 360.
        band_hz: Passband of the detector's own bandpass (Hz). Default (5, 15), as Pan &
            Tompkins.
        mwi_s: Moving-window integration width in seconds. Default 0.150.
        twave_s: Window after a QRS where T-wave discrimination applies, seconds. Default 0.360.
        learn_s: Learning phase in seconds. Default 2.0.
        max_delay_s: Oldest candidate search-back may still take, seconds. Default 2.0.
        params: Overrides of :data:`DEFAULT_PARAMS` (for tuning experiments).

    ``push(chunk)`` takes samples of the 0.5-40 Hz filtered ECG (mV) and returns the global
    sample indices (int64) of the R peaks confirmed during that chunk, in increasing order.
    """

    def __init__(
        self,
        *,
        fs: float = 360.0,
        band_hz: tuple[float, float] = (5.0, 15.0),
        mwi_s: float = 0.150,
        twave_s: float = 0.360,
        learn_s: float = 2.0,
        max_delay_s: float = 2.0,
        params: dict[str, float] | None = None,
    ) -> None:
        if fs <= 2 * band_hz[1]:
            raise ValueError(f"fs must exceed twice band_hz[1] = {2 * band_hz[1]} Hz; got {fs}.")
        self.fs = fs
        self.band_hz = band_hz
        self.mwi_s = mwi_s
        self.twave_s = twave_s
        self.learn_s = learn_s
        self.max_delay_s = max_delay_s
        self.params = {**DEFAULT_PARAMS, **(params or {})}
        unknown = set(self.params) - set(DEFAULT_PARAMS)
        if unknown:
            raise ValueError(
                f"unknown detector params {sorted(unknown)}; known: {sorted(DEFAULT_PARAMS)}."
            )
        self._par = np.array([float(self.params[k]) for k in DEFAULT_PARAMS])
        self._par[_MINRR] *= fs  # seconds -> samples
        self._par[_REPW] *= fs
        self._w = int(round(mwi_s * fs))
        if self._w + 64 > _RING:
            raise ValueError(
                f"mwi_s={mwi_s} s too long for fs={fs} Hz; at most {(_RING - 64) / fs:.3f} s."
            )
        self._sos = butter(2, band_hz, btype="bandpass", output="sos", fs=fs)
        self._refractory = int(round(self.params["refractory"] * fs))
        self._twave = int(round(twave_s * fs))
        self._peak_timeout = int(round(self.params["timeout"] * fs))
        self._learn = int(round(learn_s * fs))
        self.max_delay = int(round(max_delay_s * fs))
        # Where the apex lies relative to the MWI peak (samples before it).
        self._apex_lo = int(round(self.params["apex_lo"] * fs))
        self._apex_hi = int(round(self.params["apex_hi"] * fs))
        self._reset()

    def _reset(self) -> None:
        self._zi = np.zeros((self._sos.shape[0], 2))
        self._is = np.zeros(_NI_ALL, dtype=np.int64)
        self._is[_LEARNING] = 1
        self._is[_PK_IDX] = -1
        self._is[_LAST_P] = -1
        self._is[_MWI_W] = self._w
        self._is[_GAPS:] = -1
        self._fs = np.zeros(_NF)
        self._ring_x = np.zeros(_RING)
        self._ring_b = np.zeros(_RING)
        self._ring_sq = np.zeros(_RING)
        self._rr = np.full(_NRR_AVG, float(round(self.fs)))
        self._rr2 = self._rr.copy()
        self._cand = np.zeros((_NCAND_MAX, 6))
        self._bk = np.zeros(_NI + _NF + 2 * _NRR_AVG)

    @property
    def n_samples(self) -> int:
        """Samples pushed so far."""
        return int(self._is[_G])

    def mark_gap(self, start: int, stop: int) -> None:
        """Samples ``start..stop-1`` (global indices) never came; the caller bridges them.

        No RR interval is measured across the gap (the RR averages that time search-back
        keep their values from before it), and the first peak after it faces the T-wave
        test as if a QRS had come at the gap's end: a QRS lost in the gap leaves its T wave
        in the data that follows, and a slow peak there is that T wave, not a beat
        (``beatwise bench gaps``, 12 mitdb records x 20 gaps of 3 s: 8 false beats in the
        second after a gap unmarked, 3 marked; no more beats missed). Mark a gap before
        pushing the samples that follow it; a gap that overlaps the last one extends it.
        The last 8 gaps are kept, so marking gaps early gives the same beats as late.

        Raises:
            ValueError: ``stop <= start`` or ``start < 0``.
        """
        start, stop = int(start), int(stop)
        if not 0 <= start < stop:
            raise ValueError(f"gap [{start}, {stop}): expected 0 <= start < stop.")
        gaps = self._is[_GAPS:]
        if start <= gaps[-1]:
            gaps[-1] = max(gaps[-1], stop)
        else:
            gaps[:-1] = gaps[1:].copy()
            gaps[-1] = stop

    def push(self, chunk) -> np.ndarray:
        """Push filtered samples (mV); return the R peaks confirmed meanwhile (global indices)."""
        return self.push_timed(chunk)[0]

    def push_timed(self, chunk) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`push`; also return, for each R peak, the sample index at which it was
        confirmed (the last sample the decision saw). Both int64, same length."""
        x = as_samples(chunk)
        out = np.empty((len(x) // max(self._refractory, 1) + _NCAND_MAX + 2, 2), dtype=np.int64)
        n = _detect(
            x,
            self._sos,
            self._zi,
            self._is,
            self._fs,
            self._par,
            self._ring_x,
            self._ring_b,
            self._ring_sq,
            self._rr,
            self._rr2,
            self._cand,
            self._bk,
            out,
            self._w,
            self._refractory,
            self._twave,
            self._peak_timeout,
            self._learn,
            self.max_delay,
            self._apex_lo,
            self._apex_hi,
        )
        return out[:n, 0].copy(), out[:n, 1].copy()

    def flush(self) -> tuple[np.ndarray, np.ndarray]:
        """End of stream: decide what is still pending (a record shorter than the learning
        phase). Returns ``(peaks, confirmed_at)`` as :meth:`push_timed`."""
        out = np.empty((_NCAND_MAX + 2, 2), dtype=np.int64)
        n = 0
        if self._is[_LEARNING] == 1:
            n = _end_learning(
                self._is,
                self._fs,
                self._par,
                self._rr,
                self._rr2,
                self._cand,
                self._bk,
                self._refractory,
                self._twave,
                out,
                0,
            )
        n = _commit(self._is, out, n)
        return out[:n, 0].copy(), out[:n, 1].copy()
