from __future__ import annotations

import numpy as np
import pytest

from beatwise.dsp.detector import DEFAULT_PARAMS, OnlinePanTompkins
from beatwise.dsp.filter import Bandpass
from beatwise.eval.matching import match_beats
from tests.contracts import CHUNKINGS, chunk_sizes, split


def _detect(chunks):
    d = OnlinePanTompkins()
    peaks, conf = zip(*[d.push_timed(c) for c in chunks], d.flush())
    return np.concatenate(peaks), np.concatenate(conf)


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize(
    ("db", "name"),
    # 108: tall P waves before 135 s, where held-back QRSs get replaced
    [("mitdb", "208"), ("mitdb", "232"), ("mitdb", "108"), ("svdb", "800")],
)
@pytest.mark.parametrize("kind", CHUNKINGS)
def test_chunk_invariance_on_real_records(record, db, name, kind):
    n = 40_000 if kind in ("1", "7") else 200_000
    xf = Bandpass().push(record(db, name).signal[:n])
    ref = _detect([xf])
    assert _same(_detect(split(xf, chunk_sizes(kind, n))), ref)


@pytest.mark.parametrize(("db", "name"), [("mitdb", "100"), ("mitdb", "114"), ("svdb", "803")])
def test_finds_the_beats_of_clean_records(record, db, name):
    rec = record(db, name)
    peaks = OnlinePanTompkins().push(Bandpass().push(rec.signal))
    d2r, r2d = match_beats(peaks, rec.beat_samples, tolerance=54)
    assert (r2d >= 0).mean() > 0.995
    assert (d2r >= 0).mean() > 0.995


def test_peaks_increase_and_delay_is_bounded(record):
    rec = record("mitdb", "232")  # long pauses: search-back territory
    d = OnlinePanTompkins()
    xf = Bandpass().push(rec.signal[:300_000])
    peaks, conf = zip(*[d.push_timed(c) for c in split(xf, chunk_sizes("360", len(xf)))])
    peaks, conf = np.concatenate(peaks), np.concatenate(conf)
    assert np.all(np.diff(peaks) > 0)
    assert np.all(conf >= peaks)
    assert np.all(conf - peaks <= max(d.max_delay, d._learn))


def test_apex_is_the_largest_deflection_near_the_beat(record):
    rec = record("mitdb", "100")
    xf = Bandpass().push(rec.signal)
    peaks = OnlinePanTompkins().push(xf)
    for p in peaks[5:200]:
        seg = np.abs(xf[p - 20 : p + 21])
        assert np.argmax(seg) == 20


def _errors(peaks, reference, symbols=None):
    d2r, r2d = match_beats(peaks, reference, tolerance=54)
    missed = r2d < 0 if symbols is None else (r2d < 0) & (symbols == "V")
    return int(missed.sum()), int((d2r < 0).sum())


def test_tall_p_waves_are_replaced_by_their_qrs(record):
    rec = record("mitdb", "108")  # P waves half as tall as the QRS, 1650-1740 s
    a, b = 1650 * 360, 1740 * 360
    xf = Bandpass().push(rec.signal[:b])[a:]
    keep = (rec.beat_samples >= a + 720) & (rec.beat_samples < b - 360)
    ref = rec.beat_samples[keep] - a

    def errors(params):
        peaks = OnlinePanTompkins(params=params).push(xf)
        return _errors(peaks[(peaks >= 720 - 54) & (peaks < b - a - 360 + 54)], ref)

    fn, fp = errors({})
    fn_off, fp_off = errors({"replace": 0.0})
    assert fn <= 5 and fp <= 15, (fn, fp)
    assert fp_off > 3 * fp and fn_off > fn  # the P waves did cost beats and false beats


def test_early_pvcs_far_above_the_t_waves_are_beats(record):
    rec = record("mitdb", "210")  # slow early PVCs at ~0.33 s, small flat T waves
    xf = Bandpass().push(rec.signal)
    # the early search-back (next test) rescues most of them too: switch it off (sb_min =
    # sb_t) to see the T-wave rule alone
    alone = {"sb_min": DEFAULT_PARAMS["sb_t"]}

    def errors(params):
        peaks = OnlinePanTompkins(params={**alone, **params}).push(xf)
        return _errors(peaks, rec.beat_samples, rec.beat_symbols)

    fn, fp = errors({})
    fn_off, fp_off = errors({"t_level": 0.0})
    assert fn <= fn_off - 10, (fn, fn_off)
    assert fp <= fp_off


def test_search_back_finds_small_early_beats_behind_a_pause(record):
    rec = record("mitdb", "201")  # small aberrated APCs ~0.5 s after a normal beat
    xf = Bandpass().push(rec.signal)

    def errors(params):
        return _errors(OnlinePanTompkins(params=params).push(xf), rec.beat_samples)

    fn, fp = errors({})
    fn_off, fp_off = errors({"sb_min": DEFAULT_PARAMS["sb_t"]})
    assert fn <= fn_off - 25, (fn, fn_off)
    assert fp <= fp_off + 2, (fp, fp_off)


def test_silence_and_flat_line_give_no_beats():
    d = OnlinePanTompkins()
    assert len(d.push(np.zeros(36_000))) == 0
    assert len(d.flush()[0]) == 0


def test_synthetic_rates_are_followed():
    fs = 360
    for bpm in (40, 75, 180):
        n = fs * 30
        x = np.zeros(n)
        rr = int(fs * 60 / bpm)
        beats = np.arange(fs, n - fs, rr)
        for b in beats:  # a narrow triangular QRS, 1 mV
            x[b - 10 : b + 11] += 1.0 - np.abs(np.arange(-10, 11)) / 10
        peaks = OnlinePanTompkins().push(Bandpass().push(x))
        _, r2d = match_beats(peaks, beats, tolerance=54)
        assert (r2d >= 0).mean() > 0.95, bpm
        assert len(peaks) <= len(beats) + 1, bpm


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="fs"):
        OnlinePanTompkins(fs=20.0)
