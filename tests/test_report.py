"""Reports: figures on a known session, files written, WFDB annotations readable, the
``beatwise report`` command on a session log."""

from __future__ import annotations

import json

import numpy as np
import pytest
import wfdb

from beatwise.cli import main
from beatwise.report import bed_summary, patient_summary, read_log, write_reports
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
    assert any("stopped beating for 4 seconds or more 1 time(s)" in x for x in lines)
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
