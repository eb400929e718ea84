"""The ``beatwise`` command line on bad input and failures: one clear line that names the
thing, the value and what would be accepted, a non-zero exit, no traceback, nothing lost.

Run in-process through :func:`beatwise.cli.main`; nothing here uses the network (the
PhysioNet download is replaced by a stand-in that fails)."""

from __future__ import annotations

import json
import shutil

import pytest
import wfdb

from beatwise.cli import build_parser, main
from beatwise.records import data_dir
from beatwise.rhythm import KINDS, RhythmMonitor

# -- data download -----------------------------------------------------------------------


def _unreachable(*args, **kwargs) -> None:
    raise ConnectionError("physionet.org unreachable (test stand-in)")


@pytest.fixture
def offline(monkeypatch):
    """PhysioNet out of reach: every wfdb download call fails."""
    monkeypatch.setattr(wfdb, "dl_database", _unreachable)
    monkeypatch.setattr(wfdb, "get_record_list", _unreachable)


def test_failed_download_names_the_database_folder_and_cause_and_leaves_no_empty_folder(
    tmp_path, offline, capsys
):
    root = tmp_path / "new" / "data"
    assert main(["data", "download", "--db", "mitdb", "--dir", str(root)]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("beatwise: error: download of database 'mitdb'")
    assert str(root / "mitdb") in err and "physionet.org unreachable" in err
    assert list(tmp_path.iterdir()) == []  # new/, data/ and mitdb/ were made by the call


def test_failed_download_keeps_a_folder_that_held_files(tmp_path, offline, capsys):
    target = tmp_path / "mitdb"
    target.mkdir()
    (target / "100.hea").write_text("100 2 360 650000\n")
    empty = tmp_path / "svdb"
    empty.mkdir()  # there before the call, empty: not the call's to remove either
    assert main(["data", "download", "--db", "mitdb", "--dir", str(tmp_path)]) == 1
    assert (target / "100.hea").read_text() == "100 2 360 650000\n"
    assert empty.is_dir()
    assert "the files in it are kept" in capsys.readouterr().err


def test_files_fetched_before_a_failed_download_are_kept(tmp_path, monkeypatch, capsys):
    def half_way(db: str, dl_dir: str, **kwargs) -> None:
        (tmp_path / "mitdb" / "100.hea").write_text("100 2 360 650000\n")
        raise OSError("connection reset")

    monkeypatch.setattr(wfdb, "dl_database", half_way)
    assert main(["data", "download", "--db", "mitdb", "--dir", str(tmp_path)]) == 1
    assert (tmp_path / "mitdb" / "100.hea").is_file()
    err = capsys.readouterr().err
    assert "connection reset" in err and "run again to resume" in err


def test_download_writes_the_records_list(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(wfdb, "dl_database", lambda db, dl_dir, **kw: None)
    monkeypatch.setattr(wfdb, "get_record_list", lambda db: ["100", "101"])
    assert main(["data", "download", "--db", "mitdb", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "mitdb" / "RECORDS").read_text() == "100\n101\n"


# -- data check --------------------------------------------------------------------------


@pytest.fixture
def data_copy(tmp_path, record):
    """A data folder with one record of each database and their lines of SHA256SUMS."""
    wanted = {"mitdb": "100", "svdb": "800"}
    for db, name in wanted.items():
        record(db, name)  # the shared data is there (or the test is skipped / fails in CI)
        (tmp_path / db).mkdir()
        for ext in ("hea", "dat", "atr"):
            shutil.copy(data_dir() / db / f"{name}.{ext}", tmp_path / db)
        (tmp_path / db / "RECORDS").write_text(name + "\n")
    files = {f"{db}/{name}.{ext}" for db, name in wanted.items() for ext in ("hea", "dat", "atr")}
    sums = (data_dir() / "SHA256SUMS").read_text().splitlines()
    (tmp_path / "SHA256SUMS").write_text(
        "".join(ln + "\n" for ln in sums if ln.split()[-1] in files)
    )
    return tmp_path


def test_data_check_passes_on_a_whole_folder(data_copy, capsys):
    assert main(["data", "check", "--dir", str(data_copy), "--sha256"]) == 0
    out = capsys.readouterr().out
    assert "mitdb: 1 records; 3 of 3 checksums match; all files present" in out
    assert "svdb: 1 records; 3 of 3 checksums match; all files present" in out


def test_data_check_names_each_missing_file(data_copy, capsys):
    (data_copy / "mitdb" / "100.atr").unlink()
    (data_copy / "svdb" / "800.dat").unlink()
    assert main(["data", "check", "--dir", str(data_copy)]) == 1
    out = capsys.readouterr().out
    assert f"missing: {data_copy / 'mitdb' / '100.atr'}" in out
    assert f"missing: {data_copy / 'svdb' / '800.dat'}" in out
    assert "mitdb: 1 records; 1 problem(s)" in out


def test_data_check_sha256_names_a_changed_file_only_when_asked(data_copy, capsys):
    with open(data_copy / "mitdb" / "100.dat", "ab") as f:
        f.write(b"\0")
    assert main(["data", "check", "--dir", str(data_copy)]) == 0  # hashing is opt-in
    assert main(["data", "check", "--dir", str(data_copy), "--sha256"]) == 1
    out = capsys.readouterr().out
    assert f"bad checksum: {data_copy / 'mitdb' / '100.dat'}" in out
    assert "mitdb: 1 records; 2 of 3 checksums match" in out


def test_data_check_sha256_without_a_sums_file_says_so(data_copy, capsys):
    (data_copy / "SHA256SUMS").unlink()
    assert main(["data", "check", "--dir", str(data_copy), "--sha256"]) == 1
    assert f"no {data_copy / 'SHA256SUMS'}" in capsys.readouterr().out


# -- report -----------------------------------------------------------------------------


def _session_lines(labels: str, *, rr: int = 180) -> list[str]:
    """A session log's lines: one bed, beats every ``rr`` samples, alerts from the real
    rules."""
    samples = [360 + i * rr for i in range(len(labels))]
    msgs = [{"type": "session", "fs": 360}, {"type": "bed", "bed": "b1", "record": "t/r1"}]
    msgs += [
        {"type": "beat", "bed": "b1", "sample": s, "class": c} for s, c in zip(samples, labels)
    ]
    m = RhythmMonitor()
    alerts = m.push(samples, list(labels)) + m.finish(samples[-1] + 360)
    msgs += [{"type": "alert", "bed": "b1", **a.to_dict()} for a in alerts]
    msgs.append({"type": "end", "bed": "b1", "total_samples": samples[-1] + 360})
    return [json.dumps(x) for x in msgs]


@pytest.mark.parametrize(
    "text, says",
    [
        ("", "it is empty (0 bytes)"),
        ('{"type": "session", "fs": 360}\n{"type": "bed", "bed": "b1"}\n', "no beat or alert"),
    ],
)
def test_report_on_a_log_without_session_data_says_so(tmp_path, capsys, text, says):
    log = tmp_path / "s.jsonl"
    log.write_text(text)
    assert main(["report", str(log), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"session log {log} holds no session data" in err and says in err
    assert not (tmp_path / "out").exists()


def test_report_on_a_missing_log_names_its_path(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.jsonl")]) == 2
    assert f"session log {tmp_path / 'missing.jsonl'} not found" in capsys.readouterr().err


def test_report_skips_and_counts_lines_without_the_fields_it_reads(tmp_path, caplog):
    lines = _session_lines("N" * 10 + "VVVVV" + "N" * 10)
    broken = {
        3: {"type": "beat", "bed": "b1", "sample": 100},  # no class
        6: {"type": "alert", "bed": "b1", "sample": 900, "state": "event", "detail": {}},
        9: {"type": "strip", "bed": "b1", "start_sample": 0, "mv": [0.0, 0.1]},  # no kind
        12: {"type": "beat", "bed": "b1", "sample": 200, "class": "Q"},  # not one of CLASSES
        14: {"type": "alert", "bed": "b1", "sample": "x", "kind": "pvc", "state": "event"},
    }
    for i in sorted(broken):  # at these line numbers (1-based) in the log
        lines.insert(i - 1, json.dumps(broken[i]))
    log = tmp_path / "s.jsonl"
    log.write_text("\n".join(lines) + "\n")
    with caplog.at_level("WARNING", logger="beatwise.report"):
        assert main(["report", str(log), "--out", str(tmp_path / "out")]) == 0
    # the good lines still make the report
    doctor = json.loads((tmp_path / "out" / "b1" / "doctor.json").read_text())
    assert doctor["beats"] == 25 and doctor["counts"]["V"] == 5
    (warning,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert f"session log {log}: 5 line(s) skipped" in warning
    assert "line 3 (beat: no usable 'class')" in warning
    assert "line 6 (alert: no usable 'kind')" in warning and "line 9 (strip:" in warning
    assert "line 12 (beat: no usable 'class' (got 'Q'" in warning
    assert "line 14 (alert: no usable 'sample', 'detail')" in warning


# -- option values -----------------------------------------------------------------------


def test_alerts_refuses_an_unknown_kind_and_lists_the_known_ones(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["alerts", "--kind", "pvc", "vtac"])  # main would subscribe
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --kind: unknown alert kind 'vtac'" in err
    assert all(k in err for k in KINDS) and "Traceback" not in err


def test_alerts_takes_every_known_kind():
    args = build_parser().parse_args(["alerts", "--kind", *KINDS])
    assert args.kind == list(KINDS)
    assert {"lead_off", "signal_loss", "data_gap", "noisy_signal"} <= set(KINDS)


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "abc"])
def test_demo_refuses_seconds_that_are_not_a_positive_number(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["demo", "--seconds", value])  # main would run the demo
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --seconds: got {value!r}; expected a positive number of seconds" in err


def test_demo_takes_a_positive_number_of_seconds():
    assert build_parser().parse_args(["demo", "--seconds", "2.5"]).seconds == 2.5


@pytest.mark.parametrize(
    ("argv", "option", "value", "accepted"),
    [
        (["monitor", "--duration-s"], "--duration-s", "inf", "a positive number of seconds"),
        (["replay", "--records", "100", "--duration-s"], "--duration-s", "0", "a positive"),
        (["replay", "--records", "100", "--max-wall-s"], "--max-wall-s", "nan", "a positive"),
        (["bench", "stream", "--speed1-s"], "--speed1-s", "-5", "a positive"),
        (["replay", "--records", "100", "--start-s"], "--start-s", "inf", "seconds >= 0"),
        (["demo", "--start-s"], "--start-s", "x", "seconds >= 0"),
    ],
)
def test_every_seconds_option_refuses_what_is_not_a_length(argv, option, value, accepted, capsys):
    # --duration-s inf crashed the replay's load_beds with OverflowError
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*argv, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: got {value!r}; expected" in err and accepted in err


def test_a_closed_pipe_ends_quietly(tmp_path):
    import subprocess
    import sys

    # `beatwise data check | head` ended in a BrokenPipeError traceback: 30,000 lines of
    # "missing" outrun the pipe once head has gone
    for db in ("mitdb", "svdb"):
        (tmp_path / db).mkdir()
        (tmp_path / db / "RECORDS").write_text("\n".join(map(str, range(5000))) + "\n")
    out = subprocess.run(
        f"{sys.executable} -m beatwise.cli data check --dir {tmp_path} | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr


def test_download_refuses_a_database_it_does_not_read(tmp_path, capsys):
    # '--db ../x' made folders outside the data directory
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["data", "download", "--db", "../x", "--dir", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "'../x'" in err and "mitdb" in err and "svdb" in err
    assert not any(tmp_path.iterdir()) and not (tmp_path.parent / "x").exists()
