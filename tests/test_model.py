"""The classifier: network, TorchScript export, Classifier.load checks, a tiny training run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from beatwise.classes import CLASSES
from beatwise.dsp.beats import Beats
from beatwise.model import BeatResNet, CardError, Classifier, export_model, make_untrained
from beatwise.model.card import card_path


def _beats(n: int, seed: int = 0) -> Beats:
    rng = np.random.default_rng(seed)
    return Beats(
        np.arange(n, dtype=np.int64),
        rng.random((n, 280), dtype=np.float32),
        rng.uniform(0.4, 1.2, (n, 3)).astype(np.float32),
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


def test_predict_rejects_wrong_window_width(untrained):
    clf = Classifier.load(untrained)
    bad = Beats(np.zeros(2, np.int64), np.zeros((2, 250), np.float32), np.zeros((2, 3), np.float32))
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
    ],
)
def test_card_mismatch(untrained, field, value, message):
    path = card_path(untrained)
    card = json.loads(path.read_text())
    card[field] = value
    path.write_text(json.dumps(card))
    with pytest.raises(CardError, match=message):
        Classifier.load(untrained)


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
