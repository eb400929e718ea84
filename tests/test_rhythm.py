"""Rhythm and alarm rules: each definition on a hand-made sequence, each on a real record
where it occurs (reference annotations as the classified beats), and the chunk-free
property."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beatwise.rhythm import SEVERITY, Alert, RhythmMonitor, labels_from_symbols

FS = 360


def feed(labels: str, rr_s, *, start_s: float = 1.0, clock_end_s: float | None = None):
    """Beats of the given classes at the given RR (s, scalar or per beat) -> (alerts, monitor).
    The sample clock advances to each beat's emission (its R + 0.5 s) before it."""
    rr = np.broadcast_to(np.asarray(rr_s, float), (len(labels),))
    samples = (np.round((start_s + np.concatenate([[0], np.cumsum(rr[1:])])) * FS)).astype(int)
    m = RhythmMonitor(fs=FS)
    out: list[Alert] = []
    for s, lab in zip(samples, labels):
        out += m.advance(int(s) + FS // 2)
        out += m.push([s], [lab])
    end = samples[-1] + FS if clock_end_s is None else int(clock_end_s * FS)
    out += m.advance(end)
    return out, m, samples


def kinds(alerts, state=None):
    return [(a.kind, a.state) for a in alerts if state is None or a.state == state]


def test_isolated_pvc_is_one_event_at_the_next_beat():
    alerts, _, s = feed("NNNNVNNNN", 0.8)
    assert kinds(alerts) == [("pvc", "event")]
    assert alerts[0].sample == s[4] and alerts[0].beat_sample == s[5]
    assert alerts[0].severity == "advisory"


def test_couplet():
    alerts, _, s = feed("NNNNVVNNNN", 0.8)
    assert kinds(alerts) == [("couplet", "event")]
    assert alerts[0].sample == s[4]


def test_vtach_onset_at_third_v_and_one_end():
    alerts, m, s = feed("NNNN" + "V" * 10 + "NNNN", [0.8] * 4 + [0.4] * 10 + [0.8] * 4)
    got = [a for a in alerts if a.kind == "vtach"]
    assert kinds(got) == [("vtach", "onset"), ("vtach", "end")]  # not repeated every beat
    assert got[0].beat_sample == s[6] and got[0].sample == s[4]  # completed by the 3rd V
    assert got[0].detail["rate_bpm"] == pytest.approx(150, abs=1)
    assert got[1].detail["beats"] == 10 and got[0].severity == "critical"
    assert "tachy" in {a.kind for a in alerts}  # 150 bpm run lifts the mean HR too
    assert m.rhythm != "V-tach"  # over


def test_slow_ventricular_run_is_not_vtach():
    alerts, _, _ = feed("NNNN" + "VVVV" + "NNNN", [0.8] * 4 + [0.8] * 4 + [0.8] * 4)
    assert ("vrun", "onset") in kinds(alerts) and "vtach" not in {a.kind for a in alerts}


def test_bigeminy_onset_after_three_cycles_suppresses_pvc_events():
    alerts, m, s = feed("NNNN" + "NV" * 8 + "NNNN", 0.8)
    big = [a for a in alerts if a.kind == "bigeminy"]
    assert kinds(big) == [("bigeminy", "onset"), ("bigeminy", "end")]
    assert big[0].beat_sample == s[4 + 5]  # sixth beat of the pattern
    pvcs = [a for a in alerts if a.kind == "pvc"]
    assert len(pvcs) == 2  # the first V beats, before bigeminy was established


def test_trigeminy():
    alerts, _, _ = feed("NNNN" + "NNV" * 5 + "NNNN", 0.8)
    assert kinds([a for a in alerts if a.kind == "trigeminy"]) == [
        ("trigeminy", "onset"),
        ("trigeminy", "end"),
    ]


def test_svpb_and_svt():
    alerts, _, _ = feed("NNNNANNNN", 0.8)
    assert kinds(alerts) == [("svpb", "event")]
    alerts, _, _ = feed("NNNN" + "AAAAA" + "NNNN", [0.8] * 4 + [0.45] * 5 + [0.8] * 4)
    svt = [a for a in alerts if a.kind == "svt"]
    assert kinds(svt) == [("svt", "onset"), ("svt", "end")] and svt[1].detail["beats"] == 5
    assert "svpb" not in {a.kind for a in alerts}


def test_brady_and_tachy_with_hysteresis():
    alerts, _, _ = feed("N" * 30, [0.8] * 10 + [1.5] * 10 + [0.8] * 10)
    assert kinds([a for a in alerts if a.kind == "brady"]) == [("brady", "onset"), ("brady", "end")]
    alerts, _, _ = feed("N" * 30, [0.8] * 10 + [0.4] * 10 + [0.8] * 10)
    assert kinds([a for a in alerts if a.kind == "tachy"]) == [("tachy", "onset"), ("tachy", "end")]
    # 121 <-> 118 bpm flapping: one episode, not one per crossing.
    rr = [0.8] * 8 + [60 / 125] * 8 + [60 / 118, 60 / 122] * 8
    alerts, _, _ = feed("N" * len(rr), rr)
    assert kinds([a for a in alerts if a.kind == "tachy"]) == [("tachy", "onset")]


def test_the_rate_of_a_brady_onset_reads_below_its_threshold():
    # found by review: rounded to nearest, a 49.986-bpm bradycardia (< 50) said 50.0 bpm
    rr = [0.8] * 10 + [432 / FS] * 7 + [433 / FS] + [432 / FS] * 4  # 8 RR: 49.986 bpm
    alerts, _, _ = feed("N" * len(rr), rr)
    brady = [a for a in alerts if a.kind == "brady"]
    assert kinds(brady) == [("brady", "onset")] and brady[0].detail == {"hr_bpm": 49.9}
    rr = [0.8] * 10 + [60 / 125] * 10 + [0.8] * 12  # 125 bpm, then back to 75
    tachy = [a for a in feed("N" * len(rr), rr)[0] if a.kind == "tachy"]
    onset, end = (a.detail["hr_bpm"] for a in tachy)
    assert onset > 120 and end <= 115 and round(onset, 1) == onset


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(80, 1500), min_size=2, max_size=30), st.integers(1, 12))
def test_heart_rate_is_60_over_numpys_mean_of_the_last_rr(gaps, hr_beats):
    """The rate the brady / tachy rules compare is 60 / np.mean of the last ``hr_beats``
    RR intervals, bit for bit (computed without np.mean's overhead)."""
    m = RhythmMonitor(fs=FS, hr_beats=hr_beats)
    samples = np.cumsum([FS, *gaps]).tolist()
    for k, s in enumerate(samples):
        m.push([s], ["N"])
        rr = [(b - a) / FS for a, b in zip(samples[: k + 1], samples[1 : k + 1])][-hr_beats:]
        assert m.hr_bpm == (60.0 / float(np.mean(rr)) if rr else None)


def test_pause_event_and_asystole_by_clock():
    alerts, _, s = feed("NNNNN", [0.8, 0.8, 0.8, 2.5, 0.8])
    assert kinds(alerts) == [("pause", "event")] and alerts[0].sample == s[2]
    # No beat after the last one: asystole declared only once no late beat can arrive.
    m = RhythmMonitor(fs=FS, decision_delay_s=3.25)
    m.push([FS], ["N"])
    assert m.advance(FS + int(7.2 * FS)) == []
    onset = m.advance(FS + int(7.3 * FS))
    assert kinds(onset) == [("asystole", "onset")] and onset[0].sample == FS + 4 * FS
    assert onset[0].beat_sample is None and onset[0].severity == "critical"
    end = m.push([FS + 9 * FS], ["N"])
    assert ("asystole", "end") in kinds(end) and ("pause", "event") in kinds(end)


def test_late_beat_reports_asystole_it_ended():
    m = RhythmMonitor(fs=FS)
    m.push([FS], ["N"])
    out = m.push([FS + int(4.5 * FS)], ["N"])  # arrives before the clock rule fired
    assert kinds(out)[:2] == [("asystole", "onset"), ("asystole", "end")]


def test_paced_rhythm():
    alerts, m, _ = feed("NNNN" + "/" * 12 + "NNNNNNNN", 0.8)
    assert kinds([a for a in alerts if a.kind == "paced"]) == [("paced", "onset"), ("paced", "end")]


def test_finish_closes_open_episodes_and_pending_runs():
    m = RhythmMonitor(fs=FS)
    out = []
    for i, lab in enumerate("NNNNVVVVV"):
        out += m.push([FS + i * 144], [lab])
    out += m.finish(FS + 9 * 144)
    assert ("vtach", "end") in kinds(out)
    assert not m.active


def test_errors_name_the_value():
    with pytest.raises(ValueError, match="hr_beats=0"):
        RhythmMonitor(hr_beats=0)
    m = RhythmMonitor()
    m.push([100], ["N"])
    with pytest.raises(ValueError, match="increasing"):
        m.push([50], ["N"])


def test_every_kind_has_a_severity():
    assert set(SEVERITY.values()) == {"critical", "warning", "advisory"}


def run_reference(rec, *, every: int = 1):
    """Reference beats as the classified beats; the clock advances to each beat's emission
    (R + 0.4 s), beats pushed ``every`` at a time."""
    m = RhythmMonitor(fs=FS)
    labels = labels_from_symbols(rec.beat_symbols)
    out: list[Alert] = []
    s = rec.beat_samples
    for i in range(0, len(s), every):
        out += m.push(s[i : i + every], labels[i : i + every])
        out += m.advance(int(s[min(i + every, len(s)) - 1]) + int(0.4 * FS))
    return out + m.finish(len(rec.signal))


# record -> alert kinds that must occur there (the reference annotations say so).
WHERE = {
    "203": {"vtach", "couplet", "pvc", "tachy"},
    "207": {"vrun", "pause", "svt", "bigeminy"},
    "208": {"trigeminy", "couplet", "pvc"},
    "119": {"bigeminy", "trigeminy"},
    "232": {"pause", "asystole", "brady", "svpb"},
    "102": {"paced"},
}


@pytest.mark.parametrize("name", sorted(WHERE))
def test_rules_fire_on_real_records(record, name):
    rec = record("mitdb", name)
    alerts = run_reference(rec)
    found = {a.kind for a in alerts}
    assert WHERE[name] <= found, f"mitdb/{name}: missing {WHERE[name] - found}"
    # Episodes open and close in pairs: never repeated while they last.
    c = Counter((a.kind, a.state) for a in alerts)
    for kind in found:
        assert c[(kind, "onset")] == c[(kind, "end")]


def test_vtach_onsets_of_203_lie_in_reference_vt_episodes(record):
    rec = record("mitdb", "203")
    vt = [a.sample for a in run_reference(rec) if a.kind == "vtach" and a.state == "onset"]
    # Reference rhythm changes: "(VT" opens an episode, the next rhythm note closes it.
    rhythm = [
        (s, aux)
        for s, sym, aux in zip(rec.other_samples, rec.other_symbols, rec.other_aux)
        if sym == "+"
    ]
    spans = [
        (s, rhythm[i + 1][0] if i + 1 < len(rhythm) else len(rec.signal))
        for i, (s, aux) in enumerate(rhythm)
        if aux.startswith("(VT")
    ]
    inside = sum(any(a - FS <= v <= b for a, b in spans) for v in vt)
    assert spans and inside >= 0.8 * len(vt)


def test_chunk_free_on_real_record(record):
    rec = record("mitdb", "208")
    one = run_reference(rec, every=1)
    many = run_reference(rec, every=37)
    key = lambda a: (a.sample, a.kind, a.state)  # noqa: E731
    assert sorted(map(key, one)) == sorted(map(key, many))


@settings(max_examples=80, deadline=None)
@given(
    labels=st.lists(st.sampled_from("NNNNVVA/"), min_size=5, max_size=60),
    rrs=st.lists(st.floats(0.25, 6.0), min_size=60, max_size=60),
    lags=st.lists(st.floats(0.2, 3.0), min_size=60, max_size=60),
    steps=st.lists(st.integers(1, 800), min_size=1, max_size=20),
)
def test_alerts_do_not_depend_on_when_beats_arrive(labels, rrs, lags, steps):
    """Live: each beat arrives 0.2-3 s after its R peak (the pipeline's bound), the clock
    ticks in arbitrary steps; offline: every beat at once. Same alerts."""
    n = len(labels)
    samples = (FS + np.cumsum(np.round(np.asarray(rrs[:n]) * FS))).astype(int)
    emit = np.maximum.accumulate(samples + np.round(np.asarray(lags[:n]) * FS).astype(int))
    end = int(samples[-1]) + 10 * FS
    key = lambda a: (a.kind, a.state, a.sample, a.beat_sample, str(a.detail))  # noqa: E731

    live, m, clock, i, k = [], RhythmMonitor(fs=FS, decision_delay_s=3.25), 0, 0, 0
    while clock < end:
        clock = min(clock + steps[k % len(steps)], end)
        k += 1
        j = i
        while j < n and emit[j] <= clock:
            j += 1
        live += m.push(samples[i:j], labels[i:j]) + m.advance(clock)
        i = j
    live += m.finish(end)

    m = RhythmMonitor(fs=FS, decision_delay_s=3.25)
    offline = m.push(samples, labels) + m.advance(end) + m.finish(end)
    assert sorted(map(key, live)) == sorted(map(key, offline))


def test_no_heart_rate_and_no_pause_across_samples_that_never_came():
    """A 1-s data gap at 52 bpm swallows a beat: the RR across it is 2.3 s. Measured, it
    would read the rate as 46 bpm (bradycardia) and a pause; marked, it is no RR at all."""
    rr = np.full(30, 60 / 52)
    rr[15] *= 2  # beat 15 never came: the RR before beat 16 spans the gap
    for marked in (False, True):
        samples = (np.round((1.0 + np.concatenate([[0], np.cumsum(rr[1:])])) * FS)).astype(int)
        m = RhythmMonitor(fs=FS)
        if marked:  # the gap is known before the beats around it are emitted
            m.mark_gap(samples[14] + FS // 2, samples[14] + FS // 2 + FS)
        alerts = []
        for s in samples:
            alerts += m.advance(int(s) + FS // 2) + m.push([s], ["N"])
        found = {a.kind for a in alerts}
        assert found == (set() if marked else {"pause", "brady"}), (marked, alerts)
    with pytest.raises(ValueError, match=r"gap 5\.\.5: expected 0 <= start < stop"):
        m.mark_gap(5, 5)


@pytest.mark.parametrize("cut", ["lead_off", "data_gap"])
def test_a_run_does_not_continue_across_a_lead_off_or_a_data_gap(cut):
    """Beats either side of seconds without ECG are not consecutive: V, (lead off), V, V was a
    ventricular run (tachycardia); now a PVC, then a couplet. The run open at the cut ends there."""
    samples = (np.arange(12) * 0.5 * FS).astype(int) + FS
    samples[6:] += 3 * FS  # 3 s without ECG after beat 5
    labels = list("NNNVVVVVNNNN")  # a V run of 3 before the cut, then 2 after it
    a, b = int(samples[5]) + FS // 4, int(samples[6]) - FS // 4
    m = RhythmMonitor(fs=FS)
    out = m.push(samples[:6], labels[:6])
    assert kinds(out) == [("vtach", "onset")]
    if cut == "lead_off":
        out += m.signal_off(a)
        m.signal_on(b)
    else:
        m.mark_gap(a, b)
    out += m.push(samples[6:], labels[6:]) + m.finish(int(samples[-1]) + FS)
    assert kinds(out) == [("vtach", "onset"), ("vtach", "end"), ("couplet", "event")]
    assert out[1].sample == a and out[1].detail["beats"] == 3


@pytest.mark.parametrize("cut", ["lead_off", "data_gap"])
def test_no_bigeminy_pattern_across_a_lead_off_or_a_data_gap(cut):
    """Found by review: N V N, 5 s without ECG, V N V opened a bigeminy."""
    samples = (np.arange(12) * 0.8 * FS).astype(int) + FS
    samples[3:] += 3 * FS
    labels = list("NVNVNVNVNVNV")
    a, b = int(samples[2]) + FS // 2, int(samples[3]) - FS // 2
    m = RhythmMonitor(fs=FS)
    out = m.push(samples[:3], labels[:3])
    if cut == "lead_off":
        out += m.signal_off(a)
        m.signal_on(b)
    else:
        m.mark_gap(a, b)
    out += m.push(samples[3:6], labels[3:6])
    assert "bigeminy" not in {al.kind for al in out}
    out += m.push(samples[6:], labels[6:])  # six alternating beats after the cut: bigeminy
    (onset,) = [al for al in out if al.kind == "bigeminy"]
    assert onset.sample == samples[8]
