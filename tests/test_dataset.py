"""The beat dataset builder: same beats as the live pipeline, deterministic, matched right."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from beatwise.classes import CLASSES, SYMBOL_TO_CLASS
from beatwise.dataset import (
    LABEL_OTHER,
    LABEL_UNMATCHED,
    TOLERANCE,
    beat_record,
    build_dataset,
    load_dataset,
    save_dataset,
)
from beatwise.dsp.beats import Beats
from beatwise.pipeline import BeatPipeline


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("db, name, chunk", [("mitdb", "208", 360), ("svdb", "800", 97)])
def test_builder_cuts_the_live_pipelines_beats(record, db, name, chunk):
    rec = record(db, name)
    built = beat_record(db, name).beats
    pipe = BeatPipeline()
    x = rec.signal
    parts = [pipe.push(x[a : a + chunk]) for a in range(0, len(x), chunk)] + [pipe.flush()]
    live = Beats.concat(parts, 280)
    assert len(live) == len(built) > 1000
    np.testing.assert_array_equal(live.sample, built.sample)
    np.testing.assert_array_equal(live.window, built.window)
    np.testing.assert_array_equal(live.rr, built.rr)


def test_build_is_deterministic_across_workers(record, tmp_path):
    record("mitdb", "100"), record("svdb", "800")  # skips without data
    recs = [("svdb", "800"), ("mitdb", "100")]
    a = save_dataset(build_dataset(recs, workers=1), tmp_path / "a.npz")
    b = save_dataset(build_dataset(recs, workers=2), tmp_path / "b.npz")
    assert _sha(a) == _sha(b)
    ds = load_dataset(a)
    assert ds.meta["records"] == ["svdb/800", "mitdb/100"]  # the order given, not finishing order
    # the templates a dataset gives its beats are those the live pipeline gives them
    for i, (db, name) in enumerate(recs):
        live = BeatPipeline(template=True).run(record(db, name).signal)
        rows = np.flatnonzero(ds["record"] == i)
        np.testing.assert_array_equal(ds.template[rows], live.template)
        np.testing.assert_array_equal(ds.beats(rows).template, live.template)


def test_labels_offsets_and_missed_beats(record):
    record("mitdb", "208")
    ds = build_dataset([("mitdb", "208")], workers=1)
    matched = ds["matched"]
    assert (ds["label"][~matched] == LABEL_UNMATCHED).all()
    assert (ds["symbol"][~matched] == "").all()
    for sym, lab in zip(ds["symbol"][matched], ds["label"][matched]):
        cls = SYMBOL_TO_CLASS.get(sym)
        assert lab == (CLASSES.index(cls) if cls else LABEL_OTHER)
    assert "F" in set(ds["symbol"].tolist())  # 208 has fusion beats: kept, label -1
    assert np.abs(ds["offset"][matched]).max() <= TOLERANCE
    # Reference side: every matched beat points back at its annotation, missed ones at -1.
    rows = np.flatnonzero(matched)
    np.testing.assert_array_equal(ds["ref_beat"][ds["ref_index"][rows]], rows)
    np.testing.assert_array_equal(
        ds["sample"][rows] - ds["ref_sample"][ds["ref_index"][rows]], ds["offset"][rows]
    )
    assert ds.meta["n_missed"] == int(np.sum(ds["ref_beat"] < 0))
    assert ds.meta["n_reference"] == ds.meta["n_matched"] + ds.meta["n_missed"]
    assert sum(ds.meta["beats_per_class"].values()) + ds.meta["beats_other"] == ds.meta["n_matched"]


def test_biosppy_variant_cuts_other_beats(record):
    record("mitdb", "100")
    bio = beat_record("mitdb", "100", detector="biosppy")
    pipe = beat_record("mitdb", "100")
    assert bio.beats.window.shape[1] == 280
    assert np.mean(bio.det_to_ref >= 0) > 0.99
    # Zero-phase filter and another R-peak rule: the windows are not the live ones.
    assert not np.array_equal(bio.beats.sample, pipe.beats.sample)


def test_unknown_detector_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="detector must be one of"):
        build_dataset([], detector="xqrs")
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        load_dataset(tmp_path / "nothing.npz")
    # not an archive, or one cut short: named, with the command that rebuilds it
    for name, data in (("text.npz", b"hello\n"), ("cut.npz", b"PK\x03\x04" + bytes(40))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=rf"beat dataset .*{name} cannot be read.*rebuild"):
            load_dataset(tmp_path / name)


def test_cli_build(record, tmp_path, capsys):
    from beatwise.cli import main

    record("mitdb", "100")
    out = tmp_path / "beats.npz"
    assert (
        main(["dataset", "build", "--records", "mitdb/100", "--out", str(out), "--workers", "1"])
        == 0
    )
    assert load_dataset(out).meta["records"] == ["mitdb/100"]
    assert "missed" in capsys.readouterr().out
