"""The beat dataset: every record run through the live pipeline, beats matched to the reference.

``beatwise dataset build`` writes one ``.npz`` (see :func:`build_dataset` for its arrays). The
beats in it are cut by :class:`beatwise.pipeline.BeatPipeline` -- the very objects the live
consumer runs -- so a model trained on them is served the beats it was trained on.
``detector="biosppy"`` builds the prior version's variant instead (zero-phase filter, Hamilton
R peaks), to measure what a train/serve mismatch costs.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from beatwise.classes import CLASSES, SYMBOL_TO_CLASS
from beatwise.dsp.beats import BeatAssembler, Beats, running_template
from beatwise.eval.matching import match_beats
from beatwise.parallel import map_in_order
from beatwise.pipeline import WINDOW_AFTER, WINDOW_BEFORE, BeatPipeline
from beatwise.records import FS, list_records, load_record

__all__ = [
    "DATABASES",
    "DETECTORS",
    "LABEL_OTHER",
    "LABEL_UNMATCHED",
    "TOLERANCE",
    "Dataset",
    "RecordBeats",
    "all_records",
    "beat_record",
    "build_dataset",
    "cut_beats",
    "load_dataset",
    "save_dataset",
]

#: Databases of the dataset, in order.
DATABASES: tuple[str, ...] = ("mitdb", "svdb")
#: Beat cutters: the live pipeline, or the prior version's offline biosppy variant.
DETECTORS: tuple[str, ...] = ("pipeline", "biosppy")
#: Matching tolerance: 150 ms at 360 Hz, in samples.
TOLERANCE = round(0.150 * FS)
#: ``label`` of a detected beat matched to a beat annotation outside the six classes.
LABEL_OTHER = -1
#: ``label`` of a detected beat that matched no reference beat (a false detection).
LABEL_UNMATCHED = -2

_WIDTH = WINDOW_BEFORE + WINDOW_AFTER


def all_records() -> list[tuple[str, str]]:
    """``(db, name)`` of every record of :data:`DATABASES`, in RECORDS order."""
    return [(db, name) for db in DATABASES for name in list_records(db)]


def _cut_biosppy(signal: np.ndarray) -> Beats:
    """The prior version's beats: zero-phase 0.5-40 Hz, Hamilton R peaks, same window/RR."""
    from biosppy.signals import ecg
    from scipy.signal import butter, sosfiltfilt

    sos = butter(4, [0.5, 40.0], btype="bandpass", output="sos", fs=FS)
    xf = sosfiltfilt(sos, signal)
    (rpeaks,) = ecg.hamilton_segmenter(signal=xf, sampling_rate=FS)
    (rpeaks,) = ecg.correct_rpeaks(signal=xf, rpeaks=rpeaks, sampling_rate=FS, tol=0.05)
    rpeaks = np.unique(np.asarray(rpeaks, dtype=np.int64))
    # The same assembler cuts the windows and computes RR, so only the detector differs.
    assembler = BeatAssembler(
        fs=FS, before=WINDOW_BEFORE, after=WINDOW_AFTER, max_delay=len(xf) + 1
    )
    beats = assembler.push(xf, rpeaks, confirmed_at=rpeaks)
    return Beats.concat([beats, assembler.flush()], _WIDTH)


def cut_beats(signal: np.ndarray, *, detector: str = "pipeline") -> Beats:
    """Cut the beats of a whole signal (mV at 360 Hz).

    Args:
        signal: Raw ECG in mV at 360 Hz.
        detector: ``"pipeline"`` (default; :meth:`BeatPipeline.run`) or ``"biosppy"``.
    """
    if detector == "pipeline":
        return BeatPipeline().run(signal)
    if detector == "biosppy":
        return _cut_biosppy(signal)
    raise ValueError(f"detector must be one of {DETECTORS}; got {detector!r}.")


@dataclass(frozen=True, eq=False)
class RecordBeats:
    """The beats of one record, matched to its reference beats.

    Attributes:
        record: ``"db/name"``.
        beats: The detected beats.
        ref_sample: Reference beat annotation samples (360 Hz), int64.
        ref_symbol: Their MIT-BIH symbols.
        det_to_ref: For each beat, the index of its reference beat (-1: unmatched).
        ref_to_det: For each reference beat, the index of its beat (-1: missed).
    """

    record: str
    beats: Beats
    ref_sample: np.ndarray
    ref_symbol: np.ndarray
    det_to_ref: np.ndarray
    ref_to_det: np.ndarray


def beat_record(db: str, name: str, *, detector: str = "pipeline") -> RecordBeats:
    """Load a record, cut its beats and match them to the reference within 150 ms."""
    rec = load_record(db, name)
    beats = cut_beats(rec.signal, detector=detector)
    d2r, r2d = match_beats(beats.sample, rec.beat_samples, tolerance=TOLERANCE)
    return RecordBeats(rec.id, beats, rec.beat_samples, rec.beat_symbols, d2r, r2d)


def _beat_record_star(args: tuple[str, str, str]) -> RecordBeats:
    db, name, detector = args
    return beat_record(db, name, detector=detector)


def _label(symbols: np.ndarray) -> np.ndarray:
    index = {c: i for i, c in enumerate(CLASSES)}
    return np.asarray(
        [index[SYMBOL_TO_CLASS[s]] if s in SYMBOL_TO_CLASS else LABEL_OTHER for s in symbols],
        dtype=np.int8,
    ).reshape(len(symbols))


@dataclass(frozen=True, eq=False)
class Dataset:
    """The beat dataset, as arrays (see :func:`build_dataset`), plus its summary ``meta``."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __len__(self) -> int:
        return len(self.arrays["sample"])

    @property
    def records(self) -> np.ndarray:
        """Record id (``"db/name"``) of each beat."""
        return self.arrays["record_names"][self.arrays["record"]]

    @cached_property
    def template(self) -> np.ndarray:
        """Each beat's running template: :func:`running_template` over its record's beats
        in order, as the live pipeline computes it (not stored: it follows from the
        windows)."""
        rec = self.arrays["record"]
        window = self.arrays["window"]
        out = np.empty(window.shape, np.float32)
        edges = np.flatnonzero(np.diff(rec)) + 1
        for a, b in zip(np.r_[0, edges], np.r_[edges, len(rec)]):
            out[a:b] = running_template(window[a:b])
        return out

    def beats(self, idx: Any = slice(None), *, template: bool = True) -> Beats:
        """The selected rows as :class:`Beats` (windows as float32; ``template=False``:
        without templates, as ``BeatPipeline()`` cuts them)."""
        window = np.asarray(self.arrays["window"][idx], dtype=np.float32)
        return Beats(
            self.arrays["sample"][idx],
            window,
            self.arrays["rr"][idx],
            self.template[idx] if template else np.empty((len(window), 0), np.float32),
        )


def _assemble(parts: Sequence[RecordBeats], *, detector: str) -> Dataset:
    names = np.asarray([p.record for p in parts], dtype="<U16")
    beats = Beats.concat([p.beats for p in parts], _WIDTH)
    rec_idx = np.concatenate(
        [np.full(len(p.beats), i, np.int16) for i, p in enumerate(parts)] or [np.zeros(0, np.int16)]
    )
    symbol, offset, ref_index = [], [], []
    for p in parts:
        matched = p.det_to_ref >= 0
        sym = np.full(len(p.beats), "", dtype="<U1")
        sym[matched] = p.ref_symbol[p.det_to_ref[matched]]
        off = np.zeros(len(p.beats), np.int32)
        off[matched] = p.beats.sample[matched] - p.ref_sample[p.det_to_ref[matched]]
        symbol.append(sym)
        offset.append(off)
        ref_index.append(p.det_to_ref.astype(np.int32))
    symbol_a = np.concatenate(symbol) if symbol else np.zeros(0, "<U1")
    matched_a = np.concatenate(ref_index) >= 0 if ref_index else np.zeros(0, bool)
    label = _label(symbol_a)
    label[~matched_a] = LABEL_UNMATCHED
    # Reference beats (found or missed), so splits and system scores can count missed beats.
    ref_record = np.concatenate(
        [np.full(len(p.ref_sample), i, np.int16) for i, p in enumerate(parts)]
        or [np.zeros(0, np.int16)]
    )
    offsets = np.cumsum([0] + [len(p.beats) for p in parts])
    ref_beat = np.concatenate(
        [np.where(p.ref_to_det >= 0, p.ref_to_det + offsets[i], -1) for i, p in enumerate(parts)]
        or [np.zeros(0, np.int64)]
    ).astype(np.int64)
    ref_symbol = np.concatenate([p.ref_symbol for p in parts] or [np.zeros(0, "<U1")])
    ref_label = _label(ref_symbol)
    arrays = {
        "window": beats.window,
        "rr": beats.rr,
        "sample": beats.sample,
        "record": rec_idx,
        "record_names": names,
        "db": np.asarray([n.split("/")[0] for n in names], dtype="<U8")[rec_idx]
        if len(names)
        else np.zeros(0, "<U8"),
        "matched": matched_a,
        "symbol": symbol_a,
        "label": label,
        "offset": np.concatenate(offset) if offset else np.zeros(0, np.int32),
        "ref_index": np.concatenate(ref_index) if ref_index else np.zeros(0, np.int32),
        "ref_record": ref_record,
        "ref_sample": np.concatenate([p.ref_sample for p in parts] or [np.zeros(0, np.int64)]),
        "ref_symbol": ref_symbol,
        "ref_label": ref_label,
        "ref_beat": ref_beat,
    }
    meta = _summary(arrays, detector=detector)
    return Dataset(arrays, meta)


def _summary(a: dict[str, np.ndarray], *, detector: str) -> dict[str, Any]:
    matched = a["matched"]
    missed = a["ref_beat"] < 0
    counts = {c: int(np.sum(a["label"] == i)) for i, c in enumerate(CLASSES)}
    ref_counts = {c: int(np.sum(a["ref_label"] == i)) for i, c in enumerate(CLASSES)}
    missed_counts = {c: int(np.sum(missed & (a["ref_label"] == i))) for i, c in enumerate(CLASSES)}
    other_symbols = sorted(set(a["ref_symbol"][a["ref_label"] == LABEL_OTHER].tolist()))
    return {
        "format": "beatwise-beats/1",
        "detector": detector,
        "fs": FS,
        "window": {"before": WINDOW_BEFORE, "after": WINDOW_AFTER},
        "tolerance_samples": TOLERANCE,
        "records": a["record_names"].tolist(),
        "n_beats": len(matched),
        "n_matched": int(matched.sum()),
        "n_unmatched": int((~matched).sum()),
        "n_reference": len(missed),
        "n_missed": int(missed.sum()),
        "beats_per_class": counts,
        "beats_other": int(np.sum(a["label"] == LABEL_OTHER)),
        "reference_per_class": ref_counts,
        "missed_per_class": missed_counts,
        "missed_other": int(np.sum(missed & (a["ref_label"] == LABEL_OTHER))),
        "other_symbols": other_symbols,
    }


def build_dataset(
    records: Sequence[tuple[str, str]] | None = None,
    *,
    detector: str = "pipeline",
    workers: int | None = None,
    on_record: Callable[[str], None] | None = None,
) -> Dataset:
    """Cut and match the beats of many records, in parallel processes.

    Args:
        records: ``(db, name)`` pairs; default :func:`all_records` (126 records).
        detector: ``"pipeline"`` (default) or ``"biosppy"``.
        workers: Processes; default ``os.cpu_count()``. 1 runs in this process.
        on_record: Called with ``"db/name"`` as each record finishes (progress).

    Returns:
        A :class:`Dataset` whose arrays are, per detected beat: ``window`` (n, 280) float32
        [0, 1]; ``rr`` (n, 3) float32 s (pre, post, local mean); ``sample`` int64 R peak
        (360 Hz); ``record`` int16 index into ``record_names`` (``"db/name"``); ``db``;
        ``matched`` bool; ``symbol`` matched annotation symbol ('' when unmatched);
        ``label`` int8 class index in CLASSES, -1 for other beat symbols, -2 unmatched;
        ``offset`` int32 samples, R peak minus matched annotation; ``ref_index`` int32 index
        of the matched beat annotation within its record (-1). Per reference beat
        annotation: ``ref_record``, ``ref_sample``, ``ref_symbol``, ``ref_label``,
        ``ref_beat`` (index of its detected beat, -1 when missed). Records come in the
        given order whatever the process scheduling, so the result is deterministic.
    """
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}; got {detector!r}.")
    records = list(all_records() if records is None else records)
    jobs = [(db, name, detector) for db, name in records]
    parts = map_in_order(
        _beat_record_star,
        jobs,
        workers=workers,
        on_result=(lambda part: on_record(part.record)) if on_record else None,
    )
    return _assemble(parts, detector=detector)


def save_dataset(dataset: Dataset, path: str | Path, *, compress: bool = False) -> Path:
    """Write a dataset as ``.npz``, byte for byte the same for the same data.

    ``np.savez`` stamps each member with the current time; this writer uses a fixed date so
    the same data gives the same file (and the same sha256).

    Args:
        dataset: What :func:`build_dataset` returned.
        path: Output file; its folder is created.
        compress: Deflate the members. Default False (faster to load).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    members = dict(dataset.arrays)
    members["meta"] = np.asarray(json.dumps(dataset.meta, sort_keys=True))
    tmp = path.with_name(path.name + ".tmp")
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(tmp, "w", compression=method, allowZip64=True) as zf:
        for key in sorted(members):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(members[key]), allow_pickle=False)
            zf.writestr(info, buf.getvalue())
    os.replace(tmp, path)
    return path


def load_dataset(path: str | Path) -> Dataset:
    """Read a dataset written by :func:`save_dataset`.

    Raises:
        FileNotFoundError: naming the file and the command that builds it.
        ValueError: the file is not a BeatWise beat dataset.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"beat dataset {path} not found; build it with 'beatwise dataset build --out {path}'."
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"beat dataset {path} cannot be read as a .npz archive ({type(exc).__name__}: "
            f"{exc}); it is truncated or not a dataset: rebuild it with "
            f"'beatwise dataset build --out {path}'."
        ) from exc
    if "meta" not in arrays or "window" not in arrays:
        raise ValueError(f"{path} is not a BeatWise beat dataset (no 'meta'/'window' arrays).")
    meta = json.loads(str(arrays.pop("meta").reshape(-1)[0]))
    if meta.get("window") != {"before": WINDOW_BEFORE, "after": WINDOW_AFTER}:
        raise ValueError(
            f"beat dataset {path}: window {meta.get('window')}, the pipeline cuts "
            f"{{'before': {WINDOW_BEFORE}, 'after': {WINDOW_AFTER}}}; rebuild it."
        )
    return Dataset(arrays, meta)
