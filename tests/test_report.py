"""Reports: figures on a known session, files written, WFDB annotations readable, the
``beatwise report`` command on a session log."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import wfdb

from beatwise.cli import main
from beatwise.report import (
    _by_bed,
    _doctor_md,
    bed_summary,
    clock,
    patient_summary,
    read_log,
    write_reports,
)
from beatwise.rhythm import RhythmMonitor

FS = 360


def session(labels: str, rr_s: float = 0.8, *, bed: str = "b1", record: str = "test/r1"):
    """A synthetic session: beats at a fixed RR, alerts from the real rules, one strip."""
    samples = FS + np.arange(len(labels)) * int(rr_s * FS)
    msgs = [
        {"type": "session", "fs": FS},
        {"type": "bed", "bed": bed, "record": record, "record_offset": 1000},
    ]
    m = RhythmMonitor()
    alerts = []
    for s, lab in zip(samples, labels):
        msgs.append(
            {
                "type": "beat",
                "bed": bed,
                "record": record,
                "sample": int(s),
                "record_sample": int(s) + 1000,
                "class": lab,
                "hr_bpm": 60 / rr_s,
            }
        )
        alerts += m.push([s], [lab])
    total = int(samples[-1] + FS)
    alerts += m.finish(total)
    msgs += [{"type": "alert", "bed": bed, **a.to_dict()} for a in alerts]
    msgs.append(
        {
            "type": "strip",
            "bed": bed,
            "kind": "couplet",
            "start_sample": 0,
            "sample": 1440,
            "fs": FS,
            "mv": np.sin(np.arange(2880) / 20).round(3).tolist(),
        }
    )
    msgs.append({"type": "end", "bed": bed, "total_samples": total})
    return msgs


def test_summary_figures():
    msgs = session("N" * 20 + "VV" + "N" * 20 + "V" + "N" * 10)
    bed = {
        "bed": "b1",
        "record": "test/r1",
        "beats": [m for m in msgs if m["type"] == "beat"],
        "alerts": [m for m in msgs if m["type"] == "alert"],
        "strips": [],
        "total": None,
    }
    s = bed_summary(bed)
    assert s["beats"] == 53 and s["counts"]["V"] == 3 and s["pvc_beats"] == 3
    assert s["hr_mean_bpm"] == pytest.approx(75, abs=0.5)
    assert s["burden_pct"]["V"] == pytest.approx(100 * 3 / 53, abs=0.01)
    assert s["couplets"] == 1 and s["isolated_pvcs"] == 1
    assert s["sdnn_ms"] == 0.0 and s["rmssd_ms"] == 0.0  # a metronome
    lines = patient_summary(s)["lines"]
    assert any("extra beats" in x for x in lines) and "not a diagnosis" in lines[-1]
    assert not any("PVC" in x or "ventricular" in x for x in lines)  # plain words


def _bed(msgs):
    kinds = {"beat": "beats", "alert": "alerts"}
    bed = {"bed": "b1", "record": "test/r1", "strips": [], "total": None, "beats": [], "alerts": []}
    for m in msgs:
        if m["type"] in kinds:
            bed[kinds[m["type"]]].append(m)
    return bed


def test_no_heart_rate_across_stretches_without_ecg():
    """75 bpm throughout; 30 s of it never came (a data gap) and 20 s had the lead off: the
    intervals across them are no RR, so the rate is not read low."""
    msgs = session("N" * 40)
    beats = [m for m in msgs if m["type"] == "beat"]
    for m in beats[20:]:
        m["sample"] += 30 * FS  # the gap: 30 s missing after beat 19
    for m in beats[30:]:
        m["sample"] += 20 * FS  # the lead off for 20 s after beat 29
    gap_at = beats[19]["sample"] + 100
    off_at = beats[29]["sample"] + 100
    msgs += [
        {
            "type": "alert",
            "bed": "b1",
            "kind": "data_gap",
            "state": "event",
            "sample": gap_at,
            "beat_sample": None,
            "detail": {"missing_messages": 300, "missing_samples": 30 * FS},
        },
        {
            "type": "alert",
            "bed": "b1",
            "kind": "lead_off",
            "state": "onset",
            "sample": off_at,
            "beat_sample": None,
            "detail": {},
        },
        {
            "type": "alert",
            "bed": "b1",
            "kind": "lead_off",
            "state": "end",
            "sample": off_at + 20 * FS,
            "beat_sample": None,
            "detail": {},
        },
    ]
    s = bed_summary(_bed(msgs))
    assert s["hr_mean_bpm"] == pytest.approx(75, abs=0.5)
    assert s["hr_min_bpm"] == pytest.approx(75, abs=0.5) and s["hr_max_bpm"] == pytest.approx(
        75, abs=0.5
    )


def test_patient_report_says_slow_rate_and_stopped_heart():
    s = bed_summary(_bed(session("N" * 30, rr_s=1.5)))  # 40 bpm
    assert s["episodes"]["brady"]
    lines = patient_summary(s)["lines"]
    assert any("slower than 50 beats a minute" in x for x in lines)
    assert not any("nothing unusual" in x for x in lines)
    s["episodes"]["asystole"] = [{"onset": "00:00:10"}]
    s["pauses"] = []
    lines = patient_summary(s)["lines"]
    assert any("stopped beating for 4 seconds or more once" in x for x in lines)
    assert not any("paused" in x for x in lines)


def test_write_reports_and_wfdb_annotations(tmp_path):
    msgs = session("N" * 10 + "VVVVV" + "N" * 10, rr_s=0.5)
    (folder,) = write_reports(msgs, tmp_path)
    doctor = json.loads((folder / "doctor.json").read_text())
    assert doctor["vtach_runs"][0]["beats"] == 5 and doctor["vtach_runs"][0]["rate_bpm"] == 120.0
    md = (folder / "doctor.md").read_text()
    assert "V-tach runs" in md and "| V | ventricular premature | 5 |" in md
    assert (folder / "patient.md").read_text().startswith("# Your heart recording")
    assert len(list(folder.glob("strip_*.png"))) == 1
    ann = wfdb.rdann(str(folder / "r1"), "bwa")
    assert ann.fs == FS and len(ann.sample) == 25
    assert ann.sample[0] == FS + 1000 and "".join(ann.symbol) == "N" * 10 + "V" * 5 + "N" * 10


def test_a_looped_session_annotates_the_first_pass_through_the_record(tmp_path):
    # --loop: record samples start over (the consumer wraps them); wrann needs them to grow
    msgs = [{"type": "bed", "bed": "b", "record": "mitdb/r2", "record_offset": 0}]
    for k in range(25):
        s = 1000 + 180 * k
        rs = s % 2000
        msgs.append({"type": "beat", "bed": "b", "sample": s, "record_sample": rs, "class": "N"})
    (folder,) = write_reports(msgs, tmp_path)
    ann = wfdb.rdann(str(folder / "r2"), "bwa")
    assert list(ann.sample) == [1000 + 180 * k for k in range(6)]  # up to the wrap at 2000


def test_a_bed_name_that_is_no_bed_name_writes_nowhere(tmp_path, caplog):
    # a session log is outside input: its bed name becomes a folder name
    msgs = session("N" * 5, bed="../escape") + session("N" * 5, bed="good")
    with caplog.at_level("WARNING"):
        folders = write_reports(msgs, tmp_path / "out")
    assert folders == [tmp_path / "out" / "good"]
    assert not (tmp_path / "escape").exists() and "'../escape'" in caplog.text


def test_a_bed_joined_late_is_watched_from_where_it_was_joined():
    # the published samples of a bed joined 100 s into the stream start at 36,000
    msgs = session("N" * 75, rr_s=0.8)  # beats from 1 s to 60.2 s
    for m in msgs:
        if "sample" in m:
            m["sample"] += 100 * FS
    msgs[1]["first_sample"] = 100 * FS
    s = bed_summary(_by_bed(msgs)["b1"])
    assert 59 <= s["span_s"] <= 62 and s["span"] == clock(s["span_s"])
    assert "1 minute" in patient_summary(s)["lines"][0]


def test_report_command_on_a_real_session_log(tmp_path, record):
    rec = record("mitdb", "119")
    # the reference annotations as a finished session's log
    msgs = [{"type": "bed", "bed": "119", "record": rec.id, "record_offset": 0}]
    keep = [(s, c) for s, c in zip(rec.beat_samples, rec.beat_symbols) if c in "NV"]
    msgs += [{"type": "beat", "bed": "119", "sample": int(s), "class": c} for s, c in keep]
    m = RhythmMonitor()
    alerts = m.push([s for s, _ in keep], [c for _, c in keep]) + m.finish(len(rec.signal))
    msgs += [{"type": "alert", "bed": "119", **a.to_dict()} for a in alerts]
    log = tmp_path / "s.jsonl"
    log.write_text("\n".join(json.dumps(x) for x in msgs) + "\n")
    assert len(read_log(log)) == len(msgs)
    assert main(["report", str(log), "--out", str(tmp_path / "out")]) == 0
    doc = json.loads((tmp_path / "out" / "119" / "doctor.json").read_text())
    assert doc["counts"]["V"] == int(np.sum(rec.beat_symbols == "V"))
    assert doc["episodes"]["bigeminy"] and doc["episodes"]["trigeminy"]
    # the .bwa matches the reference beat positions
    ann = wfdb.rdann(str(tmp_path / "out" / "119" / "119"), "bwa")
    assert np.array_equal(ann.sample, [s for s, _ in keep])


def test_bad_log_line_is_named(tmp_path):
    log = tmp_path / "bad.jsonl"
    log.write_text('{"type": "beat"}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        read_log(log)
    assert main(["report", str(tmp_path / "missing.jsonl")]) == 2


def alert(kind: str, state: str, at_s: float, bed: str = "b1", **detail) -> dict:
    """An alert message at ``at_s`` seconds, as the consumer logs it."""
    return {
        "type": "alert",
        "bed": bed,
        "kind": kind,
        "state": state,
        "sample": int(round(at_s * FS)),
        "beat_sample": None,
        "detail": detail,
    }


def test_doctor_report_lists_technical_events_and_the_patient_hears_of_them_once(tmp_path):
    """Lead off 20 s, noisy 6 s, a signal loss over a data gap of 5 s: each listed with its
    onset and duration; the stretches without ECG (25 s) summed once for the patient."""
    msgs = session("N" * 100)  # 80 s at 75 bpm
    msgs[-1:-1] = [
        alert("lead_off", "onset", 10, level_mv=0.0),
        alert("lead_off", "end", 30, onset_sample=10 * FS, duration_s=20.0),
        alert("noisy_signal", "onset", 40, noise_mv=0.3),
        alert("noisy_signal", "end", 46, onset_sample=40 * FS, duration_s=6.0),
        alert("signal_loss", "onset", 60, silent_s=1.6),
        alert("data_gap", "event", 60, missing_messages=50, missing_samples=5 * FS),
        alert("signal_loss", "end", 65, onset_sample=60 * FS, duration_s=7.2),
    ]
    (folder,) = write_reports(msgs, tmp_path)
    doc = json.loads((folder / "doctor.json").read_text())
    tech = doc["technical"]
    assert {k: v["count"] for k, v in tech.items()} == {
        "lead_off": 1,
        "signal_loss": 1,
        "data_gap": 1,
        "unlogged": 0,
        "noisy_signal": 1,
    }
    assert tech["lead_off"]["total_s"] == 20.0 and tech["noisy_signal"]["total_s"] == 6.0
    assert tech["signal_loss"]["episodes"][0]["duration_s"] == 7.2  # wall clock, as logged
    assert doc["no_ecg_s"] == 25.0  # lead off 20 + the 5 s that never came, counted once
    md = (folder / "doctor.md").read_text()
    section = md.split("## Signal quality / technical events")[1]
    for row in (
        "| 00:00:10 | Lead off | 20.0 s |",
        "| 00:00:40 | Noisy signal | 6.0 s |",
        "| 00:01:00 | Data gap | 5.0 s |",
        "| 00:01:00 | Signal loss | 7.2 s (wall clock; 5.0 s of ECG lost) |",
    ):
        assert row in section
    assert "| Lead off | 1 | 20.0 s |" in section
    lines = (folder / "patient.md").read_text().lower()
    said = [x for x in lines.splitlines() if "no usable signal" in x]
    assert len(said) == 1 and "25 seconds in all" in said[0]
    assert not any(w in lines for w in ("alarm", "danger", "warning", "!"))
    # nothing technical: nothing said, and the quiet night is still "nothing unusual"
    quiet = patient_summary(bed_summary(_bed(session("N" * 100))))["lines"]
    assert not any("usable signal" in x for x in quiet)
    assert any("nothing unusual" in x for x in quiet)


def test_an_end_without_onset_or_duration_is_paired_with_the_latest_open_onset(tmp_path):
    """Older logs: a signal_loss end names no onset and gives no duration. It pairs with
    the latest open onset of its kind on its own bed; an onset never ended lasts to the
    log's last sample; a stall in which no sample was lost lasted at least ``silent_s``."""
    msgs = session("N" * 100)  # the log's last sample at 81.2 s
    msgs[-1:-1] = [
        alert("signal_loss", "onset", 10, silent_s=1.6),
        alert("signal_loss", "onset", 12, bed="b2", silent_s=1.6),  # another bed's, open
        alert("data_gap", "event", 10, missing_messages=50, missing_samples=5 * FS),
        alert("signal_loss", "end", 15),
        alert("signal_loss", "onset", 40, silent_s=2.5),
        alert("signal_loss", "end", 40),  # the source stalled: nothing lost
        alert("lead_off", "onset", 70, level_mv=0.0),  # never ended
    ]
    beds = {
        f.name: json.loads((f / "doctor.json").read_text()) for f in write_reports(msgs, tmp_path)
    }
    loss = beds["b1"]["technical"]["signal_loss"]["episodes"]
    assert [(e["onset"], e["duration_s"], e["at_least"]) for e in loss] == [
        ("00:00:10", 5.0, False),
        ("00:00:40", 2.5, True),
    ]
    off = beds["b1"]["technical"]["lead_off"]["episodes"]
    assert off == [
        {
            "onset": "00:01:10",
            "onset_s": 70.0,
            "duration_s": 11.2,
            "ongoing": True,
            "end_logged": False,
            "at_least": False,
        }
    ]
    assert beds["b1"]["no_ecg_s"] == 16.2
    (b2,) = beds["b2"]["technical"]["signal_loss"]["episodes"]
    assert b2["ongoing"] and b2["onset"] == "00:00:12"


def test_ongoing_and_restarted_episodes_are_said_so(tmp_path):
    """An episode open when the log ends is "ongoing at end of recording". The consumer
    crashed at 50 s with a lead off and a noise episode open and restarted at 60 s: they end
    there ("end not logged"), not at the log's end, and 50-60 s was not monitored."""
    msgs = session("N" * 100)  # 75 bpm; the log's last sample at 81.2 s
    beats = [m for m in msgs if m["type"] == "beat"]
    before = [m for m in beats if m["sample"] < 50 * FS]
    after = [m for m in beats if m["sample"] >= 60 * FS]
    msgs = [
        *msgs[:2],
        *before,
        alert("lead_off", "onset", 20, level_mv=0.0),
        alert("noisy_signal", "onset", 45, noise_mv=0.3),
        {"type": "session", "fs": FS},
        {"type": "bed", "bed": "b1", "record": "test/r1", "first_sample": 60 * FS},
        *after,
        alert("noisy_signal", "onset", 75, noise_mv=0.3),
        msgs[-1],
    ]
    (folder,) = write_reports(msgs, tmp_path)
    doc = json.loads((folder / "doctor.json").read_text())
    (off,) = doc["technical"]["lead_off"]["episodes"]
    assert off["duration_s"] == 40.0 and not off["end_logged"] and not off["ongoing"]
    noisy = doc["technical"]["noisy_signal"]["episodes"]
    assert [(e["duration_s"], e["ongoing"]) for e in noisy] == [(15.0, False), (6.2, True)]
    (down,) = doc["technical"]["unlogged"]["episodes"]  # from the last beat logged
    assert down["onset_s"] == before[-1]["sample"] / FS and down["onset"] == "00:00:50"
    md = (folder / "doctor.md").read_text()
    assert "| 00:01:15 | Noisy signal | 6.2 s (ongoing at end of recording) |" in md
    assert "| 00:00:20 | Lead off | 40.0 s (end not logged) |" in md
    assert doc["no_ecg_s"] == 40.0  # the lead off and the time the monitor was down, once
    # no RR across the restart: the 75 bpm holds
    assert doc["hr_min_bpm"] == pytest.approx(75, abs=0.5) and not doc["pauses"]


def test_a_new_session_after_a_long_data_gap_is_no_restart(tmp_path):
    """The consumer itself opens a new session after a gap too long to bridge: the data gap
    says so, and the same stretch is not listed again as the monitor being down."""
    msgs = session("N" * 100)
    msgs[-1:-1] = [
        alert(
            "data_gap", "event", 50, missing_messages=100, missing_samples=10 * FS, new_session=True
        ),
        {"type": "bed", "bed": "b1", "record": "test/r1", "first_sample": 60 * FS},
    ]
    (folder,) = write_reports(msgs, tmp_path)
    doc = json.loads((folder / "doctor.json").read_text())
    assert doc["technical"]["unlogged"]["count"] == 0 and doc["no_ecg_s"] == 10.0
    assert (
        "| 00:00:50 | Data gap | 10.0 s (not bridged: a new session began) |"
        in (folder / "doctor.md").read_text()
    )


def test_one_time_format_everywhere():
    """Rounded to the nearest second, half up: a V-tach at 6.5 s reads 00:00:07 in the
    table and in its strip's name (it read 00:00:06 and 6 s: truncated, or half to even)."""
    assert [clock(t) for t in (6.4, 6.5, 7.5, 59.6, 3599.5)] == [
        "00:00:06",
        "00:00:07",
        "00:00:08",
        "00:01:00",
        "01:00:00",
    ]


def test_event_times_agree_between_sections(tmp_path):
    msgs = session("N" * 10 + "VVV" + "N" * 5, rr_s=0.55)  # first V at 360 + 10 * 198
    (onset,) = [m for m in msgs if m.get("kind") == "vtach" and m["state"] == "onset"]
    assert onset["sample"] == 2340  # 6.5 s
    msgs.insert(-1, {**msgs[-2], "kind": "vtach", "start_sample": 1620, "sample": 2340})
    (folder,) = write_reports(msgs, tmp_path)
    md = (folder / "doctor.md").read_text()
    assert "| 00:00:07 | 3 |" in md
    assert (folder / "strip_00_vtach_7s.png").exists()


def test_no_none_nan_or_bad_plurals_in_either_report(tmp_path):
    """Too few beats for HRV says so; one of a thing is singular, several plural."""
    msgs = session("NVN", rr_s=29.0)  # 3 beats in 60 s; a 29 s RR is a pause
    (folder,) = write_reports(msgs, tmp_path)
    md = (folder / "doctor.md").read_text()
    patient = (folder / "patient.md").read_text()
    for text in (md, patient):
        assert not re.search(r"\bNone\b|\bnan\b|\(s\)|\b1 \w+s\b", text), text
    assert "HRV: not enough normal-to-normal intervals" in md
    assert "watched for 1 minute;" in patient and "counted 3 heartbeats" in patient
    assert "1 beat (" in patient
    s = bed_summary(_bed(session("N" * 10 + "VVVV" + "N" * 10, rr_s=0.5)))
    lines = " ".join(patient_summary(s)["lines"])
    assert "There was 1 short spell of a fast rhythm" in lines
    s["vtach_runs"] *= 2
    assert "There were 2 short spells" in " ".join(patient_summary(s)["lines"])


def test_v_beats_inside_bigeminy_are_counted_and_explained(tmp_path):
    """The rules raise no PVC event for a V beat while bigeminy is on: the doctor report
    gives the V-beat count beside the events, and says where the rest went."""
    msgs = session("N" * 10 + "NV" * 12 + "N" * 10)
    (folder,) = write_reports(msgs, tmp_path)
    doc = json.loads((folder / "doctor.json").read_text())
    assert doc["v_beats"] == 12 and doc["episodes"]["bigeminy"]
    assert 0 < doc["isolated_pvcs"] < 12
    assert doc["isolated_pvcs"] + doc["v_beats_in_bigeminy_trigeminy"] == 12
    md = (folder / "doctor.md").read_text()
    assert "Ventricular beats (class V): 12." in md
    assert f"{doc['isolated_pvcs']} isolated PVCs" in md
    assert (
        f"{doc['v_beats_in_bigeminy_trigeminy']} V beats fell within bigeminy / trigeminy "
        "episodes: counted as beats, not as separate PVC events"
    ) in md


def _gapped(rr_s: list[float], gaps_after: dict[int, float], *, mark: bool):
    """Beats with the given RR intervals; after beat ``i`` a data gap of ``gaps_after[i]``
    s; the rules see the gaps (``mark``) as the live consumer does, or not (older logs)."""
    samples, at = [FS], FS
    for i, rr in enumerate(rr_s):
        at += int(round((rr + gaps_after.get(i, 0.0)) * FS))
        samples.append(at)
    msgs, m = [], RhythmMonitor()
    for i, s in enumerate(samples):
        if i - 1 in gaps_after:
            start = samples[i - 1] + FS // 2
            stop = start + int(round(gaps_after[i - 1] * FS))
            if mark:
                m.mark_gap(start, stop)
            msgs.append(
                alert(
                    "data_gap",
                    "event",
                    start / FS,
                    missing_messages=1,
                    missing_samples=stop - start,
                )
            )
        msgs.append({"type": "beat", "bed": "b1", "sample": int(s), "class": "N"})
        msgs += [{"type": "alert", "bed": "b1", **a.to_dict()} for a in m.push([s], ["N"])]
    msgs += [{"type": "alert", "bed": "b1", **a.to_dict()} for a in m.finish(samples[-1] + FS)]
    return _bed(msgs)


def test_heart_rate_figures_and_brady_mention_follow_one_rule():
    """Five slow RR (40 bpm) between two data gaps: the rules average the 8 RR before each
    beat, gaps left out, and raise bradycardia; the lowest rate says the same (it read 75:
    no 8-beat window free of a gap held the slow beats)."""
    rr = [0.8] * 20 + [1.5] * 6 + [0.8] * 20
    s = bed_summary(_gapped(rr, {19: 10.0, 25: 10.0}, mark=True))
    assert s["episodes"]["brady"]
    assert s["hr_min_bpm"] < 50 and s["hr_max_bpm"] == pytest.approx(75, abs=0.5)
    assert "brady" not in s["discarded"]  # (the asystole over the gaps is, as live)
    lines = " ".join(patient_summary(s)["lines"])
    assert "slower than 50 beats a minute once" in lines
    low = re.search(r"lowest (\d+)", lines)
    assert low and int(low.group(1)) < 50


def test_lowest_and_highest_rates_never_round_across_the_alarm_limits():
    s = bed_summary(_gapped([0.8] * 40, {}, mark=True))
    s["hr_min_bpm"], s["hr_max_bpm"] = 49.6, 120.2  # a bradycardia (< 50), a tachycardia (> 120)
    lines = " ".join(patient_summary(s)["lines"])
    assert "lowest 49, highest 121" in lines
    assert "min 49, max 121 bpm" in _doctor_md(s, [])


def _steady(rr: list[int], fs: int = FS) -> dict:
    """A bed whose beats repeat the RR intervals ``rr`` (samples at ``fs``) six times, with the
    rules' alerts (at the rules' 360 Hz only)."""
    samples = np.cumsum([fs] + rr * 6)
    msgs = [{"type": "beat", "bed": "b1", "sample": int(s), "class": "N"} for s in samples]
    if fs == FS:
        m = RhythmMonitor()
        alerts = [*m.push(samples, ["N"] * len(samples)), *m.finish(int(samples[-1]) + FS)]
        msgs += [{"type": "alert", "bed": "b1", **a.to_dict()} for a in alerts]
    return _bed(msgs)


def test_lowest_and_highest_rates_are_not_rounded_to_the_limits_before_the_reports(monkeypatch):
    """The summary kept the rates to 0.1 bpm by rounding, so a low of 49.986 bpm became 50.0
    and read 'min 50' / 'lowest 50' beside its bradycardia (< 50); a high of 120.02, 'max 120'."""
    s = bed_summary(_steady([432] * 7 + [433]))  # 8 RR, mean 432.125 samples: 49.986 bpm
    assert s["episodes"]["brady"]
    assert s["hr_min_bpm"] == 49.9  # the JSON keeps 0.1 bpm, the low rounded down
    assert "min 49, max 50 bpm" in _doctor_md(s, [])
    assert "lowest 49, highest 50" in " ".join(patient_summary(s)["lines"])

    # A high in (120, 120.05) needs 8 RR of 1439.4-1440 samples at 360 Hz: no whole-sample
    # beats give one, so the summary runs at 3600 Hz (the rules stay at 360: no alerts).
    monkeypatch.setattr("beatwise.report.FS", 10 * FS)
    s = bed_summary(_steady([1800] * 5 + [1799] * 3, 10 * FS))  # 14397 samples: 120.025 bpm
    assert s["hr_max_bpm"] == 120.1  # the high rounded up
    assert "min 120, max 121 bpm" in _doctor_md(s, [])
    assert "lowest 120, highest 121" in " ".join(patient_summary(s)["lines"])

    # a steady 75 bpm stays 75 / 75 (no float noise pushed across a 0.1-bpm step)
    monkeypatch.setattr("beatwise.report.FS", FS)
    s = bed_summary(_steady([288] * 8))
    assert s["hr_min_bpm"] == s["hr_max_bpm"] == 75.0
    assert "min 75, max 75 bpm" in _doctor_md(s, [])


def test_brady_pause_and_asystole_raised_only_across_a_gap_are_left_out():
    """An older monitor took the 20 s without data for 20 s without a beat: a pause, a
    bradycardia and an asystole. No ECG, no rate: all left out (and counted), as in the
    heart rate; the live consumer mutes such an asystole and pause too."""
    s = bed_summary(_gapped([0.8] * 40, {19: 20.0}, mark=False))
    assert s["hr_min_bpm"] == pytest.approx(75, abs=0.5)
    lines = " ".join(patient_summary(s)["lines"])
    assert "slower" not in lines and "paused" not in lines and "stopped" not in lines
    assert not s["pauses"] and not s["episodes"]["brady"] and not s["episodes"]["asystole"]
    assert s["discarded"] == {"pause": 1, "brady": 1, "asystole": 1}
