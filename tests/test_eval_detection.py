"""Detection scoring (beatwise.eval.detection) and its commands (eval/bench detect)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from beatwise.cli import main
from beatwise.eval import detection as dt
from beatwise.eval.detection import Counts, gross, rates, score, tolerance_samples
from beatwise.records import RecordError

# ------------------------------------------------------------------ arithmetic, by hand


def test_tolerance_is_54_samples_at_360_hz():
    assert tolerance_samples() == 54
    assert tolerance_samples(0.150, fs=128) == 19
    with pytest.raises(ValueError, match="tolerance_s"):
        tolerance_samples(-0.1)


def test_score_counts_tp_fn_fp():
    ref = np.array([100, 500, 900, 1300])
    det = np.array([1300, 90, 560, 950, 2000])  # unsorted on purpose; 560 is 60 off: FP+FN
    assert score(det, ref, tolerance=54) == Counts(tp=3, fn=1, fp=2)


def test_score_duplicate_is_false_positive():
    assert score(np.array([100, 100, 101]), np.array([100]), tolerance=54) == Counts(1, 0, 2)


def test_score_empty():
    assert score(np.array([], dtype=np.int64), np.array([10, 20]), tolerance=5) == Counts(0, 2, 0)
    assert score(np.array([10]), np.array([], dtype=np.int64), tolerance=5) == Counts(0, 0, 1)


def test_rates_in_percent():
    r = rates(Counts(tp=90, fn=10, fp=5))
    assert r["se"] == pytest.approx(90.0)
    assert r["ppv"] == pytest.approx(100 * 90 / 95)
    assert r["der"] == pytest.approx(15.0)


def test_rates_undefined_are_none():
    assert rates(Counts(0, 0, 0)) == {"se": None, "ppv": None, "der": None}
    assert rates(Counts(0, 0, 3))["ppv"] == 0.0


def test_gross_sums_counts_then_takes_ratios():
    per_record = [Counts(tp=99, fn=1, fp=0), Counts(tp=1, fn=9, fp=10)]
    total = gross(per_record)
    assert total == Counts(tp=100, fn=10, fp=10)
    # Gross Se is 100/110, not the mean of the per-record Se (99 % and 10 %).
    assert rates(total)["se"] == pytest.approx(100 * 100 / 110)


def test_unknown_detector_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown detector 'foo'; known: beatwise, wfdb-xqrs"):
        dt.check_detectors(["beatwise", "foo"])


def test_available_names_a_missing_package(monkeypatch):
    fake = dt._Detector(lambda x, fs: x, "no_such_module_bw", "raw")
    monkeypatch.setitem(dt.DETECTORS, "fake", fake)
    assert "no_such_module_bw" in dt.available("fake")
    assert dt.available("beatwise") is None


# ------------------------------------------------------------------ real records


def test_mitdb_100_scores_above_99_percent(record):
    record("mitdb", "100")  # skips (or fails in CI) without the data
    res = dt.evaluate_record("mitdb", "100")
    assert res.n_ref == 2273
    assert res.se > 99 and res.ppv > 99
    assert res.tp + res.fn == res.n_ref
    assert res.chunk_invariant is True
    assert res.x_realtime > 1 and res.x_realtime_chunked_1s > 1


def test_timing_uses_the_injected_clock(record):
    record("mitdb", "100")
    ticks = iter(range(1000))
    res = dt.evaluate_record("mitdb", "100", clock=lambda: float(next(ticks)))
    # Each timed call spans one tick: 1 s.
    assert res.seconds == 1.0 and res.seconds_chunked_1s == 1.0
    assert res.x_realtime == pytest.approx(res.duration_s)


def test_evaluate_shows_progress_on_the_given_console(record):
    import io

    from rich.console import Console

    record("mitdb", "100")
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    (res,) = dt.evaluate("mitdb", ["100"], workers=1, console=console)
    assert res.record == "100" and res.detector == "beatwise"
    assert "mitdb: 1 detector(s) x 1" in out.getvalue()


def test_unknown_record_names_the_database(record):
    record("mitdb", "100")
    with pytest.raises(
        RecordError, match=r"'mitdb': no record\(s\) 999; its RECORDS file lists 48"
    ):
        dt.check_records("mitdb", ["100", "999"])


def test_cli_eval_detect_writes_json(record, tmp_path, capsys):
    record("mitdb", "100")
    out = tmp_path / "detect.json"
    rc = main(
        [
            "eval",
            "detect",
            "--db",
            "mitdb",
            "--records",
            "100",
            "--workers",
            "1",
            "--no-progress",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    assert {"db", "detector", "tolerance_s", "records", "totals", "environment"} <= set(report)
    assert report["db"] == "mitdb" and report["tolerance_s"] == 0.15
    row = report["records"][0]
    assert {
        "record",
        "tp",
        "fn",
        "fp",
        "se",
        "ppv",
        "der",
        "x_realtime",
        "x_realtime_chunked_1s",
    } <= set(row)
    totals = report["totals"]
    assert {"tp", "fn", "fp", "se", "ppv", "der", "x_realtime", "x_realtime_chunked_1s"} <= set(
        totals
    )
    assert totals["tp"] == row["tp"] and math.isclose(totals["se"], row["se"])
    assert {"python", "numpy", "numba", "cpu_count", "date"} <= set(report["environment"])
    assert "gross" in capsys.readouterr().out
    # The markdown table is generated from this JSON.
    md = dt.markdown_table(out, per_record=True)
    assert md.splitlines()[0].startswith("| record | beats | TP |")
    assert "| 100 |" in md and "| gross (1 records) |" in md


def test_cli_unknown_db_names_the_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BEATWISE_DATA", str(tmp_path))
    assert main(["eval", "detect", "--db", "nodb", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "'nodb'" in err and str(tmp_path / "nodb") in err


def test_bench_runs_a_peer_on_one_record(record, tmp_path):
    record("mitdb", "100")
    out = tmp_path / "bench.json"
    rc = main(
        [
            "bench",
            "detect",
            "--db",
            "mitdb",
            "--records",
            "100",
            "--detectors",
            "beatwise",
            "biosppy-hamilton",
            "--workers",
            "1",
            "--no-progress",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    by_name = {d["detector"]: d["totals"] for d in report["detectors"]}
    assert set(by_name) == {"beatwise", "biosppy-hamilton"}
    assert by_name["biosppy-hamilton"]["se"] > 99
    assert by_name["biosppy-hamilton"]["x_realtime_chunked_1s"] is None
    assert [r["detector"] for r in report["records"]] == ["beatwise", "biosppy-hamilton"]
    assert "biosppy" in report["environment"]
    assert "| biosppy-hamilton |" in dt.markdown_table(out)


def test_update_markdown_fills_marked_tables(tmp_path):
    report = {
        "db": "mitdb",
        "detector": "beatwise",
        "tolerance_s": 0.15,
        "records": [],
        "totals": {
            "records": 2,
            "n_ref": 10,
            "tp": 9,
            "fn": 1,
            "fp": 0,
            **rates(Counts(9, 1, 0)),
            "x_realtime": 1000.0,
            "x_realtime_chunked_1s": None,
        },
        "environment": {"date": "2026-01-01", "cpu_count": 2, "python": "3.11", "numba": "0"},
    }
    (tmp_path / "r.json").write_text(json.dumps(report))
    md = tmp_path / "doc.md"
    md.write_text("intro\n<!-- table: r.json -->\nstale\n<!-- end table -->\nafter\n")
    text = dt.update_markdown(md, root=tmp_path)
    assert "stale" not in text and "| gross (2 records) | 10 | 9 | 1 | 0 | 90.00 |" in text
    assert text.startswith("intro\n<!-- table: r.json -->\n| record") and text.endswith("after\n")
    assert dt.update_markdown(md, root=tmp_path) == text  # idempotent


def test_markdown_worst_records_most_errors_first(tmp_path):
    rows = [
        {
            "record": name,
            "n_ref": 10,
            "tp": 10 - fn,
            "fn": fn,
            "fp": fp,
            **rates(Counts(10 - fn, fn, fp)),
            "x_realtime": 1.0,
            "x_realtime_chunked_1s": 1.0,
        }
        for name, fn, fp in (("a", 0, 0), ("b", 3, 1), ("c", 0, 5), ("d", 1, 0))
    ]
    report = {
        "db": "x",
        "detector": "beatwise",
        "tolerance_s": 0.15,
        "records": rows,
        "totals": {
            "records": 4,
            "n_ref": 40,
            "tp": 36,
            "fn": 4,
            "fp": 6,
            **rates(Counts(36, 4, 6)),
            "x_realtime": 1.0,
            "x_realtime_chunked_1s": 1.0,
        },
        "environment": {"date": "d", "cpu_count": 1, "python": "3", "numba": "0"},
    }
    (tmp_path / "r.json").write_text(json.dumps(report))
    lines = dt.markdown_table(tmp_path / "r.json", worst=2).splitlines()
    assert [ln.split(" | ")[0] for ln in lines[2:5]] == ["| c", "| b", "| gross (4 records)"]
    assert lines[0].endswith("| missed, by symbol | R offset ms |")
