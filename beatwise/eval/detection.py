"""R-peak detection scored against reference beat annotations, for ours and for peers.

A detection is a true positive when it is matched one-to-one (nearest pairs first, see
:func:`beatwise.eval.matching.match_beats`) to a reference beat within ``tolerance_s``
(150 ms). Per record and gross over records (sum the counts, then the ratios):

- Se = TP / (TP + FN), +P = TP / (TP + FP), DER = (FN + FP) / (TP + FN), in percent.
- Speed: record duration / processing seconds ("x real time"), timed with
  :func:`time.perf_counter` after a warm-up (numba JIT, peer imports) in the same process,
  detection only (the record is loaded first), the fastest of up to 5 runs within 0.5 s
  (a slow detector runs once). Ours is timed twice: the whole record in one
  ``push`` and the record in 1-second chunks, as the live consumer feeds it.

Detectors are named: ``"beatwise"`` (:class:`~beatwise.dsp.filter.Bandpass` then
:class:`~beatwise.dsp.detector.OnlinePanTompkins`, causal, streaming) and the offline peers of
:data:`PEERS` (whole record at once, each given the input its documentation asks for).

The pure functions (:func:`score`, :func:`gross`, :func:`rates`) hold the arithmetic; the
rest runs records (in parallel processes) and turns results into JSON, rich tables and
markdown.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

from beatwise.eval.matching import match_beats
from beatwise.parallel import map_in_order, progress_bar
from beatwise.records import FS, RecordError, list_records, load_record

__all__ = [
    "DETECTORS",
    "OURS",
    "PEERS",
    "TOLERANCE_S",
    "Counts",
    "RecordResult",
    "available",
    "bench_report",
    "check_detectors",
    "check_records",
    "detect",
    "environment",
    "eval_report",
    "evaluate",
    "evaluate_record",
    "gross",
    "markdown_table",
    "rates",
    "rich_table",
    "score",
    "tolerance_samples",
    "update_markdown",
    "worst_records",
    "write_json",
]

#: Matching tolerance in seconds (150 ms, as the MIT-BIH literature and EC57 use).
TOLERANCE_S = 0.150

#: Our detector's name in reports.
OURS = "beatwise"


# --------------------------------------------------------------------------- arithmetic


@dataclass(frozen=True)
class Counts:
    """Detection counts of one record or of several (beats).

    Attributes:
        tp: Detections matched to a reference beat.
        fn: Reference beats with no detection.
        fp: Detections with no reference beat.
    """

    tp: int
    fn: int
    fp: int

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fn + other.fn, self.fp + other.fp)


def rates(counts: Counts) -> dict[str, float | None]:
    """Se, +P and DER of ``counts``, in percent.

    Returns:
        ``{"se", "ppv", "der"}``; a ratio whose denominator is 0 is ``None`` (no reference
        beats: Se and DER undefined; no detections: +P undefined).
    """
    ref = counts.tp + counts.fn
    det = counts.tp + counts.fp
    return {
        "se": 100.0 * counts.tp / ref if ref else None,
        "ppv": 100.0 * counts.tp / det if det else None,
        "der": 100.0 * (counts.fn + counts.fp) / ref if ref else None,
    }


def gross(counts: Iterable[Counts]) -> Counts:
    """Gross counts: the sum over records (ratios are then taken of the sums)."""
    total = Counts(0, 0, 0)
    for c in counts:
        total = total + c
    return total


def tolerance_samples(tolerance_s: float = TOLERANCE_S, *, fs: float = FS) -> int:
    """Matching tolerance in samples: ``round(tolerance_s * fs)`` (54 at 150 ms, 360 Hz)."""
    if not tolerance_s >= 0:
        raise ValueError(f"tolerance_s must be >= 0 seconds, got {tolerance_s!r}.")
    return round(tolerance_s * fs)


def score(detected: np.ndarray, reference: np.ndarray, *, tolerance: int) -> Counts:
    """Count TP, FN and FP of detected R peaks against reference beats.

    Args:
        detected: Detected R-peak sample indices (any order; sorted here, duplicates kept,
            so a duplicate detection is a false positive).
        reference: Reference beat sample indices, increasing.
        tolerance: Largest distance in samples (inclusive) for a match.

    Returns:
        The :class:`Counts`.
    """
    detected = np.sort(np.asarray(detected, dtype=np.int64).ravel())
    return _counts(*match_beats(detected, reference, tolerance=tolerance))


def _counts(det_to_ref: np.ndarray, ref_to_det: np.ndarray) -> Counts:
    tp = int(np.count_nonzero(ref_to_det >= 0))
    return Counts(tp=tp, fn=len(ref_to_det) - tp, fp=int(np.count_nonzero(det_to_ref < 0)))


# --------------------------------------------------------------------------- detectors


def _ours(signal: np.ndarray, fs: float, *, chunk: int | None = None) -> np.ndarray:
    from beatwise.dsp.detector import OnlinePanTompkins
    from beatwise.dsp.filter import Bandpass

    bandpass = Bandpass(fs=fs)
    detector = OnlinePanTompkins(fs=fs)
    step = len(signal) if chunk is None else chunk
    parts = [
        detector.push(bandpass.push(signal[i : i + step]))
        for i in range(0, len(signal), max(step, 1))
    ]
    parts.append(detector.flush()[0])
    return np.concatenate(parts).astype(np.int64)


def _xqrs(signal: np.ndarray, fs: float) -> np.ndarray:
    from wfdb.processing import xqrs_detect

    # xqrs filters the raw signal itself (5-20 Hz) and learns its thresholds.
    return xqrs_detect(signal, fs=fs, verbose=False)


def _biosppy_prefilter(signal: np.ndarray, fs: float) -> np.ndarray:
    from biosppy.signals import tools

    # What biosppy.signals.ecg.ecg feeds its segmenters: FIR bandpass 0.67-45 Hz of order
    # 1.5 * fs, zero-phase, minus the mean.
    filtered, _, _ = tools.filter_signal(
        signal=signal,
        ftype="FIR",
        band="bandpass",
        order=int(1.5 * fs),
        frequency=[0.67, 45],
        sampling_rate=fs,
    )
    return filtered - np.mean(filtered)


def _hamilton(signal: np.ndarray, fs: float) -> np.ndarray:
    from biosppy.signals.ecg import hamilton_segmenter

    # Its docstring asks for a filtered signal.
    (rpeaks,) = hamilton_segmenter(signal=_biosppy_prefilter(signal, fs), sampling_rate=fs)
    return rpeaks


def _pan_tompkins_pp(signal: np.ndarray, fs: float) -> np.ndarray:
    from biosppy.signals.ecg import Pan_Tompkins_Plus_Plus_segmenter

    # Its docstring asks for the raw signal (it bandpasses 5-18 Hz itself).
    (rpeaks,) = Pan_Tompkins_Plus_Plus_segmenter(signal=signal, sampling_rate=fs)
    return rpeaks


def _pan_tompkins_pp_dedup(signal: np.ndarray, fs: float) -> np.ndarray:
    # biosppy 2.2's Pan_Tompkins_Plus_Plus_segmenter often returns a beat twice, one sample
    # apart (mitdb 113-115: about one duplicate per beat). Scored as is, each is a false
    # positive; this variant shows the detector's quality without that bookkeeping bug.
    rpeaks = np.sort(np.asarray(_pan_tompkins_pp(signal, fs), dtype=np.int64))
    keep = np.r_[True, np.diff(rpeaks) > round(0.028 * fs)]
    return rpeaks[keep]


def _neurokit(signal: np.ndarray, fs: float) -> np.ndarray:
    import neurokit2 as nk

    method = "pantompkins1985"
    cleaned = nk.ecg_clean(signal, sampling_rate=fs, method=method)
    info = nk.ecg_findpeaks(cleaned, sampling_rate=fs, method=method)
    return info["ECG_R_Peaks"]


@dataclass(frozen=True)
class _Detector:
    run: Callable[[np.ndarray, float], np.ndarray]
    module: str  # the package it needs (its version goes into the report)
    input: str  # what it is given, for the reader of the report
    streaming: bool = False


#: Detectors by name: ours, then the offline peers.
DETECTORS: dict[str, _Detector] = {
    OURS: _Detector(
        _ours, "beatwise", "raw mV; causal Bandpass 0.5-40 Hz + OnlinePanTompkins", True
    ),
    "wfdb-xqrs": _Detector(_xqrs, "wfdb", "raw mV (xqrs_detect filters itself)"),
    "biosppy-hamilton": _Detector(
        _hamilton, "biosppy", "biosppy's ecg() prefilter: FIR 0.67-45 Hz, zero-phase"
    ),
    "biosppy-pantompkins++": _Detector(
        _pan_tompkins_pp, "biosppy", "raw mV (Pan_Tompkins_Plus_Plus_segmenter filters itself)"
    ),
    "biosppy-pantompkins++-dedup": _Detector(
        _pan_tompkins_pp_dedup,
        "biosppy",
        "as biosppy-pantompkins++, then detections within 28 ms of the previous one dropped",
    ),
    "neurokit2-pantompkins1985": _Detector(
        _neurokit, "neurokit2", "raw mV; ecg_clean(method='pantompkins1985')"
    ),
}

#: Peer names, in report order.
PEERS: tuple[str, ...] = tuple(name for name in DETECTORS if name != OURS)


def check_detectors(names: Sequence[str]) -> list[str]:
    """Return ``names`` as a list after checking each is in :data:`DETECTORS`.

    Raises:
        ValueError: naming the unknown detector and the known ones.
    """
    for name in names:
        if name not in DETECTORS:
            raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}.")
    return list(names)


def available(name: str) -> str | None:
    """``None`` when detector ``name`` can run here, else why not (its package is missing)."""
    module = DETECTORS[name].module
    try:
        __import__(module)
    except ImportError as exc:
        return f"{module} not importable ({exc}); pip install {module}"
    return None


def detect(name: str, signal: np.ndarray, *, fs: float = FS) -> np.ndarray:
    """Run detector ``name`` on a whole signal (mV at ``fs`` Hz).

    Returns:
        R-peak sample indices, int64, increasing (duplicates kept).
    """
    check_detectors([name])
    return np.sort(np.asarray(DETECTORS[name].run(signal, fs), dtype=np.int64).ravel())


# --------------------------------------------------------------------------- one record


@dataclass(frozen=True)
class RecordResult:
    """One detector on one record.

    Attributes:
        detector: Detector name (a key of :data:`DETECTORS`).
        record: Record name.
        n_ref: Reference beats.
        tp, fn, fp: Counts (beats).
        se, ppv, der: Percent; ``None`` when undefined.
        duration_s: Record duration in seconds.
        seconds: Processing time of the whole record at once, seconds.
        seconds_chunked_1s: Processing time in 1-second chunks, seconds; ``None`` for
            offline detectors.
        x_realtime: ``duration_s / seconds``; ``None`` if no time was measured.
        x_realtime_chunked_1s: ``duration_s / seconds_chunked_1s``; ``None`` for offline.
        chunk_invariant: Whether the 1-second chunks gave the same peaks as one push;
            ``None`` for offline detectors.
        fn_by_symbol: Missed reference beats by annotation symbol (``{"V": 3, "!": 40}``).
        offset_ms_median: Median of detection minus reference time over the matched
            beats, ms (positive: detections late); ``None`` without matches.
        offset_ms_abs_p95: 95th percentile of its absolute value, ms.
    """

    detector: str
    record: str
    n_ref: int
    tp: int
    fn: int
    fp: int
    se: float | None
    ppv: float | None
    der: float | None
    duration_s: float
    seconds: float
    seconds_chunked_1s: float | None
    x_realtime: float | None
    x_realtime_chunked_1s: float | None
    chunk_invariant: bool | None
    fn_by_symbol: dict[str, int]
    offset_ms_median: float | None
    offset_ms_abs_p95: float | None

    @property
    def counts(self) -> Counts:
        return Counts(self.tp, self.fn, self.fp)


_WARM: set[str] = set()


def _timed(
    fn: Callable[[], np.ndarray],
    clock: Callable[[], float],
    *,
    budget_s: float = 0.5,
    max_runs: int = 5,
) -> tuple[np.ndarray, float]:
    """``(fn(), seconds)``: the fastest of runs repeated while under ``budget_s`` seconds in
    all (at most ``max_runs``; a slow detector runs once). The minimum, because on a shared
    machine the noise only ever adds time."""
    best = float("inf")
    spent = 0.0
    for _ in range(max_runs):
        t0 = clock()
        out = fn()
        dt = clock() - t0
        best = min(best, dt)
        spent += dt
        if spent >= budget_s:
            break
    return out, best


def evaluate_record(
    db: str,
    name: str,
    *,
    detector: str = OURS,
    tolerance_s: float = TOLERANCE_S,
    root: Path | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> RecordResult:
    """Score one detector on one record.

    The detector is first run once on the record's first 10 s in this process (numba JIT,
    lazy imports), so the timings are of steady-state work only.

    Args:
        db: Database folder under the data directory (``"mitdb"``, ``"svdb"``, ...).
        name: Record name.
        detector: A key of :data:`DETECTORS`. Default ``"beatwise"``.
        tolerance_s: Matching tolerance in seconds. Default 0.150.
        root: Data directory; default :func:`beatwise.records.data_dir`.
        clock: Seconds clock for the timings. Default :func:`time.perf_counter`.

    Raises:
        RecordError: the record cannot be loaded.
        ValueError: unknown detector.
    """
    check_detectors([detector])
    rec = load_record(db, name, root=root)
    fs, x = float(rec.fs), rec.signal
    spec = DETECTORS[detector]
    if detector not in _WARM:
        spec.run(x[: int(10 * fs)], fs)
        _WARM.add(detector)
    peaks, seconds = _timed(lambda: detect(detector, x, fs=fs), clock)
    seconds_1s = x_rt_1s = invariant = None
    if spec.streaming:
        peaks_1s, seconds_1s = _timed(lambda: np.sort(_ours(x, fs, chunk=round(fs))), clock)
        invariant = bool(np.array_equal(peaks_1s, peaks))
        x_rt_1s = rec.duration_s / seconds_1s if seconds_1s > 0 else None
    tolerance = tolerance_samples(tolerance_s, fs=fs)
    det_to_ref, ref_to_det = match_beats(peaks, rec.beat_samples, tolerance=tolerance)
    counts = _counts(det_to_ref, ref_to_det)
    missed, n_missed = np.unique(rec.beat_symbols[ref_to_det < 0], return_counts=True)
    hit = det_to_ref >= 0
    offset_ms = (peaks[hit] - rec.beat_samples[det_to_ref[hit]]) * 1000.0 / fs
    return RecordResult(
        detector=detector,
        record=name,
        n_ref=len(rec.beat_samples),
        tp=counts.tp,
        fn=counts.fn,
        fp=counts.fp,
        **rates(counts),
        duration_s=rec.duration_s,
        seconds=seconds,
        seconds_chunked_1s=seconds_1s,
        x_realtime=rec.duration_s / seconds if seconds > 0 else None,
        x_realtime_chunked_1s=x_rt_1s,
        chunk_invariant=invariant,
        fn_by_symbol={str(k): int(v) for k, v in zip(missed, n_missed)},
        offset_ms_median=float(np.median(offset_ms)) if len(offset_ms) else None,
        offset_ms_abs_p95=float(np.percentile(np.abs(offset_ms), 95)) if len(offset_ms) else None,
    )


# --------------------------------------------------------------------------- many records


def check_records(db: str, names: Sequence[str] | None, *, root: Path | None = None) -> list[str]:
    """The records to run: ``names`` (checked against RECORDS), or all of ``db``.

    Raises:
        RecordError: unknown database (naming the folder looked in) or unknown record
            (naming the records the database has).
    """
    known = list_records(db, root=root)
    if not names:
        return known
    missing = [n for n in names if n not in known]
    if missing:
        shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else ".")
        raise RecordError(
            f"database {db!r}: no record(s) {', '.join(missing)}; its RECORDS file lists "
            f"{len(known)}: {shown}"
        )
    return list(names)


def _evaluate_task(task: tuple) -> RecordResult:
    db, record, detector, tolerance_s, root = task
    return evaluate_record(db, record, detector=detector, tolerance_s=tolerance_s, root=root)


def evaluate(
    db: str,
    records: Sequence[str],
    *,
    detectors: Sequence[str] = (OURS,),
    workers: int | None = None,
    tolerance_s: float = TOLERANCE_S,
    root: Path | None = None,
    progress: bool = True,
    console=None,
) -> list[RecordResult]:
    """Score each detector on each record; the (detector, record) tasks run on a pool of
    worker processes, the slowest detector's first.

    Args:
        db: Database folder under the data directory.
        records: Record names.
        detectors: Keys of :data:`DETECTORS`. Default ``("beatwise",)``.
        workers: Worker processes; default ``os.cpu_count()``. 1 runs in this process.
        tolerance_s: Matching tolerance in seconds. Default 0.150.
        root: Data directory; default :func:`beatwise.records.data_dir`.
        progress: Show a rich progress bar. Default True.
        console: The ``rich.console.Console`` for the bar; default one on stderr.

    Returns:
        Results ordered by detector (as given), then record (as given).
    """
    check_detectors(detectors)
    # Slow detectors first, so the pool does not end on one long task.
    slow_first = sorted(detectors, key=lambda d: d != "wfdb-xqrs")
    tasks = [(db, r, d, tolerance_s, root) for d in slow_first for r in records]
    bar = progress_bar(console=console, disable=not progress)
    with bar:
        task = bar.add_task(
            f"{db}: {len(detectors)} detector(s) x {len(records)}", total=len(tasks)
        )
        done = map_in_order(
            _evaluate_task, tasks, workers=workers, on_result=lambda _: bar.advance(task)
        )
    results = {(t[2], t[1]): res for t, res in zip(tasks, done)}
    return [results[d, r] for d in detectors for r in records]


def _totals(results: Sequence[RecordResult]) -> dict:
    counts = gross(r.counts for r in results)
    duration = sum(r.duration_s for r in results)
    seconds = sum(r.seconds for r in results)
    chunked = [r.seconds_chunked_1s for r in results]
    out = {
        "records": len(results),
        "n_ref": sum(r.n_ref for r in results),
        "tp": counts.tp,
        "fn": counts.fn,
        "fp": counts.fp,
        **rates(counts),
        "duration_s": duration,
        "seconds": seconds,
        "x_realtime": duration / seconds if seconds > 0 else None,
        "x_realtime_chunked_1s": None,
    }
    if results and all(s is not None for s in chunked):
        total = sum(chunked)
        out["x_realtime_chunked_1s"] = duration / total if total > 0 else None
    fn_by_symbol: dict[str, int] = {}
    for r in results:
        for sym, n in r.fn_by_symbol.items():
            fn_by_symbol[sym] = fn_by_symbol.get(sym, 0) + n
    out["fn_by_symbol"] = dict(sorted(fn_by_symbol.items(), key=lambda kv: -kv[1]))
    invariant = [r.chunk_invariant for r in results if r.chunk_invariant is not None]
    if invariant:
        out["chunk_invariant"] = all(invariant)
    return out


def _git_describe() -> dict:
    """HEAD commit, the last commit of beatwise/dsp/ (the detector's code) and the files
    there with uncommitted changes (the checkout is shared, so they may differ from HEAD)."""
    here = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(
                ["git", *args], cwd=here, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout.rstrip("\n") if res.returncode == 0 else None

    dirty = git("status", "--porcelain", "--", "beatwise/dsp")
    return {
        "commit": git("log", "-1", "--format=%h"),
        "dsp_commit": git("log", "-1", "--format=%h %cI %s", "--", "beatwise/dsp"),
        "dsp_uncommitted": [ln[3:] for ln in dirty.splitlines()] if dirty else [],
    }


def environment(*, modules: Iterable[str] = (), workers: int | None = None) -> dict:
    """Where the numbers were measured: versions, CPU count, UTC date, git state.

    Args:
        modules: Extra distributions whose versions to record (e.g. peers' packages).
        workers: Worker processes used.
    """
    versions = {}
    for mod in ("numpy", "scipy", "numba", *modules):
        try:
            versions[mod] = metadata.version(mod)
        except metadata.PackageNotFoundError:
            versions[mod] = None
    return {
        "python": sys.version.split()[0],
        **versions,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "workers": workers,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": _git_describe(),
    }


def _row(r: RecordResult) -> dict:
    row = asdict(r)
    del row["detector"]
    return row


def _detector_settings() -> dict:
    from beatwise.dsp.detector import OnlinePanTompkins
    from beatwise.dsp.filter import Bandpass

    def public(obj) -> dict:
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in vars(obj).items()
            if not k.startswith("_") and isinstance(v, (int, float, str, tuple))
        }

    return {"bandpass": public(Bandpass(fs=FS)), "detector": public(OnlinePanTompkins(fs=FS))}


def eval_report(
    db: str,
    results: Sequence[RecordResult],
    *,
    tolerance_s: float = TOLERANCE_S,
    workers: int | None = None,
) -> dict:
    """The JSON of ``beatwise eval detect``: one detector, per-record rows and gross totals.

    ``totals`` ``se``/``ppv``/``der`` are percent of the summed counts; ``x_realtime`` is the
    total duration over the total processing time (one core per process).
    """
    names = {r.detector for r in results}
    if len(names) != 1:
        raise ValueError(f"eval_report takes one detector's results, got {sorted(names)}.")
    (name,) = names
    report = {
        "db": db,
        "detector": name,
        "detector_input": DETECTORS[name].input,
        "tolerance_s": tolerance_s,
        "records": [_row(r) for r in results],
        "totals": _totals(results),
        "environment": environment(workers=workers),
    }
    if name == OURS:
        report["detector_settings"] = _detector_settings()
    return report


def bench_report(
    db: str,
    results: Sequence[RecordResult],
    *,
    skipped: dict[str, str] | None = None,
    tolerance_s: float = TOLERANCE_S,
    workers: int | None = None,
) -> dict:
    """The JSON of ``beatwise bench detect``: per-detector totals and per-record rows.

    Args:
        skipped: Detector name -> why it did not run (e.g. its package is missing).
    """
    order = list(dict.fromkeys(r.detector for r in results))
    detectors = []
    for name in order:
        mine = [r for r in results if r.detector == name]
        detectors.append(
            {"detector": name, "input": DETECTORS[name].input, "totals": _totals(mine)}
        )
    modules = sorted({DETECTORS[d].module for d in order} - {"beatwise"})
    return {
        "db": db,
        "tolerance_s": tolerance_s,
        "detectors": detectors,
        "skipped": [{"detector": k, "reason": v} for k, v in (skipped or {}).items()],
        "records": [asdict(r) for r in results],
        "environment": environment(modules=modules, workers=workers),
    }


def write_json(report: dict, path: str | Path) -> Path:
    """Write ``report`` as indented JSON (NaN-free), creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    return path


# --------------------------------------------------------------------------- presentation


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if value < 1000 else f"{value:,.0f}"
    return f"{value:,}"


_COLUMNS = (  # key, header, short header (terminal), digits
    ("tp", "TP", "TP", 0),
    ("fn", "FN", "FN", 0),
    ("fp", "FP", "FP", 0),
    ("se", "Se %", "Se%", 2),
    ("ppv", "+P %", "+P%", 2),
    ("der", "DER %", "DER%", 2),
    ("x_realtime", "x real time", "xRT", 0),
    ("x_realtime_chunked_1s", "x real time (1 s chunks)", "xRT 1s", 0),
)


def _table_rows(
    report: dict, *, per_record: bool, short: bool = False, worst: int = 0
) -> tuple[list[str], list[list[str]]]:
    heads = [c[2] if short else c[1] for c in _COLUMNS]
    if "detectors" in report:  # bench
        header = ["detector", *heads]
        rows = [
            [d["detector"]] + [_fmt(d["totals"][k], n) for k, _, _, n in _COLUMNS]
            for d in report["detectors"]
        ]
        return header, rows
    if worst:
        return _worst_rows(report, worst)
    header = ["record", "beats", *heads]
    rows = []
    if per_record:
        rows = [
            [r["record"], _fmt(r["n_ref"])] + [_fmt(r[k], n) for k, _, _, n in _COLUMNS]
            for r in report["records"]
        ]
    t = report["totals"]
    rows.append(
        [
            f"gross ({t['records']})" if short else f"gross ({t['records']} records)",
            _fmt(t["n_ref"]),
        ]
        + [_fmt(t[k], n) for k, _, _, n in _COLUMNS]
    )
    return header, rows


def _worst_rows(report: dict, worst: int) -> tuple[list[str], list[list[str]]]:
    """Rows of the records with most errors: counts, what was missed, where R peaks sit."""
    cols = _COLUMNS[:6]

    def symbols(d: dict) -> str:
        return " ".join(f"{k}:{v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "-"

    header = ["record", "beats", *(c[1] for c in cols), "missed, by symbol", "R offset ms"]
    records = sorted(report["records"], key=lambda r: (-(r["fn"] + r["fp"]), r["record"]))
    rows = [
        [r["record"], _fmt(r["n_ref"])]
        + [_fmt(r[k], n) for k, _, _, n in cols]
        + [symbols(r.get("fn_by_symbol", {})), _fmt(r.get("offset_ms_median"), 1)]
        for r in records[:worst]
    ]
    t = report["totals"]
    rows.append(
        [f"gross ({t['records']} records)", _fmt(t["n_ref"])]
        + [_fmt(t[k], n) for k, _, _, n in cols]
        + [symbols(t.get("fn_by_symbol", {})), ""]
    )
    return header, rows


def rich_table(report: dict, *, per_record: bool = True):
    """A ``rich.table.Table`` of an eval or bench report (the gross row last, in bold)."""
    from rich.table import Table

    bench = "detectors" in report
    title = (
        f"{'bench' if bench else 'eval'} detect: {report['db']}"
        + (f", {report['detectors'][0]['totals']['records']} records" if bench else "")
        + ("" if bench else f", {report['detector']}")
        + f" (tolerance {report['tolerance_s'] * 1000:.0f} ms)"
    )
    header, rows = _table_rows(report, per_record=per_record, short=True)
    table = Table(title=title, caption="xRT: times real time, one core")
    for i, h in enumerate(header):
        # Numbers never wrap; headers may.
        width = max(len(row[i]) for row in rows) if rows else None
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=i == 0, min_width=width)
    for i, row in enumerate(rows):
        last = not bench and i == len(rows) - 1
        table.add_row(*row, style="bold" if last else None, end_section=last and i > 0)
    return table


def markdown_table(json_path: str | Path, *, per_record: bool = False, worst: int = 0) -> str:
    """A markdown table of the report at ``json_path`` (eval or bench JSON).

    Args:
        json_path: A JSON written by ``beatwise eval detect`` or ``beatwise bench detect``.
        per_record: Eval JSON only: one row per record above the gross row. Default False.
        worst: Eval JSON only: rows for the ``worst`` records with the most errors (FN + FP),
            most first, above the gross row, with the missed beats by annotation symbol and
            the median R-peak offset (detection minus reference, ms) instead of the speeds.
            Default 0 (none).
    """
    report = json.loads(Path(json_path).read_text())
    header, rows = _table_rows(report, per_record=per_record, worst=worst)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    env = report["environment"]
    totals = report["detectors"][0]["totals"] if "detectors" in report else report["totals"]
    n_records = totals["records"]
    git = env.get("git") or {}
    dirty = " (beatwise/dsp/ with uncommitted changes)" if git.get("dsp_uncommitted") else ""
    lines.append("")
    lines.append(
        f"*{report['db']}, {n_records} records, tolerance "
        f"{report['tolerance_s'] * 1000:.0f} ms; measured "
        f"{env['date']} at commit {git.get('commit') or 'unknown'}{dirty}, "
        f"{env['cpu_count']} CPUs, {env.get('workers')} worker processes, Python "
        f"{env['python']}, numba {env.get('numba')}.*"
    )
    return "\n".join(lines)


def worst_records(json_path: str | Path, *, n: int = 5, detector: str = OURS) -> list[dict]:
    """The ``n`` records with the most errors (FN + FP) of ``detector`` in a report."""
    report = json.loads(Path(json_path).read_text())
    rows = [r for r in report["records"] if r.get("detector", report.get("detector")) == detector]
    return sorted(rows, key=lambda r: -(r["fn"] + r["fp"]))[:n]


_MARKER = re.compile(
    r"(<!-- table: (?P<path>\S+?)(?P<opts>(?: [\w=]+)*) -->\n)(?P<body>.*?)(<!-- end table -->)",
    re.DOTALL,
)


def update_markdown(md_path: str | Path, *, root: str | Path | None = None) -> str:
    """Regenerate the tables of a markdown file from their JSON, in place.

    A table lives between ``<!-- table: docs/results/x.json -->`` and ``<!-- end table -->``;
    after the path may come ``per_record`` or ``worst=N`` (see :func:`markdown_table`). The
    path is relative to ``root`` (default: the current folder). Returns the new text.

    Regenerate the detection page after new runs::

        python -c "from beatwise.eval.detection import update_markdown as u; u('docs/detection.md')"
    """
    md_path = Path(md_path)
    base = Path(root) if root is not None else Path.cwd()

    def fill(m: re.Match) -> str:
        opts = m["opts"].split()
        worst = next((int(o.split("=")[1]) for o in opts if o.startswith("worst=")), 0)
        table = markdown_table(base / m["path"], per_record="per_record" in opts, worst=worst)
        return f"{m.group(1)}{table}\n{m.group(5)}"

    text = _MARKER.sub(fill, md_path.read_text())
    md_path.write_text(text)
    return text
