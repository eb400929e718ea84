from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from beatwise.classes import AAMI_CLASSES, CLASSES, SYMBOL_TO_AAMI, SYMBOL_TO_CLASS, class_of
from beatwise.records import RecordError, data_dir, list_records, load_record


@pytest.mark.parametrize(
    ("name", "lead"), [("100", "MLII"), ("102", "V5"), ("104", "V5"), ("114", "MLII")]
)
def test_lead_is_chosen_by_name(record, name, lead):
    assert record("mitdb", name).lead == lead


def test_mitdb_record_in_mv_at_360(record):
    rec = record("mitdb", "100")
    assert rec.fs == rec.fs_native == 360
    assert rec.signal.shape == (650_000,)
    assert 0.2 < np.percentile(np.abs(rec.signal - np.median(rec.signal)), 99.9) < 5  # mV
    assert len(rec.beat_samples) == 2273
    assert set(rec.other_symbols) >= {"+"}


def test_svdb_is_resampled_with_its_annotations(record):
    rec = record("svdb", "800")
    assert rec.fs == 360 and rec.fs_native == 128 and rec.lead == "ECG1"
    assert len(rec.signal) == 230_400 * 360 // 128
    # The beat annotations still sit on their QRS, at the start of the record and at its end
    # (a wrong rescaling drifts). svdb annotates ~20 ms before the apex, hence no zero offset.
    x = np.abs(rec.signal - np.median(rec.signal))

    def offset(beats):
        return np.median([np.argmax(x[s - 20 : s + 21]) - 20 for s in beats])

    first, last = offset(rec.beat_samples[10:300]), offset(rec.beat_samples[-300:-10])
    assert abs(first) <= 10 and abs(last - first) <= 2


def test_svdb_860_annotation_past_the_end_is_tolerated(record):
    rec = record("svdb", "860")
    assert rec.beat_samples.max() == len(rec.signal) - 1


def test_records_listed(record):
    record("mitdb", "100")
    assert len(list_records("mitdb")) == 48
    assert len(list_records("svdb")) == 78


def test_class_maps():
    assert CLASSES == ("N", "L", "R", "A", "V", "/")
    assert {class_of(s) for s in "NejLRAaJSVE/"} == set(CLASSES)
    assert class_of("F") is None and class_of("Q") is None and class_of("!") is None
    assert set(SYMBOL_TO_AAMI.values()) == set(AAMI_CLASSES)
    for sym, cls in SYMBOL_TO_CLASS.items():
        assert (
            SYMBOL_TO_AAMI[sym] == {"N": "N", "L": "N", "R": "N", "A": "S", "V": "V", "/": "Q"}[cls]
        )


# --- bad records: each error names the record and the problem -----------------------------


@pytest.fixture
def db_copy(tmp_path, record):
    """A one-record copy of mitdb 100 in a tmp data folder, to break on purpose."""
    record("mitdb", "100")
    src = data_dir() / "mitdb"
    dst = tmp_path / "baddb"
    dst.mkdir()
    for ext in ("hea", "dat", "atr"):
        shutil.copy(src / f"100.{ext}", dst / f"100.{ext}")
    (dst / "RECORDS").write_text("100\n")
    return tmp_path, dst


def test_unknown_database_names_the_folder(tmp_path, monkeypatch):
    # a folder given by the caller (--dir): the hint is about that folder, not the variable
    with pytest.raises(RecordError, match=r"nosuch.*download --db nosuch --dir ") as e:
        list_records("nosuch", root=tmp_path)
    assert str(tmp_path) in str(e.value) and "BEATWISE_DATA" not in str(e.value)
    monkeypatch.setenv("BEATWISE_DATA", str(tmp_path))
    with pytest.raises(RecordError, match=r"nosuch.*BEATWISE_DATA"):
        list_records("nosuch")


@pytest.mark.parametrize("ext", ["dat", "atr", "hea"])
def test_missing_file(db_copy, ext):
    root, dst = db_copy
    (dst / f"100.{ext}").unlink()
    with pytest.raises(RecordError, match=r"baddb/100.*missing"):
        load_record("baddb", "100", root=root)


def test_truncated_signal(db_copy):
    root, dst = db_copy
    data = (dst / "100.dat").read_bytes()
    (dst / "100.dat").write_bytes(data[:100_000])
    with pytest.raises(RecordError, match=r"baddb/100.*truncated"):
        load_record("baddb", "100", root=root)


def test_unknown_lead(db_copy):
    root, _ = db_copy
    with pytest.raises(RecordError, match=r"baddb/100: no lead 'V9'.*MLII"):
        load_record("baddb", "100", root=root, lead="V9")


def test_wrong_sampling_rate(db_copy):
    root, dst = db_copy
    hea = dst / "100.hea"
    hea.write_text(hea.read_text().replace("2 360 650000", "2 0 650000", 1))
    with pytest.raises(RecordError, match=r"baddb/100: sampling rate"):
        load_record("baddb", "100", root=root)


def test_nan_samples(tmp_path):
    import wfdb

    folder = tmp_path / "nandb"
    folder.mkdir()
    sig = np.sin(np.arange(3600) / 10.0)[:, None]
    sig[100] = np.nan
    wfdb.wrsamp(
        "r1",
        fs=360,
        units=["mV"],
        sig_name=["MLII"],
        p_signal=sig,
        fmt=["16"],
        write_dir=str(folder),
    )
    wfdb.wrann("r1", "atr", np.array([50, 400]), np.array(["N", "N"]), write_dir=str(folder))
    (folder / "RECORDS").write_text("r1\n")
    with pytest.raises(RecordError, match=r"nandb/r1: 1 non-finite samples"):
        load_record("nandb", "r1", root=tmp_path)


def test_other_rate_is_resampled(tmp_path):
    # A user's own database at 250 Hz works like svdb.
    import wfdb

    folder = tmp_path / "userdb"
    folder.mkdir()
    t = np.arange(2500) / 250
    wfdb.wrsamp(
        "u1",
        fs=250,
        units=["mV"],
        sig_name=["II"],
        p_signal=np.sin(t)[:, None],
        fmt=["16"],
        write_dir=str(folder),
    )
    wfdb.wrann("u1", "atr", np.array([250, 500]), np.array(["N", "V"]), write_dir=str(folder))
    (folder / "RECORDS").write_text("u1\n")
    rec = load_record("userdb", "u1", root=tmp_path)
    assert rec.fs == 360 and len(rec.signal) == 3600 and rec.lead == "II"
    assert rec.beat_samples.tolist() == [360, 720]
    assert Path(tmp_path).exists()
