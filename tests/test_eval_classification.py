"""Classification scores, the system run (live pipeline + classifier), the eval command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from beatwise.classes import CLASSES
from beatwise.dataset import beat_record, build_dataset, save_dataset
from beatwise.eval.classification import (
    SystemRecord,
    aami_scores,
    evaluate,
    model_scores,
    render_report,
    run_system,
    system_scores,
)
from beatwise.model import make_untrained
from beatwise.model.card import read_card, write_card

N, L, R, A, V, P = range(6)


def test_model_scores_by_hand():
    s = model_scores(np.array([N, N, N, V, V, A]), np.array([N, N, V, V, V, N]))
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["per_class"]["V"]["precision"] == pytest.approx(2 / 3)
    assert s["per_class"]["V"]["recall"] == 1.0
    assert s["per_class"]["A"]["f1"] == 0.0
    # macro over the classes present in the truth (N, A, V)
    f1_n = 2 * (2 / 3) * (2 / 3) / (4 / 3)
    assert s["macro_f1"] == pytest.approx((f1_n + 0.8 + 0.0) / 3)
    assert s["confusion"]["matrix"][N][V] == 1


def _rec(symbols, ref_to_det, pred, det_to_ref, sample=None):
    return SystemRecord(
        "mitdb/999",
        np.asarray(sample if sample is not None else np.arange(len(pred)) * 300),
        np.asarray(pred),
        np.arange(len(symbols)) * 300,
        np.asarray(symbols),
        np.asarray(det_to_ref),
        np.asarray(ref_to_det),
        "",
    )


def test_system_scores_count_missed_beats_and_false_detections():
    # reference: N V A F(other) ; detections: N->N right, V missed, A->N wrong, F->V, one false
    res = _rec(
        ["N", "V", "A", "F"], [0, -1, 1, 2], [N, N, V, A], [0, 2, 3, -1], sample=[0, 600, 900, 1500]
    )
    s = system_scores([res])
    assert s["n_scored"] == 3  # F is outside the six classes
    assert s["n_right"] == 1 and s["n_missed"] == 1
    assert s["accuracy"] == pytest.approx(1 / 3)
    assert s["per_class"]["V"] == {"scored": 1, "right": 0, "missed": 1, "accuracy": 0.0}
    assert s["false_detections"]["count"] == 1
    assert s["false_detections"]["by_record"]["mitdb/999"] == {
        "samples": [1500],
        "predicted": ["A"],
    }
    # a scope scores only the listed reference beats
    assert system_scores([res], scope={"mitdb/999": np.array([0])})["accuracy"] == 1.0


def test_aami_scores():
    res = _rec(["N", "L", "A", "V", "F"], [0, 1, 2, 3, -1], [N, N, A, N], [0, 1, 2, 3])
    a = aami_scores([res])
    sysv, det = a["system"], a["detected_only"]
    assert sysv["per_class"]["N"]["se"] == 1.0  # L predicted N is right in AAMI terms
    assert sysv["per_class"]["N"]["ppv"] == pytest.approx(2 / 3)  # the V called N
    assert sysv["per_class"]["V"]["se"] == 0.0
    assert sysv["per_class"]["F"]["support"] == 1  # missed, counted in the system view
    assert sysv["accuracy"] == pytest.approx(3 / 5)
    assert det["accuracy"] == pytest.approx(3 / 4)


def test_system_run_is_the_dataset_pipeline(record, tmp_path):
    record("mitdb", "100")
    model = make_untrained(tmp_path / "m.pt")
    built = beat_record("mitdb", "100")
    for chunk in (360, 1001):
        (res,) = run_system(model, ["mitdb/100"], chunk=chunk, workers=1)
        np.testing.assert_array_equal(res.sample, built.beats.sample)
        np.testing.assert_array_equal(res.ref_to_det, built.ref_to_det)
        assert res.pred.shape == res.sample.shape


def test_evaluate_writes_json_png_and_card(record, tmp_path):
    record("mitdb", "100"), record("mitdb", "208")
    ds_path = save_dataset(
        build_dataset([("mitdb", "100"), ("mitdb", "208")], workers=1), tmp_path / "beats.npz"
    )
    model = make_untrained(tmp_path / "m.pt")
    card = read_card(model)
    # a seed model is scored on the test part of the split it was trained on: its card says
    # which; without that, or under the other protocol, evaluation refuses
    for protocol, fields, message in (
        ("seed", {}, r"m\.json: protocol None, but --protocol 'seed'"),
        ("interpatient", {"protocol": "seed"}, r"protocol 'seed', but --protocol 'interpatient'"),
        ("seed", {"protocol": "seed"}, r"m\.json: training.split.seed is None"),
    ):
        write_card(model, {**card, **fields})
        with pytest.raises(ValueError, match=message):
            evaluate(model=model, protocol=protocol, json_path=tmp_path / "x.json", dataset=ds_path)
    write_card(model, {**card, "protocol": "seed", "training": {"split": {"seed": 0}}})
    out = evaluate(
        model=model,
        protocol="seed",
        json_path=tmp_path / "res" / "r.json",
        dataset=ds_path,
        workers=1,
        command="beatwise eval classify ...",
    )
    saved = json.loads((tmp_path / "res" / "r.json").read_text())
    assert (tmp_path / "res" / "r.png").is_file()
    for key in ("model_accuracy", "system_accuracy", "macro_f1"):
        assert 0.0 <= saved[key] <= 1.0
    assert saved["live_beats_equal_dataset_beats"] is True
    # the test split scores about a fifth of the six-class reference beats, missed ones included
    assert 0.15 < saved["system"]["n_scored"] / (2273 + 2955) < 0.25
    assert saved["system"]["n_scored"] >= saved["model"]["n"]
    # one database here: its breakdown is the whole
    (db,) = saved["by_database"].values()
    assert db["test_beats"] == saved["model"]["n"]
    assert db["model_accuracy"] == saved["model_accuracy"]
    assert db["system_scored"] == saved["system"]["n_scored"]
    assert db["system_accuracy"] == saved["system_accuracy"]
    # errors per record: most first, summing to the model's errors (two records: both fit)
    errs = saved["model"]["errors_by_record"]
    assert errs  # an untrained model errs
    assert [e["errors"] for e in errs] == sorted((e["errors"] for e in errs), reverse=True)
    assert sum(e["errors"] for e in errs) == round((1 - saved["model_accuracy"]) * db["test_beats"])
    assert sum(e["test_beats"] for e in errs) <= db["test_beats"]
    card = read_card(model)
    assert card["metrics"]["system_accuracy"] == out["system_accuracy"]
    # the card still matches the model file after the update
    from beatwise.model import Classifier

    Classifier.load(model)
    md = render_report([("r.json", saved)])
    assert "| seed protocol, model accuracy | >= 99.5%" in md  # row present, "not run"
    assert "By database: mitdb: model " in md
    assert f"Most test-beat errors: {errs[0]['record']} {errs[0]['errors']} of " in md
    assert set(CLASSES) <= set(saved["model"]["per_class"])


def test_the_target_table_says_met_or_not_from_the_unrounded_figure():
    """A row is met only if the shipped model's figure reaches the target; 99.399 % shows
    as 99.40 % and does not meet >= 99.4 %. Rows without a target (reported) say nothing."""
    root = Path(__file__).resolve().parents[1]
    seed = json.loads((root / "docs/results/classify_seed.json").read_text())
    seed.update(model_accuracy=0.995, system_accuracy=0.99399, macro_f1=0.9699)
    rows = {
        line.split(" | ")[0][2:]: line
        for line in render_report([("classify_seed.json", seed)]).splitlines()
        if line.startswith("| ") and " | " in line
    }
    assert rows["seed protocol, model accuracy"].endswith("| 99.50% | met |")
    assert rows[
        "seed protocol, system accuracy (live pipeline, missed beats count)"
    ].endswith("| 99.40% | **not met** |")
    assert rows["seed protocol, macro-F1 over the six classes"].endswith("| 0.970 | **not met** |")
    assert rows["inter-patient DS2, AAMI V F1"].endswith("| not run |  |")
