"""Classification scores: the model on test beats, and the whole live pipeline on raw records.

- :func:`model_scores`: accuracy, per-class precision / recall / F1, macro-F1, confusion.
- :func:`run_system`: each test record pushed through :class:`BeatPipeline` in chunks (as
  the live consumer does, minus ZeroMQ), every beat classified by a :class:`Classifier`,
  matched to the reference within 150 ms.
- :func:`system_scores`: a reference beat of the six classes is right only if it was
  detected *and* given its class; missed beats are errors; false detections are counted and
  listed.
- :func:`aami_scores`: AAMI EC57 classes N/S/V/F/Q, Se / +P / F1 per class.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from beatwise.classes import AAMI_CLASSES, CLASSES, SYMBOL_TO_AAMI, SYMBOL_TO_CLASS
from beatwise.dsp.beats import Beats
from beatwise.eval.matching import match_beats
from beatwise.parallel import map_in_order

__all__ = [
    "CLASS_TO_AAMI",
    "SystemRecord",
    "aami_scores",
    "model_scores",
    "plot_confusions",
    "run_system",
    "system_scores",
]

#: Our six classes in AAMI terms (DESIGN.md): N, L, R -> N; A -> S; V -> V; / -> Q.
CLASS_TO_AAMI: dict[str, str] = {"N": "N", "L": "N", "R": "N", "A": "S", "V": "V", "/": "Q"}
TOLERANCE = 54  # 150 ms at 360 Hz, in samples


def _per_class(
    m: np.ndarray, names: Sequence[str], *, aami: bool = False
) -> dict[str, dict[str, float]]:
    """Per-class scores from a confusion matrix (rows truth, first ``len(names)`` columns
    prediction; further columns, e.g. missed beats, count in the support only).

    ``aami`` names the scores as EC57 does (``se``, ``ppv``) instead of ``precision``,
    ``recall``.
    """
    k = len(names)
    tp = np.diag(m[:, :k]).astype(float)
    support, predicted = m.sum(1).astype(float), m[:, :k].sum(0).astype(float)
    out = {}
    for i, c in enumerate(names):
        p = tp[i] / predicted[i] if predicted[i] else 0.0
        r = tp[i] / support[i] if support[i] else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        first = {"se": r, "ppv": p} if aami else {"precision": p, "recall": r}
        out[c] = {**first, "f1": f1, "support": int(support[i]), "predicted": int(predicted[i])}
    return out


def model_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Scores of six-class predictions (class indices in CLASSES order).

    Returns:
        ``accuracy``, ``macro_f1`` (mean F1 over the classes present in ``y_true``),
        ``per_class`` (precision, recall, f1, support), ``confusion`` (rows truth,
        columns prediction), ``n``.
    """
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    k = len(CLASSES)
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    per = _per_class(m, CLASSES)
    present = [c for c in CLASSES if per[c]["support"]]
    return {
        "n": len(y_true),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "macro_f1": float(np.mean([per[c]["f1"] for c in present])) if present else 0.0,
        "per_class": per,
        "confusion": {"classes": list(CLASSES), "matrix": m.tolist()},
    }


@dataclass(frozen=True, eq=False)
class SystemRecord:
    """One record through the live pipeline and the classifier.

    Attributes:
        record: ``"db/name"``.
        sample: Detected R peaks (360 Hz).
        pred: Predicted class index of each detected beat.
        ref_sample: Reference beat annotation samples.
        ref_symbol: Their symbols.
        det_to_ref / ref_to_det: The 150 ms one-to-one matching.
        window_sha: sha256 of the detected beats' windows (to compare with the dataset).
    """

    record: str
    sample: np.ndarray
    pred: np.ndarray
    ref_sample: np.ndarray
    ref_symbol: np.ndarray
    det_to_ref: np.ndarray
    ref_to_det: np.ndarray
    window_sha: str


_WORKER: dict[str, Any] = {}


def _init_worker(model_path: str) -> None:
    import torch

    from beatwise.model.infer import Classifier

    torch.set_num_threads(1)
    # A --detector biosppy model is fed pipeline beats here on purpose: that is the mismatch
    # this run measures.
    _WORKER["clf"] = Classifier.load(model_path, other_beats=True)


def _system_record(args: tuple[str, int]) -> SystemRecord:
    import hashlib

    from beatwise.pipeline import BeatPipeline
    from beatwise.records import load_record

    record_id, chunk = args
    db, name = record_id.split("/")
    rec = load_record(db, name)
    pipe = BeatPipeline(template=_WORKER["clf"].takes_template)
    parts = [pipe.push(rec.signal[a : a + chunk]) for a in range(0, len(rec.signal), chunk)]
    parts.append(pipe.flush())
    beats = Beats.concat(parts, parts[-1].window.shape[1])
    probs = _WORKER["clf"].predict(beats)
    d2r, r2d = match_beats(beats.sample, rec.beat_samples, tolerance=TOLERANCE)
    return SystemRecord(
        record_id,
        beats.sample,
        probs.argmax(1).astype(np.int64),
        rec.beat_samples,
        rec.beat_symbols,
        d2r,
        r2d,
        hashlib.sha256(np.ascontiguousarray(beats.window).tobytes()).hexdigest(),
    )


def run_system(
    model_path: str | Path,
    records: Sequence[str],
    *,
    chunk: int = 360,
    workers: int = 1,
    on_record: Callable[[str], None] | None = None,
) -> list[SystemRecord]:
    """Run the live pipeline + classifier over raw records, as the consumer does.

    Args:
        model_path: The TorchScript model (with its card).
        records: Record ids ``"db/name"``.
        chunk: Samples per push (360 = one second). Default 360.
        workers: Processes, each with one torch thread. Default 1.
        on_record: Called with each record id as it finishes.

    Returns:
        One :class:`SystemRecord` per record, in the order given.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 samples; got {chunk}.")
    jobs = [(r, chunk) for r in records]
    return map_in_order(
        _system_record,
        jobs,
        workers=workers,
        initializer=_init_worker,
        initargs=(str(model_path),),
        on_result=(lambda res: on_record(res.record)) if on_record else None,
    )


def system_scores(
    results: Sequence[SystemRecord], *, scope: dict[str, np.ndarray] | None = None
) -> dict[str, Any]:
    """The system score: reference beats right only if detected and given their class.

    Args:
        results: :func:`run_system` output.
        scope: Record id -> indices of the reference beats to score (the seed protocol's
            test split). Default: every reference beat of the six classes.

    Returns:
        ``accuracy`` (right / scored), ``n_scored``, ``n_right``, ``n_missed``,
        ``per_class`` (scored, right, missed, accuracy), ``confusion`` of the detected
        scored beats, ``false_detections`` (count, and per record the samples and
        predicted classes), ``detection`` (Se, +P over every beat annotation of the
        scored records).
    """
    k = len(CLASSES)
    index = {c: i for i, c in enumerate(CLASSES)}
    m = np.zeros((k, k), np.int64)
    scored = np.zeros(k, np.int64)
    missed = np.zeros(k, np.int64)
    fd: dict[str, dict[str, list]] = {}
    n_fd = tp_all = ref_all = det_all = 0
    for res in results:
        labels = np.asarray([index.get(SYMBOL_TO_CLASS.get(s, ""), -1) for s in res.ref_symbol])
        sel = (
            np.flatnonzero(labels >= 0) if scope is None else np.asarray(scope.get(res.record, []))
        )
        sel = sel[labels[sel] >= 0] if len(sel) else sel.astype(np.int64)
        found = res.ref_to_det[sel] >= 0
        np.add.at(scored, labels[sel], 1)
        np.add.at(missed, labels[sel][~found], 1)
        np.add.at(m, (labels[sel][found], res.pred[res.ref_to_det[sel][found]]), 1)
        false = np.flatnonzero(res.det_to_ref < 0)
        n_fd += len(false)
        if len(false):
            fd[res.record] = {
                "samples": res.sample[false].tolist(),
                "predicted": [CLASSES[p] for p in res.pred[false]],
            }
        tp_all += int(np.sum(res.ref_to_det >= 0))
        ref_all += len(res.ref_to_det)
        det_all += len(res.det_to_ref)
    right = np.diag(m)
    n = int(scored.sum())
    return {
        "accuracy": float(right.sum() / n) if n else 0.0,
        "n_scored": n,
        "n_right": int(right.sum()),
        "n_missed": int(missed.sum()),
        "per_class": {
            c: {
                "scored": int(scored[i]),
                "right": int(right[i]),
                "missed": int(missed[i]),
                "accuracy": float(right[i] / scored[i]) if scored[i] else 0.0,
            }
            for i, c in enumerate(CLASSES)
        },
        "confusion_detected": {"classes": list(CLASSES), "matrix": m.tolist()},
        "false_detections": {"count": n_fd, "by_record": fd},
        "detection": {
            "reference_beats": ref_all,
            "detected_beats": det_all,
            "se": tp_all / ref_all if ref_all else 0.0,
            "ppv": tp_all / det_all if det_all else 0.0,
        },
    }


def aami_scores(results: Sequence[SystemRecord]) -> dict[str, Any]:
    """AAMI N/S/V/F/Q scores over every beat annotation of the records.

    Predicted AAMI class = :data:`CLASS_TO_AAMI` of the predicted six-class label. A missed
    reference beat counts as a false negative of its class (the system view); false
    detections have no reference class and are not in +P (they are reported by
    :func:`system_scores`). Also the same scores over detected beats only (the model view).

    Returns:
        ``system`` and ``detected_only``, each with ``accuracy``, ``per_class`` (se, ppv,
        f1, support), ``confusion`` (rows truth N S V F Q, columns prediction N S V F Q +
        ``missed``).
    """
    k = len(AAMI_CLASSES)
    aidx = {c: i for i, c in enumerate(AAMI_CLASSES)}
    pred_map = np.asarray([aidx[CLASS_TO_AAMI[c]] for c in CLASSES])
    m = np.zeros((k, k + 1), np.int64)  # last column: missed
    for res in results:
        truth = np.asarray([aidx.get(SYMBOL_TO_AAMI.get(s, ""), -1) for s in res.ref_symbol])
        keep = truth >= 0
        det = res.ref_to_det
        found = keep & (det >= 0)
        np.add.at(m, (truth[found], pred_map[res.pred[det[found]]]), 1)
        np.add.at(m, (truth[keep & (det < 0)], k), 1)

    def scores(mat: np.ndarray) -> dict[str, Any]:
        tp = np.diag(mat[:, :k]).astype(float)
        total = mat.sum()
        per = _per_class(mat, AAMI_CLASSES, aami=True)
        return {
            "accuracy": float(tp.sum() / total) if total else 0.0,
            "n": int(total),
            "per_class": per,
            "confusion": {
                "rows": list(AAMI_CLASSES),
                "columns": [*AAMI_CLASSES, "missed"],
                "matrix": mat.tolist(),
            },
        }

    detected = m.copy()
    detected[:, k] = 0
    return {"system": scores(m), "detected_only": scores(detected)}


def plot_confusions(
    panels: Sequence[tuple[str, list[str], list[str], list[list[int]]]], path: str | Path
) -> Path:
    """Draw confusion matrices side by side (row-normalised colours, counts written).

    Args:
        panels: ``(title, row names, column names, matrix)`` per panel.
        path: Output PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, rows, cols, mat) in zip(axes[0], panels):
        a = np.asarray(mat, float)
        norm = a / np.maximum(a.sum(1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(cols)), cols)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        ax.set_title(title, fontsize=10)
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                ax.text(
                    j,
                    i,
                    f"{int(a[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


# --- the whole evaluation, as `beatwise eval classify` runs it ----------------------------


def inference_ms_per_beat(clf: Any, beats: Beats, *, repeats: int = 3) -> float:
    """Batched inference time per beat on one torch thread, best of ``repeats`` (ms)."""
    import time

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            clf.predict(beats)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return 1000.0 * best / max(len(beats), 1)


def _training_summary(card: dict[str, Any], model: str | Path) -> dict[str, Any]:
    t = card.get("training") or {}
    cfg = t.get("config") or {}
    return {
        "architecture": card.get("architecture"),
        "model_bytes": Path(model).stat().st_size,
        "dataset_detector": t.get("dataset_detector"),
        "balance": t.get("balance"),
        "n_per_epoch": cfg.get("n_per_epoch"),
        "augment": cfg.get("augment"),
        "train_counts": (t.get("counts") or {}).get("train"),
        "epochs_run": t.get("epochs_run"),
        "best_epoch": t.get("best_epoch"),
        "best_val_macro_f1": t.get("best_val_macro_f1"),
        "logit_bias": t.get("logit_bias"),
        "train_seconds": t.get("train_seconds"),
        "device": t.get("device"),
    }


def evaluate(
    *,
    model: str | Path,
    protocol: str,
    json_path: str | Path,
    dataset: str | Path,
    chunk: int = 360,
    workers: int | None = None,
    update_card: bool = True,
    command: str = "",
    on_record: Callable[[str], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score a model by ``protocol``; write the JSON and the confusion-matrix PNG beside it.

    Args:
        model: TorchScript model with its card.
        protocol: ``"seed"`` or ``"interpatient"``.
        json_path: Output JSON; the PNG gets the same name with ``.png``.
        dataset: The beat dataset (its test beats give the model accuracy).
        chunk: Samples per push in the system run. Default 360.
        workers: Processes of the system run. Default ``os.cpu_count()``.
        update_card: Copy the headline metrics into the model card. Default True.
        command: The command line, recorded in the JSON.
        on_record: Progress callback per record of the system run.
        on_start: Called with the number of records before the system run.

    Returns:
        The result dict (as written to the JSON).

    Raises:
        ValueError: naming the card, when ``protocol`` is not the one the model was trained
            under, or (``seed``) the card does not say which beat split it was trained on:
            the test beats are the beats that model never saw, and only its card knows them.
    """
    import hashlib
    import json
    import os

    from beatwise.dataset import load_dataset
    from beatwise.model.card import card_path, sha256_of, write_card
    from beatwise.model.infer import Classifier
    from beatwise.model.protocols import DS2, split_dataset

    clf = Classifier.load(model, other_beats=True)
    trained_split = (clf.card.get("training") or {}).get("split") or {}
    if clf.card.get("protocol") != protocol:
        raise ValueError(
            f"model card {card_path(model)}: protocol {clf.card.get('protocol')!r}, but "
            f"--protocol {protocol!r} was asked; a model is scored on the test part of the "
            f"protocol it was trained under (use --protocol {clf.card.get('protocol')})."
        )
    seed = trained_split.get("seed") if protocol == "seed" else 0
    if protocol == "seed" and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(
            f"model card {card_path(model)}: training.split.seed is {seed!r}, expected the "
            f"integer seed of the beat split the model was trained on; re-export the model "
            f"with 'beatwise train --weights RUN', which records it."
        )
    ds = load_dataset(dataset)
    split = split_dataset(ds, protocol, seed=seed)

    # Model accuracy: the test beats as the dataset holds them.
    test = split.beats["test"]
    test_beats = ds.beats(test, template=clf.takes_template)
    y_test, pred = ds["label"][test], clf.predict(test_beats).argmax(1)
    model_part = model_scores(y_test, pred)
    speed = inference_ms_per_beat(clf, test_beats[: min(len(test), 8192)])

    # System accuracy: raw records through the live pipeline objects, chunk by chunk.
    names = ds["record_names"]
    scope = None
    if protocol == "seed":
        ref_rec = names[ds["ref_record"]]
        starts = {r: int(np.argmax(ref_rec == r)) for r in names.tolist()}
        scope = {}
        for r in names.tolist():
            idx = split.ref_test[ref_rec[split.ref_test] == r]
            scope[r] = idx - starts[r]
    records = list(split.test_records)
    if on_start:
        on_start(len(records))
    results = run_system(
        model, records, chunk=chunk, workers=workers or os.cpu_count() or 1, on_record=on_record
    )
    system_part = system_scores(results, scope=scope)

    # The live beats must be the dataset's beats (same pipeline): check record by record.
    same, differ = None, []
    if ds.meta.get("detector") == "pipeline":
        beat_rec = names[ds["record"]]
        for res in results:
            rows = np.flatnonzero(beat_rec == res.record)
            w = np.ascontiguousarray(ds["window"][rows])
            if not (
                np.array_equal(ds["sample"][rows], res.sample)
                and hashlib.sha256(w.tobytes()).hexdigest() == res.window_sha
            ):
                differ.append(res.record)
        same = not differ

    # Where the model errs: test-beat errors per record, most first (the top ten).
    test_rec = names[ds["record"][test]].tolist()
    wrong = Counter(r for r, bad in zip(test_rec, y_test != pred) if bad)
    total = Counter(test_rec)
    model_part["errors_by_record"] = [
        {"record": r, "errors": e, "test_beats": total[r]}
        for r, e in sorted(wrong.items(), key=lambda t: (-t[1], t[0]))[:10]
    ]

    # The same two scores per database: mitdb and svdb differ in rate, noise and beats.
    beat_db = np.asarray(ds["db"])[test]
    by_db = {}
    for db in sorted(set(beat_db.tolist())):
        k = beat_db == db
        sys_db = system_scores([r for r in results if r.record.startswith(f"{db}/")], scope=scope)
        by_db[db] = {
            "test_beats": int(k.sum()),
            "model_accuracy": float(np.mean(y_test[k] == pred[k])),
            "system_scored": sys_db["n_scored"],
            "system_missed": sys_db["n_missed"],
            "system_accuracy": sys_db["accuracy"],
        }

    out: dict[str, Any] = {
        "protocol": protocol,
        "model_file": str(model),
        "model_sha256": sha256_of(model),
        "dataset": {
            "file": str(dataset),
            "detector": ds.meta.get("detector"),
            "test_beats": len(test),
        },
        "command": command,
        "training_commands": [
            c
            for c in (
                (clf.card.get("training") or {}).get("prepare_command"),
                (clf.card.get("training") or {}).get("fit_command"),
                clf.card.get("command"),
            )
            if c
        ],
        "training": _training_summary(clf.card, model),
        "model_accuracy": model_part["accuracy"],
        "system_accuracy": system_part["accuracy"],
        "macro_f1": model_part["macro_f1"],
        "inference_ms_per_beat": speed,
        "live_beats_equal_dataset_beats": same,
        "live_beats_differ_in": differ,
        "chunk_samples": chunk,
        "by_database": by_db,
        "model": model_part,
        "system": system_part,
    }
    panels = [
        ("model: test beats", list(CLASSES), list(CLASSES), model_part["confusion"]["matrix"]),
    ]
    sys_m = np.asarray(system_part["confusion_detected"]["matrix"])
    missed_col = [[system_part["per_class"][c]["missed"]] for c in CLASSES]
    panels.append(
        (
            "system: live pipeline",
            list(CLASSES),
            [*CLASSES, "missed"],
            np.hstack([sys_m, missed_col]).tolist(),
        )
    )
    if protocol == "interpatient":
        ds2 = [f"mitdb/{r}" for r in DS2]
        a_ds2 = aami_scores([r for r in results if r.record in ds2])
        a_all = aami_scores(results)
        head = a_ds2["system"]
        out["aami"] = {
            **{
                c: {k: head["per_class"][c][k] for k in ("se", "ppv", "f1", "support")}
                for c in AAMI_CLASSES
            },
            "accuracy": head["accuracy"],
            "records": "DS2 (22 mitdb records)",
            "view": "system: every DS2 beat annotation; missed beats count as errors",
        }
        out["aami_detail"] = {"ds2": a_ds2, "all_test_records": a_all}
        panels.append(
            (
                "AAMI, DS2 (system)",
                list(AAMI_CLASSES),
                [*AAMI_CLASSES, "missed"],
                head["confusion"]["matrix"],
            )
        )
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    png = plot_confusions(panels, json_path.with_suffix(".png"))
    out["confusion_png"] = png.name
    json_path.write_text(json.dumps(out, indent=1) + "\n")
    if update_card:
        card = json.loads(card_path(model).read_text())
        card["metrics"] = {
            "protocol": protocol,
            "source": str(json_path),
            "command": command,
            "model_accuracy": out["model_accuracy"],
            "system_accuracy": out["system_accuracy"],
            "macro_f1": out["macro_f1"],
            "inference_ms_per_beat": speed,
            **({"aami": out["aami"]} if "aami" in out else {}),
        }
        write_card(model, card)
    return out


# --- the README section, generated from the result JSON files ------------------------------

#: Target rows: label, model file stems (the first is the shipped model; a second is shown in
#: brackets), value getter, target -- the least value that meets it (a fraction, shown as
#: ">= ...") or, for a figure only reported, what is said instead --, reference figure,
#: shown as percent.
_TARGETS: tuple[
    tuple[str, tuple[str, ...], Callable[[dict], float], float | str, str, bool], ...
] = (
    (
        "seed protocol, model accuracy",
        ("beatwise_seed", "beatwise_seed_strict"),
        lambda r: r["model_accuracy"],
        0.995,
        "prior version 99.4%",
        True,
    ),
    (
        "seed protocol, system accuracy (live pipeline, missed beats count)",
        ("beatwise_seed", "beatwise_seed_strict"),
        lambda r: r["system_accuracy"],
        0.994,
        "prior version 73.5%",
        True,
    ),
    (
        "seed protocol, macro-F1 over the six classes",
        ("beatwise_seed", "beatwise_seed_strict"),
        lambda r: r["macro_f1"],
        0.97,
        "—",
        False,
    ),
    (
        "inter-patient DS2, AAMI V F1",
        ("beatwise_interpatient",),
        lambda r: r["aami"]["V"]["f1"],
        0.93,
        "Niu 2020: 0.897",
        False,
    ),
    (
        "inter-patient DS2, AAMI S F1",
        ("beatwise_interpatient",),
        lambda r: r["aami"]["S"]["f1"],
        0.80,
        "Niu 2020: 0.766",
        False,
    ),
    (
        "inter-patient DS2, overall accuracy (AAMI classes)",
        ("beatwise_interpatient",),
        lambda r: r["aami"]["accuracy"],
        0.965,
        "Niu 2020: 96.4%; Mondéjar-Guerra 2019: 94.5%",
        True,
    ),
    (
        "`--detector biosppy` beats (seed protocol): model accuracy on its own test beats",
        ("beatwise_seed_biosppy",),
        lambda r: r["model_accuracy"],
        "reported",
        "—",
        True,
    ),
    (
        "`--detector biosppy` beats (seed protocol): system accuracy in the live pipeline",
        ("beatwise_seed_biosppy",),
        lambda r: r["system_accuracy"],
        "reported, to show the mismatch",
        "prior version 73.5%",
        True,
    ),
)


def _fmt(v: float, pct: bool) -> str:
    return f"{100 * v:.2f}%" if pct else f"{v:.3f}"


def _target_text(target: float | str, pct: bool) -> str:
    if isinstance(target, str):
        return target
    return f">= {100 * target:.1f}%" if pct else f">= {target:.2f}"


def _training_line(t: dict[str, Any]) -> str:
    if not t:
        return ""
    arch = t.get("architecture") or {}
    bias = (t.get("logit_bias") or {}).get("logit_bias")
    n_per_epoch = t.get("n_per_epoch")
    balance = t.get("balance")
    if balance == "smote_keep_n":
        balance = f"SMOTE of minorities to 20,000; {n_per_epoch} N drawn afresh every epoch"
    elif balance == "smote":
        balance = "SMOTE of minorities to 20,000, N undersampled once to 40,000 (the seed's)"
    elif n_per_epoch:
        balance = f"{balance}; {n_per_epoch} N drawn afresh every epoch"
    secs = t.get("train_seconds")
    return (
        f"Training: {arch.get('type')}, {arch.get('parameters')} parameters (widths "
        f"{arch.get('widths')}, "
        f"{arch.get('blocks')} blocks per stage), {t.get('model_bytes', 0) / 1024:.0f} KiB; "
        f"balance: {balance}; augmentation: {t.get('augment')}; best of {t.get('epochs_run')} "
        f"epochs: {t.get('best_epoch')} (val macro-F1 {t.get('best_val_macro_f1') or 0:.4f}); "
        f"logit bias fitted on validation: {bias}; "
        f"{secs or 0:.0f} s on {t.get('device')}."
    )


def _database_text(by_db: dict[str, Any]) -> str:
    """One clause per database: model and system accuracy."""
    return "; ".join(
        f"{db}: model {_fmt(d['model_accuracy'], True)} of {d['test_beats']} test beats, "
        f"system {_fmt(d['system_accuracy'], True)} of {d['system_scored']} reference beats "
        f"({d['system_missed']} missed)"
        for db, d in by_db.items()
    )


def render_report(results: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """Markdown: the target table and per-model tables, from ``(json path, result)`` pairs."""
    by_model = {Path(r["model_file"]).stem: r for _, r in results}
    lines = [
        "## Beat classification",
        "",
        "<!-- generated by `beatwise eval classify-report` from docs/results/classify_*.json;",
        "     do not edit by hand -->",
        "",
        "Beats are cut by the live pipeline (`BeatPipeline`) for training, evaluation and",
        "serving alike. *Model accuracy* scores the test beats; *system accuracy* runs the raw",
        "test records through the live pipeline objects in 1 s chunks and counts a reference",
        "beat right only if it was detected **and** given its class (missed beats are errors).",
        "",
        "<!-- section: targets -->",
        "| | target | reference | BeatWise | |",
        "|---|---|---|---|---|",
    ]
    for label, stems, get, target, ref, pct in _TARGETS:
        hits = [by_model.get(stem) for stem in stems]
        value = _fmt(get(hits[0]), pct) if hits[0] else "not run"
        verdict = ""  # the shipped model's figure decides, unrounded
        if hits[0] and not isinstance(target, str):
            verdict = "met" if get(hits[0]) >= target else "**not met**"
        if len(hits) > 1 and hits[1]:
            value += f" (strict seed balancing: {_fmt(get(hits[1]), pct)})"
        lines.append(f"| {label} | {_target_text(target, pct)} | {ref} | {value} | {verdict} |")
    seed = by_model.get("beatwise_seed") or {}
    if seed.get("by_database"):
        by_db = _database_text(seed["by_database"])
        lines += ["", f"Seed protocol (beatwise_seed.pt) by database -- {by_db}."]
    lines += [
        "",
        "*From `beatwise eval classify` (docs/results/classify_*.json).*",
        "<!-- end section -->",
        "",
        "Made with (dataset, training on prepared arrays, export with the card, evaluation):",
        "",
        "```sh",
        "beatwise dataset build --out cache/beats.npz",
        "beatwise dataset build --detector biosppy --out cache/beats_biosppy.npz",
    ]
    for _, r in results:
        lines += [*r.get("training_commands", []), r.get("command") or ""]
    lines += [
        "beatwise eval classify-report " + " ".join(p for p, _ in results),
        "```",
        "",
        "Training ran on prepared arrays (`beatwise train --prepare-only`; windows stored with "
        "8-bit precision for the trip, served as float32: the fit's validation macro-F1 and the "
        "card's `val_macro_f1_before` differ in the fourth decimal for it) with "
        "`python -m beatwise.model.train`, which needs only "
        "torch and numpy (on a GPU when one was lent, else on 2 CPU cores: each model's line "
        "below says which and how long); `beatwise train` alone does all of it on one "
        "machine. Each group's "
        "run was chosen on validation macro-F1, and a per-class logit offset was fitted on "
        "the validation beats (`--tune-bias`); test beats and DS2 were never used to choose "
        "anything. The inter-patient validation records (every fourth of DS1 and of svdb "
        "800-859) hold no L, R or paced beats: DS1's L beats come from two patients (109, 207) "
        "and most of its R beats from one (118), who cannot be spared from training; so that "
        "model's run and logit offsets were chosen on N, A and V alone, and nothing chose for "
        "its L and R recall on DS2.",
    ]
    for _path, r in results:
        name = Path(r["model_file"]).name
        png = r.get("confusion_png", "")
        lines += [
            "",
            f"### {name} — {r['protocol']} protocol, beats from `{r['dataset']['detector']}`",
            "",
            (
                f"Model accuracy {_fmt(r['model_accuracy'], True)}, macro-F1 {r['macro_f1']:.3f} "
                f"({r['model']['n']} test beats); system accuracy "
                f"{_fmt(r['system_accuracy'], True)} "
                f"({r['system']['n_scored']} reference beats, {r['system']['n_missed']} missed, "
                f"{r['system']['false_detections']['count']} false detections); inference "
                f"{r['inference_ms_per_beat']:.3f} ms/beat on one thread. "
                f"Confusion matrices: [{png}](results/{png})."
            ),
            *(
                ["", f"By database: {_database_text(r['by_database'])}."]
                if r.get("by_database")
                else []
            ),
            *(
                [
                    "",
                    "Most test-beat errors: "
                    + ", ".join(
                        f"{e['record']} {e['errors']} of {e['test_beats']}"
                        for e in r["model"]["errors_by_record"]
                    )
                    + ".",
                ]
                if r["model"].get("errors_by_record")
                else []
            ),
            "",
            _training_line(r.get("training") or {}),
            "",
            "| class | precision | recall | F1 | test beats | system: right / scored |",
            "|---|---|---|---|---|---|",
        ]
        for c in CLASSES:
            m, s = r["model"]["per_class"][c], r["system"]["per_class"][c]
            lines.append(
                f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
                f"{m['support']} | {s['right']} / {s['scored']} |"
            )
        if "aami" in r:
            a = r["aami"]
            lines += [
                "",
                f"AAMI classes on DS2 ({a['view']}): accuracy {_fmt(a['accuracy'], True)}.",
                "",
                "| AAMI | Se | +P | F1 | beats |",
                "|---|---|---|---|---|",
            ]
            for c in AAMI_CLASSES:
                lines.append(
                    f"| {c} | {a[c]['se']:.3f} | {a[c]['ppv']:.3f} | {a[c]['f1']:.3f} | "
                    f"{a[c]['support']} |"
                )
            lines += [
                "",
                (
                    "Our six classes map to AAMI as N, L, R → N; A → S; V → V; / → Q; the model "
                    "has no F class, so F beats are always errors."
                ),
            ]
    return "\n".join(lines) + "\n"


def write_report(json_paths: Sequence[Path], out: Path) -> Path:
    """Render :func:`render_report` from result JSON files into ``out``."""
    import json

    results = []
    for p in json_paths:
        if not Path(p).is_file():
            raise FileNotFoundError(
                f"result file {p} not found ('beatwise eval classify --json {p}')."
            )
        results.append((str(p), json.loads(Path(p).read_text())))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(results))
    return out
