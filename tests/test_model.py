"""The classifier: network, TorchScript export, Classifier.load checks, a tiny training run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from beatwise.classes import CLASSES
from beatwise.dsp.beats import Beats
from beatwise.model import BeatResNet, CardError, Classifier, export_model, make_untrained
from beatwise.model.card import card_path, read_card


def _beats(n: int, seed: int = 0) -> Beats:
    rng = np.random.default_rng(seed)
    return Beats(
        np.arange(n, dtype=np.int64),
        rng.random((n, 280), dtype=np.float32),
        rng.uniform(0.4, 1.2, (n, 3)).astype(np.float32),
        rng.random((n, 280), dtype=np.float32),
    )


@pytest.fixture
def untrained(tmp_path):
    return make_untrained(tmp_path / "m.pt")


def test_predict_shapes_and_probabilities(untrained):
    clf = Classifier.load(untrained)
    probs = clf.predict(_beats(10))
    assert probs.shape == (10, len(CLASSES)) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert clf.predict(_beats(0)).shape == (0, len(CLASSES))
    assert set(clf.labels(probs)) <= set(CLASSES)


def test_predict_batching_does_not_change_results(untrained):
    beats = _beats(37)
    a = Classifier.load(untrained, batch_size=5).predict(beats)
    b = Classifier.load(untrained).predict(beats)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_predict_runs_the_model_on_a_few_shapes_only(untrained):
    """However many beats a round brings, the model sees batches of a few sizes (powers of
    two up to 8, then multiples of 8 up to ``batch_size``: the CPU backend keeps kernels per
    shape, memory must stay bounded; no pass pays for more than 7 padding rows above 8), and
    the padding rows change no result."""
    clf = Classifier.load(untrained, batch_size=64)
    seen = []
    module = clf.module

    def recording(w, r):
        seen.append(tuple(w.shape))
        return module(w, r)

    clf.module = recording
    beats = _beats(300, seed=1)
    together = clf.predict(beats)
    one_by_one = np.concatenate([clf.predict(beats[i : i + 1]) for i in range(0, 300, 7)])
    for n in range(1, 200):
        clf.predict(beats[:n])
    assert {s[0] for s in seen} == {1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64}
    seen.clear()
    for n in (9, 37, 63, 64, 65, 130):
        clf.predict(beats[:n])
    assert [s[0] for s in seen] == [16, 40, 64, 64, 64, 1, 64, 64, 2]
    np.testing.assert_allclose(together[::7], one_by_one, atol=1e-6)


def test_small_passes_run_without_onednn_and_the_setting_is_restored(untrained):
    """Passes of up to 8 beats (a live round's) run on ATen's convolutions: oneDNN's setup
    cost 1.3-2.6 ms a pass there (``_ATEN_MAX_BEATS``). torch's setting is left as found."""
    import torch

    clf = Classifier.load(untrained, batch_size=64)
    module, seen = clf.module, []

    def recording(w, r):
        seen.append((len(w), torch.backends.mkldnn.enabled))
        return module(w, r)

    clf.module = recording
    for n in (1, 5, 8, 9, 40):
        clf.predict(_beats(n))
    assert seen == [(1, False), (8, False), (8, False), (16, True), (40, True)]
    assert torch.backends.mkldnn.enabled
    torch.backends.mkldnn.set_flags(False, None, None, None)
    try:  # switched off by the user: stays off
        seen.clear()
        clf.predict(_beats(40))
        assert seen == [(40, False)] and not torch.backends.mkldnn.enabled
    finally:
        torch.backends.mkldnn.set_flags(True, None, None, None)


def test_predict_rejects_wrong_window_width(untrained):
    clf = Classifier.load(untrained)
    bad = Beats(
        np.zeros(2, np.int64),
        np.zeros((2, 250), np.float32),
        np.zeros((2, 3), np.float32),
        np.zeros((2, 250), np.float32),
    )
    with pytest.raises(ValueError, match="280"):
        clf.predict(bad)


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        Classifier.load(tmp_path / "nope.pt")


def test_missing_card(untrained):
    card_path(untrained).unlink()
    with pytest.raises(CardError, match=r"m\.json"):
        Classifier.load(untrained)


def test_corrupt_model_file(untrained):
    untrained.write_bytes(b"not a torchscript zip")
    with pytest.raises(CardError, match="sha256"):
        Classifier.load(untrained)
    with pytest.raises(CardError, match="not a loadable TorchScript"):
        Classifier.load(untrained, verify_sha256=False)


def test_corrupt_card(untrained):
    card_path(untrained).write_text("{ not json")
    with pytest.raises(CardError, match="not valid JSON"):
        Classifier.load(untrained)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("fs", 250, "fs is 250"),
        ("classes", ["N", "S", "V", "F", "Q", "/"], "classes"),
        ("window", {"before": 90, "after": 160}, "window.before is 90"),
        (
            "input",
            {
                "rr": {"units": "seconds", "columns": ["pre_rr", "post_rr", "local_mean_rr"]},
                "template": {"beats": 8},
            },
            "input.template.beats is 8",
        ),
    ],
)
def test_card_mismatch(untrained, field, value, message):
    path = card_path(untrained)
    card = json.loads(path.read_text())
    card[field] = value
    path.write_text(json.dumps(card))
    with pytest.raises(CardError, match=message):
        Classifier.load(untrained)


def test_a_model_trained_on_other_beats_is_refused_by_the_pipeline(untrained):
    """A --detector biosppy model's card says so; the live pipeline will not feed it."""
    path = card_path(untrained)
    card = json.loads(path.read_text())
    assert card["producer"] == "beatwise.pipeline.BeatPipeline"
    card["producer"] = "beatwise.dataset.cut_beats(detector='biosppy')"
    path.write_text(json.dumps(card))
    with pytest.raises(CardError, match=r"m\.json: producer is .*biosppy"):
        Classifier.load(untrained)
    # the mismatch measurement feeds it pipeline beats on purpose
    assert Classifier.load(untrained, other_beats=True).card["producer"] == card["producer"]


def test_export_says_which_beats_the_model_takes(tmp_path):
    model = BeatResNet(widths=(8, 16), blocks=1).eval()
    card = read_card(export_model(model, tmp_path / "b.pt", detector="biosppy"))
    assert "zero-phase" in card["input"]["window"]["units"]
    assert "biosppy" in card["producer"]
    with pytest.raises(ValueError, match="detector must be one of .*'hamilton'"):
        export_model(model, tmp_path / "c.pt", detector="hamilton")


def test_export_round_trip_gives_same_predictions(tmp_path):
    torch.manual_seed(1)
    model = BeatResNet(widths=(8, 16), blocks=1).eval()
    beats = _beats(50, seed=3)
    with torch.inference_mode():
        before = torch.softmax(
            model(torch.from_numpy(beats.window), torch.from_numpy(beats.rr)), dim=1
        ).numpy()
    path = export_model(model, tmp_path / "r.pt")
    after = Classifier.load(path).predict(beats)
    np.testing.assert_allclose(after, before, atol=1e-5)
    assert (after.argmax(1) == before.argmax(1)).all()


# --- training, end to end on a few hundred real beats ---------------------------------------


@pytest.fixture(scope="module")
def tiny_dataset():
    from beatwise.dataset import build_dataset
    from beatwise.records import RecordError, list_records

    try:
        list_records("mitdb")
    except RecordError:
        pytest.skip("no mitdb data (set BEATWISE_DATA)")
    return build_dataset([("mitdb", "208"), ("mitdb", "100")], workers=1)


def _tiny_prepared(ds, monkeypatch=None, *, template: bool = False):
    from beatwise.model.protocols import prepare, split_dataset

    prepared = prepare(
        ds, split_dataset(ds, "seed", seed=0), seed=0, balance="none", template=template
    )
    rng = np.random.default_rng(0)
    for part, n in (("train", 300), ("val", 100)):
        keep = np.sort(rng.permutation(len(prepared[f"y_{part}"]))[:n])
        for k in ("x", "rr", "y", "t")[: 4 if template else 3]:
            prepared[f"{k}_{part}"] = prepared[f"{k}_{part}"][keep]
    return prepared


@pytest.mark.parametrize("template", [False, True])
def test_tiny_training_export_round_trip(tiny_dataset, tmp_path, template):
    from beatwise.model.train import TrainConfig, fit

    prepared = _tiny_prepared(tiny_dataset, template=template)
    config = TrainConfig(
        epochs=1, batch_size=64, widths=(8, 16), blocks=1, seed=0, template=template
    )
    model, history = fit(prepared, config=config, log=lambda _: None)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    # a template model sees the template: another one changes its output
    t_val = prepared["t_val"] if template else np.zeros_like(prepared["x_val"])
    beats = Beats(np.arange(100, dtype=np.int64), prepared["x_val"], prepared["rr_val"], t_val)
    inputs = [torch.from_numpy(beats.window), torch.from_numpy(beats.rr)]
    if template:
        inputs.append(torch.from_numpy(beats.template))
    with torch.inference_mode():
        before = torch.softmax(model(*inputs), dim=1).numpy()
    path = export_model(model, tmp_path / "tiny.pt", card={"protocol": "seed"})
    clf = Classifier.load(path)
    assert clf.takes_template is template and ("template" in clf.card["input"]) is template
    after = clf.predict(beats)
    # the live path (Bedside) cuts the beats this model needs: templates only when it takes them
    from beatwise.bedside import warm_up

    assert len(warm_up(clf).beats) >= 8
    if template:
        with pytest.raises(ValueError, match="template=True"):
            clf.predict(Beats(beats.sample, beats.window, beats.rr, np.zeros((100, 0), np.float32)))
    other = clf.predict(Beats(beats.sample, beats.window, beats.rr, 1.0 - beats.template))
    assert np.abs(other - after).max() > 1e-4 if template else np.array_equal(other, after)
    np.testing.assert_allclose(after, before, atol=1e-5)
    assert (after.argmax(1) == before.argmax(1)).all()
    # same seed, same data: the same weights
    again, _ = fit(prepared, config=config, log=lambda _: None)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_smote_balancing(tiny_dataset, monkeypatch):
    from beatwise.model import protocols

    monkeypatch.setattr(protocols, "SEED_MINORITY", 400)
    monkeypatch.setattr(protocols, "SEED_MAJORITY", 800)
    split = protocols.split_dataset(tiny_dataset, "seed", seed=0)
    p = protocols.prepare(tiny_dataset, split, seed=0)
    counts = p["info"]["train"]
    assert counts["N"] == 800
    assert counts["V"] >= 400 and counts["A"] == 400  # 208 has ~990 V, 100 ~30 A
    assert p["x_train"].shape == (sum(counts.values()), 280)
    assert p["rr_train"].shape[1] == 3
    keep = protocols.prepare(tiny_dataset, split, seed=0, balance="smote_keep_n")
    assert keep["info"]["train"]["N"] == p["info"]["train_before_balancing"]["N"] > 800
    assert keep["info"]["train"]["A"] == 400
    # the split is over reference beats: test + train + val never share a beat
    parts = [set(split.beats[k].tolist()) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def test_prepared_file_round_trip(tiny_dataset, tmp_path):
    from beatwise.model.train import load_prepared, save_prepared

    prepared = _tiny_prepared(tiny_dataset)
    path = save_prepared(prepared, tmp_path / "p.npz")
    back = load_prepared(path)
    np.testing.assert_allclose(back["x_train"], prepared["x_train"], atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(back["y_val"], prepared["y_val"])
    assert back["info"]["protocol"] == "seed"


def test_tune_logit_bias_moves_the_boundary():
    from beatwise.model.train import tune_logit_bias

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(900, int), np.full(100, 3)]
    logits = np.zeros((1000, 6))
    # class 3 scores a little higher on its own beats, but never above N without help
    logits[:, 3] = -1.0 + 0.8 * (y == 3) + 0.1 * rng.standard_normal(1000)
    bias, before, after = tune_logit_bias(logits, y)
    assert after > before and after > 0.9
    assert bias[0] == 0 and bias[3] > 0 and (bias[[1, 2, 4, 5]] == 0).all()


def test_swa_batch_norm_statistics_come_from_the_beats_it_is_given():
    """SWA's recomputed batch-norm statistics are those of the draw it is handed (an
    epoch-like draw, N undersampled), not of all training beats (~80 % N)."""
    from beatwise.model.train import _update_bn

    torch.manual_seed(0)
    x = torch.rand(400, 280)
    x[:100] = 0.9  # the draw: flat windows, unlike the other 300
    rr = torch.full((400, 3), 0.8)
    model = BeatResNet(widths=(8,), blocks=1)
    _update_bn(model, x, rr, None, torch.arange(100))
    bn = model.stem[1]
    with torch.no_grad():
        z = model.stem[0](x[:100].unsqueeze(1))
    torch.testing.assert_close(bn.running_mean, z.mean(dim=(0, 2)), rtol=1e-4, atol=1e-5)
    assert not model.training


def test_train_command_end_to_end(tiny_dataset, tmp_path):
    from beatwise.cli import main
    from beatwise.dataset import save_dataset

    ds_path = save_dataset(tiny_dataset, tmp_path / "beats.npz")
    out = tmp_path / "m.pt"
    argv = ["train", "--protocol", "seed", "--dataset", str(ds_path), "--out", str(out)]
    argv += ["--epochs", "1", "--widths", "8,16", "--blocks", "1", "--balance", "none"]
    assert main([*argv, "--tune-bias"]) == 0
    clf = Classifier.load(out)
    card = clf.card
    assert card["protocol"] == "seed" and card["command"].startswith("beatwise train")
    assert card["training"]["epochs_run"] == 1 and card["training"]["logit_bias"] is not None
    assert card["training"]["counts"]["test"]["V"] > 0
    assert os.path.getsize(out) < 5 * 2**20


def test_train_in_three_steps_prepare_fit_export(tiny_dataset, tmp_path, capsys):
    """How the shipped models are made: --prepare-only, the fit anywhere, --weights export."""
    from beatwise.cli import main
    from beatwise.dataset import save_dataset
    from beatwise.model.train import _main as fit_main

    ds_path = save_dataset(tiny_dataset, tmp_path / "beats.npz")
    prep, run, out = tmp_path / "prep.npz", tmp_path / "run", tmp_path / "m.pt"
    base = ["train", "--protocol", "seed", "--dataset", str(ds_path), "--balance", "none"]
    assert main([*base, "--widths", "8,16", "--blocks", "1", "--prepare-only", str(prep)]) == 0
    fit = ["--out", str(run), "--max-train", "300", "--config", '{"epochs": 1, "batch_size": 64}']
    assert fit_main([str(prep), *fit]) == 0
    assert main([*base, "--weights", str(run), "--tune-bias", "--out", str(out)]) == 0
    card = Classifier.load(out).card
    # the fit's settings come from the run (prepared with 8,16 x 1), not from the export's options
    assert card["architecture"]["widths"] == [8, 16] and card["architecture"]["blocks"] == 1
    assert card["training"]["config"]["epochs"] == 1 and card["training"]["epochs_run"] == 1
    assert card["training"]["fit_command"].startswith("python -m beatwise.model.train")
    assert "--prepare-only" in card["training"]["prepare_command"]
    # the card's command is one that re-makes the model: no fit options it would ignore
    assert "--weights" in card["command"] and "--tune-bias" in card["command"]
    for flag in ("--widths", "--epochs", "--blocks", "--lr", "--patience"):
        assert flag not in card["command"]
    capsys.readouterr()
    # fit options beside --weights would be ignored: refused, naming them and their values
    assert main([*base, "--weights", str(run), "--out", str(out), "--epochs", "5"]) == 2
    assert "--epochs 5" in capsys.readouterr().err
    # the card says which beat split the model was trained on: evaluation makes that one again
    assert card["training"]["split"]["seed"] == 0
    # weights fitted on another prepared set: refused, naming the prepare command to use
    assert main([*base[:-1], "smote", "--weights", str(run), "--out", str(out)]) == 2
    assert "--prepare-only" in capsys.readouterr().err
    # ... also when only the split seed differs (a stratified split has the same counts)
    assert main([*base, "--seed", "1", "--weights", str(run), "--out", str(out)]) == 2
    assert "seed 0 (here 1)" in capsys.readouterr().err
    # the run's history.json holds the fit's settings: without it, refused, naming the file
    (run / "history.json").unlink()
    assert main([*base, "--weights", str(run), "--out", str(out)]) == 2
    assert "no history.json" in capsys.readouterr().err
