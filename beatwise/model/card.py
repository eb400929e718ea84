"""Model cards: the JSON beside each shipped model that says what it expects and how it scored.

The card of ``models/beatwise_seed.pt`` is ``models/beatwise_seed.json``. :func:`check_card`
is what :class:`beatwise.model.infer.Classifier` runs before it trusts a model: the card must
describe exactly what :class:`beatwise.pipeline.BeatPipeline` feeds it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from beatwise.classes import CLASSES, SYMBOL_TO_CLASS
from beatwise.dsp.beats import TEMPLATE_BEATS
from beatwise.pipeline import WINDOW_AFTER, WINDOW_BEFORE
from beatwise.records import FS

__all__ = [
    "CARD_FORMAT",
    "CardError",
    "WINDOW_SOURCES",
    "base_card",
    "card_path",
    "check_card",
    "read_card",
    "sha256_of",
    "write_card",
]

#: Version tag of the card layout.
CARD_FORMAT = "beatwise-model-card/1"


class CardError(ValueError):
    """A model file or card that cannot be used: missing, corrupt, or not matching the pipeline."""


def card_path(model_path: str | Path) -> Path:
    """The card of a model file: same folder and stem, ``.json``."""
    return Path(model_path).with_suffix(".json")


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _template_spec() -> dict[str, Any]:
    return {
        "shape": ["n", WINDOW_BEFORE + WINDOW_AFTER],
        "dtype": "float32",
        "units": "the stream's running template: median of the windows of the last "
        "`beats` beats before this one (its own window for a stream's first beat)",
        "beats": TEMPLATE_BEATS,
    }


#: What the window input is, by the dataset's beat cutter (``beatwise dataset build
#: --detector``), and what produced it.
WINDOW_SOURCES: dict[str, tuple[str, str]] = {
    "pipeline": (
        "causally bandpassed ECG (0.5-40 Hz), min-max scaled to [0, 1] per beat",
        "beatwise.pipeline.BeatPipeline",
    ),
    "biosppy": (
        "zero-phase bandpassed ECG (0.5-40 Hz, offline), cut at biosppy Hamilton R peaks, "
        "min-max scaled to [0, 1] per beat: NOT what the live pipeline feeds (the seed's "
        "offline variant, kept to measure the train/serve mismatch)",
        "beatwise.dataset.cut_beats(detector='biosppy')",
    ),
}


def base_card(*, template: bool = False, detector: str = "pipeline") -> dict[str, Any]:
    """The parts of a card fixed by the pipeline: classes, symbols, rate, window, input spec
    (``template``: the model also takes the running template; ``detector``: the beat cutter
    of the training beats, a key of :data:`WINDOW_SOURCES`)."""
    if detector not in WINDOW_SOURCES:
        raise ValueError(f"detector must be one of {tuple(WINDOW_SOURCES)}; got {detector!r}.")
    units, producer = WINDOW_SOURCES[detector]
    card = {
        "format": CARD_FORMAT,
        "classes": list(CLASSES),
        "symbols": {c: sorted(s for s, k in SYMBOL_TO_CLASS.items() if k == c) for c in CLASSES},
        "fs": FS,
        "window": {
            "before": WINDOW_BEFORE,
            "after": WINDOW_AFTER,
            "length": WINDOW_BEFORE + WINDOW_AFTER,
            "r_peak_index": WINDOW_BEFORE,
        },
        "input": {
            "window": {
                "shape": ["n", WINDOW_BEFORE + WINDOW_AFTER],
                "dtype": "float32",
                "units": units,
            },
            "rr": {
                "shape": ["n", 3],
                "dtype": "float32",
                "units": "seconds",
                "columns": ["pre_rr", "post_rr", "local_mean_rr"],
            },
        },
        "output": {
            "shape": ["n", len(CLASSES)],
            "meaning": "logits in 'classes' order (softmax gives probabilities)",
        },
        "producer": producer,
    }
    if template:
        card["input"]["template"] = _template_spec()
    return card


def write_card(model_path: str | Path, card: dict[str, Any]) -> Path:
    """Write ``card`` beside ``model_path``, with the model file's sha256 filled in."""
    out = card_path(model_path)
    card = dict(card)
    card["model_file"] = Path(model_path).name
    card["sha256"] = sha256_of(model_path)
    out.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    return out


def read_card(model_path: str | Path) -> dict[str, Any]:
    """Read the card beside ``model_path``.

    Raises:
        CardError: naming the card file when it is missing or not a JSON object.
    """
    path = card_path(model_path)
    if not path.is_file():
        raise CardError(
            f"model card {path} not found: every model needs its card beside it "
            f"(same name, .json), as written by 'beatwise train'."
        )
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CardError(f"model card {path}: not valid JSON ({exc}).") from exc
    if not isinstance(card, dict):
        raise CardError(f"model card {path}: expected a JSON object, got {type(card).__name__}.")
    return card


def check_card(
    card: dict[str, Any],
    *,
    model_path: str | Path,
    verify_sha256: bool = True,
    other_beats: bool = False,
) -> None:
    """Check that a card matches what the pipeline feeds and the model file beside it.

    Args:
        card: The card.
        model_path: The model file it describes.
        verify_sha256: Check the card's sha256 against the model file. Default True.
        other_beats: Accept a model trained on beats the pipeline does not cut (the
            ``--detector biosppy`` variant), for the one place that feeds it pipeline beats on
            purpose: the mismatch measurement of ``beatwise eval classify``. Default False.

    Raises:
        CardError: naming the card, the field, the value found and the value expected.
    """
    path = card_path(model_path)
    expected = base_card()
    if not other_beats and card.get("producer") != expected["producer"]:
        raise CardError(
            f"model card {path}: producer is {card.get('producer')!r}: the model was trained on "
            f"beats that {expected['producer']} does not cut, so the live pipeline would feed "
            f"it beats unlike its training beats; use a model trained on "
            f"'beatwise dataset build' beats (e.g. models/beatwise_interpatient.pt)."
        )
    checks: list[tuple[str, Any, Any]] = [
        ("format", card.get("format"), CARD_FORMAT),
        ("classes", card.get("classes"), expected["classes"]),
        ("fs", card.get("fs"), expected["fs"]),
    ]
    window = card.get("window") if isinstance(card.get("window"), dict) else {}
    checks += [
        ("window.before", window.get("before"), WINDOW_BEFORE),
        ("window.after", window.get("after"), WINDOW_AFTER),
    ]
    inputs = card.get("input") if isinstance(card.get("input"), dict) else {}
    rr = inputs.get("rr") if isinstance(inputs.get("rr"), dict) else {}
    checks += [
        ("input.rr.units", rr.get("units"), "seconds"),
        ("input.rr.columns", rr.get("columns"), expected["input"]["rr"]["columns"]),
    ]
    if "template" in inputs:  # the model takes the running template: it must span our beats
        template = inputs["template"] if isinstance(inputs["template"], dict) else {}
        checks.append(("input.template.beats", template.get("beats"), TEMPLATE_BEATS))
    for field, got, want in checks:
        if got != want:
            raise CardError(
                f"model card {path}: {field} is {got!r}, but the pipeline feeds {want!r}; "
                f"this model was not trained on BeatPipeline beats (retrain it)."
            )
    if verify_sha256:
        want_sha = card.get("sha256")
        got_sha = sha256_of(model_path)
        if want_sha != got_sha:
            raise CardError(
                f"model card {path}: sha256 {want_sha!r} does not match model file "
                f"{model_path} ({got_sha}); the card describes another model."
            )
