"""The two evaluation protocols of DESIGN.md: which beats train, validate and test.

- ``seed``: all reference beats of the six classes from all records, stratified random
  80/20 split (fixed seed). The split is made over *reference* beats, so a test beat the
  detector missed stays in the test split (and counts as an error in the system score).
  10% of the training part is held out for validation; the rest is balanced as the prior
  version did: SMOTE of each minority class to 20,000, random undersampling of N to 40,000.
- ``interpatient``: records, never beats, are split: train on de Chazal DS1 + the paced
  records + svdb 800-859 (a quarter of those records held out for validation), test on
  DS2 + svdb 860-894.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from beatwise.classes import CLASSES
from beatwise.dataset import Dataset

__all__ = [
    "DS1",
    "DS2",
    "PACED",
    "PROTOCOLS",
    "Split",
    "interpatient_records",
    "prepare",
    "running_rr",
    "split_dataset",
]

PROTOCOLS: tuple[str, ...] = ("seed", "interpatient")

#: de Chazal et al. 2004, training set (mitdb).
DS1: tuple[str, ...] = (
    "101",
    "106",
    "108",
    "109",
    "112",
    "114",
    "115",
    "116",
    "118",
    "119",
    "122",
    "124",
    "201",
    "203",
    "205",
    "207",
    "208",
    "209",
    "215",
    "220",
    "223",
    "230",
)
#: de Chazal et al. 2004, test set (mitdb).
DS2: tuple[str, ...] = (
    "100",
    "103",
    "105",
    "111",
    "113",
    "117",
    "121",
    "123",
    "200",
    "202",
    "210",
    "212",
    "213",
    "214",
    "219",
    "221",
    "222",
    "228",
    "231",
    "232",
    "233",
    "234",
)
#: The paced mitdb records (outside DS1 and DS2), trained on so the model knows "/".
PACED: tuple[str, ...] = ("102", "104", "107", "217")

#: Training balance modes of :func:`prepare`.
BALANCES: tuple[str, ...] = ("smote", "smote_keep_n", "undersample", "none")

#: Seed protocol sizes (the prior version's).
SEED_MINORITY = 20_000
SEED_MAJORITY = 40_000


def interpatient_records(svdb_names: list[str]) -> dict[str, list[str]]:
    """Record ids (``"db/name"``) of the inter-patient ``train``, ``val`` and ``test`` parts.

    Args:
        svdb_names: The svdb record names present (e.g. ``list_records("svdb")``).

    Validation: every fourth record of DS1 and of svdb 800-859 (from the second on), so it
    holds patients of both databases that the model never trains on; DS2 is never looked at
    when choosing anything.
    """
    svdb_train = sorted(n for n in svdb_names if 800 <= int(n) <= 859)
    svdb_test = sorted(n for n in svdb_names if 860 <= int(n) <= 894)
    val = [f"mitdb/{r}" for i, r in enumerate(DS1) if i % 4 == 1]
    val += [f"svdb/{r}" for i, r in enumerate(svdb_train) if i % 4 == 1]
    train = [f"mitdb/{r}" for r in (*DS1, *PACED)] + [f"svdb/{r}" for r in svdb_train]
    train = [r for r in train if r not in val]
    test = [f"mitdb/{r}" for r in DS2] + [f"svdb/{r}" for r in svdb_test]
    return {"train": train, "val": val, "test": test}


@dataclass(frozen=True, eq=False)
class Split:
    """Which beats (rows of the dataset) and reference beats belong to each part.

    Attributes:
        protocol: ``"seed"`` or ``"interpatient"``.
        beats: Part name -> dataset row indices of six-class beats (``train``, ``val``,
            ``test``).
        ref_test: Indices of the reference beats (``ref_*`` arrays) scored as the test part
            by the system score: six-class reference beats, found or missed.
        test_records: Record ids the system score runs the live pipeline over.
        seed: The seed of the random beat split (``seed`` protocol); None for
            ``interpatient``, whose record split takes no seed.
        val_records: Record ids of the validation part (``interpatient``); None for
            ``seed``, whose validation beats come from every record.
    """

    protocol: str
    beats: dict[str, np.ndarray]
    ref_test: np.ndarray
    test_records: list[str]
    seed: int | None = None
    val_records: list[str] | None = None


def split_dataset(ds: Dataset, protocol: str, *, seed: int = 0) -> Split:
    """Split a beat dataset by ``protocol`` (deterministic given ``seed``)."""
    from sklearn.model_selection import train_test_split

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}; got {protocol!r}.")
    six_ref = np.flatnonzero(ds["ref_label"] >= 0)
    if protocol == "seed":
        ref_train, ref_test = train_test_split(
            six_ref, test_size=0.2, random_state=seed, stratify=ds["ref_label"][six_ref]
        )
        ref_train, ref_val = train_test_split(
            ref_train, test_size=0.1, random_state=seed, stratify=ds["ref_label"][ref_train]
        )
        parts = {}
        for name, refs in (("train", ref_train), ("val", ref_val), ("test", ref_test)):
            rows = ds["ref_beat"][np.sort(refs)]
            parts[name] = rows[rows >= 0]
        return Split("seed", parts, np.sort(ref_test), list(ds["record_names"]), seed=seed)
    names = ds["record_names"]
    recs = interpatient_records([n.split("/")[1] for n in names.tolist() if n.startswith("svdb/")])
    missing = sorted(set(recs["train"] + recs["val"] + recs["test"]) - set(names.tolist()))
    if missing:
        raise ValueError(
            f"dataset lacks records {missing[:5]}{'...' if len(missing) > 5 else ''} of the "
            f"inter-patient split; build it over all records ('beatwise dataset build')."
        )
    beat_rec = names[ds["record"]]
    six = ds["label"] >= 0
    parts = {k: np.flatnonzero(six & np.isin(beat_rec, v)) for k, v in recs.items()}
    ref_rec = names[ds["ref_record"]]
    ref_test = six_ref[np.isin(ref_rec[six_ref], recs["test"])]
    return Split("interpatient", parts, ref_test, recs["test"], val_records=recs["val"])


def prepare(
    ds: Dataset,
    split: Split,
    *,
    seed: int = 0,
    balance: str | None = None,
    rr_mean_beats: int | None = None,
    train_on_val: bool = False,
    template: bool = False,
) -> dict[str, Any]:
    """Training and validation arrays of a split, balanced for training.

    Args:
        ds: The beat dataset.
        split: Its split.
        seed: Seed of SMOTE and undersampling. Default 0.
        balance: ``"smote"`` (SMOTE of minorities to 20,000 + N undersampled to 40,000:
            the seed protocol's), ``"smote_keep_n"`` (the same SMOTE, every N beat kept: pair
            it with ``TrainConfig(n_per_epoch=40_000)`` to draw 40,000 N afresh each epoch),
            ``"undersample"`` (N undersampled to 40,000 only), or ``"none"``. Default:
            ``"smote"`` for seed, ``"undersample"`` otherwise.
        rr_mean_beats: Experiment only: also return ``rr_run_train`` / ``rr_run_val``, the
            RR context with "local mean RR" replaced by the mean pre-RR of the last
            ``rr_mean_beats`` detected beats of the record (a record-level running mean;
            train with ``TrainConfig(rr_key="rr_run")``). The live pipeline feeds a 10-beat
            mean, so such a model cannot ship unless the pipeline changes. Default None.
        train_on_val: Train on the training and the validation part (a refit once the
            settings and the number of epochs were chosen on validation); the validation
            arrays are still returned, for monitoring only. Default False.
        template: Also return ``t_train`` / ``t_val``, each beat's running template
            (:attr:`beatwise.dataset.Dataset.template`); SMOTE interpolates it with the
            window. Default False.

    Returns:
        ``x_train``, ``rr_train``, ``y_train``, ``x_val``, ``rr_val``, ``y_val`` (and
        ``t_train``, ``t_val``) and ``info`` (counts before and after balancing).
    """
    balance = balance or ("smote" if split.protocol == "seed" else "undersample")
    if balance not in BALANCES:
        raise ValueError(f"balance must be one of {BALANCES}; got {balance!r}.")
    tr, va = split.beats["train"], split.beats["val"]
    if train_on_val:
        tr = np.sort(np.concatenate([tr, va]))
    x = np.asarray(ds["window"][tr], np.float32)
    width = x.shape[1]
    if template:  # balanced together: a synthetic beat's template goes with its window
        x = np.concatenate([x, ds.template[tr]], axis=1)
    rr = np.asarray(ds["rr"][tr], np.float32)
    if rr_mean_beats is not None:
        if balance != "none":
            raise ValueError("rr_mean_beats needs balance='none' (the extra RR rows must align).")
        rr_run = running_rr(ds, rr_mean_beats)
    y = ds["label"][tr].astype(np.int64)
    before = _counts(y)
    if balance != "none":
        x, rr, y = _balance(
            x,
            rr,
            y,
            smote=balance.startswith("smote"),
            undersample=balance != "smote_keep_n",
            seed=seed,
        )
    out = {
        "x_train": np.ascontiguousarray(x[:, :width]),
        "rr_train": rr,
        "y_train": y,
        "x_val": np.asarray(ds["window"][va], np.float32),
        "rr_val": np.asarray(ds["rr"][va], np.float32),
        "y_val": ds["label"][va].astype(np.int64),
        "info": {
            "protocol": split.protocol,
            "balance": balance,
            "seed": seed,
            "rr_mean_beats": rr_mean_beats,
            "train_on_val": train_on_val,
            "template": template,
            "train_before_balancing": before,
            "train": _counts(y),
            "val": _counts(ds["label"][va]),
            "test": _counts(ds["label"][split.beats["test"]]),
        },
    }
    if template:
        out["t_train"] = np.ascontiguousarray(x[:, width:])
        out["t_val"] = ds.template[va]
    if rr_mean_beats is not None:
        out["rr_run_train"] = rr_run[tr]
        out["rr_run_val"] = rr_run[va]
    return out


def running_rr(ds: Dataset, beats: int) -> np.ndarray:
    """RR context with column 2 replaced by the causal mean pre-RR of the last ``beats``
    detected beats of each record (this one included), in seconds."""
    if beats < 1:
        raise ValueError(f"rr_mean_beats must be >= 1 beats; got {beats}.")
    rr = np.array(ds["rr"], dtype=np.float64)
    rec = ds["record"]
    edges = np.flatnonzero(np.diff(rec)) + 1
    for a, b in zip(np.r_[0, edges], np.r_[edges, len(rec)]):
        pre = rr[a:b, 0]
        c = np.concatenate([[0.0], np.cumsum(pre)])
        i = np.arange(1, b - a + 1)
        lo = np.maximum(i - beats, 0)
        rr[a:b, 2] = (c[i] - c[lo]) / (i - lo)
    return rr.astype(np.float32)


def _counts(y: np.ndarray) -> dict[str, int]:
    return {c: int(np.sum(y == i)) for i, c in enumerate(CLASSES)}


def _balance(
    x: np.ndarray, rr: np.ndarray, y: np.ndarray, *, smote: bool, undersample: bool, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from imblearn.over_sampling import SMOTE
    from imblearn.under_sampling import RandomUnderSampler

    n_idx = CLASSES.index("N")
    feats = np.concatenate([x, rr], axis=1)
    counts = np.bincount(y, minlength=len(CLASSES))
    if smote:
        target = {
            i: SEED_MINORITY
            for i in range(len(CLASSES))
            if i != n_idx and 5 < counts[i] < SEED_MINORITY
        }
        if target:
            # SMOTE interpolates window and RR together, so a synthetic beat's RR context
            # goes with its shape.
            feats, y = SMOTE(sampling_strategy=target, random_state=seed).fit_resample(feats, y)
    if undersample and counts[n_idx] > SEED_MAJORITY:
        # Undersample N only; every other class keeps all its beats.
        kept = {i: int(c) for i, c in enumerate(np.bincount(y, minlength=len(CLASSES))) if c}
        kept[n_idx] = SEED_MAJORITY
        feats, y = RandomUnderSampler(sampling_strategy=kept, random_state=seed).fit_resample(
            feats, y
        )
    width = x.shape[1]
    return (
        np.ascontiguousarray(feats[:, :width], np.float32),
        np.ascontiguousarray(feats[:, width:], np.float32),
        y.astype(np.int64),
    )
