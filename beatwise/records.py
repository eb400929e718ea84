"""WFDB records and their reference annotations, as the pipeline needs them.

One function, :func:`load_record`, turns a record of any PhysioNet-style database into a
:class:`Record`: one lead chosen by name, physical units (mV), resampled to 360 Hz, with the
reference annotations rescaled to the same sample grid and split into beats and non-beats.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import wfdb
from scipy.signal import resample_poly

from beatwise.classes import BEAT_SYMBOLS

__all__ = [
    "FS",
    "LEAD_PREFERENCE",
    "Record",
    "RecordError",
    "data_dir",
    "list_records",
    "load_record",
    "record_path",
]

#: The pipeline's sampling rate (Hz). Records at other rates are resampled to it.
FS = 360

#: Leads in order of preference; the first present is used, else the record's first lead.
LEAD_PREFERENCE: tuple[str, ...] = ("MLII", "ECG1")

_ENV = "BEATWISE_DATA"


class RecordError(ValueError):
    """A record that cannot be used: missing files, bad header, bad samples, unknown lead."""


def data_dir() -> Path:
    """The folder that holds the databases (``mitdb/``, ``svdb/``, ...).

    ``$BEATWISE_DATA`` when set, else ``$XDG_DATA_HOME/beatwise`` (``~/.local/share/beatwise``),
    where ``beatwise data download`` puts them.
    """
    env = os.environ.get(_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(xdg) / "beatwise"


def _db_dir(db: str, root: Path | None) -> Path:
    given = root is not None
    root = data_dir() if root is None else Path(root)
    folder = root / db
    if not (folder / "RECORDS").is_file():
        where = "name the folder that holds" if given else f"set {_ENV} to the folder that holds"
        into = f" --dir {root}" if given else ""
        raise RecordError(
            f"database {db!r}: no RECORDS file in {folder} ({where} {db}/, or run "
            f"'beatwise data download --db {db}{into}')."
        )
    return folder


def list_records(db: str, *, root: Path | None = None) -> list[str]:
    """Record names of database ``db``, from its RECORDS file, in file order."""
    folder = _db_dir(db, root)
    names = [ln.strip() for ln in (folder / "RECORDS").read_text().splitlines()]
    return [n for n in names if n]


def record_path(db: str, name: str, *, root: Path | None = None) -> Path:
    """Path (without extension) of record ``name`` of database ``db``."""
    return _db_dir(db, root) / name


@dataclass(frozen=True, eq=False)
class Record:
    """One lead of a record at :data:`FS`, with its reference annotations.

    Attributes:
        db: Database name (folder under the data directory), e.g. ``"mitdb"``.
        name: Record name, e.g. ``"100"``.
        lead: Name of the lead used (``"MLII"``, ``"ECG1"``, ...).
        fs: Sampling rate of ``signal`` in Hz (always :data:`FS`).
        fs_native: Sampling rate of the stored record in Hz.
        signal: Samples in mV, float64, shape ``(n,)``.
        beat_samples: Sample indices (at ``fs``) of beat annotations, int64, increasing.
        beat_symbols: Their MIT-BIH symbols, ``<U1`` array.
        other_samples: Sample indices of non-beat annotations (rhythm, noise, comments).
        other_symbols: Their symbols.
        other_aux: Their aux notes (e.g. ``"(AFIB"``).
    """

    db: str
    name: str
    lead: str
    fs: int
    fs_native: float
    signal: np.ndarray
    beat_samples: np.ndarray
    beat_symbols: np.ndarray
    other_samples: np.ndarray
    other_symbols: np.ndarray
    other_aux: np.ndarray

    @property
    def duration_s(self) -> float:
        return len(self.signal) / self.fs

    @property
    def id(self) -> str:
        return f"{self.db}/{self.name}"


def _pick_lead(sig_names: list[str], lead: str | None, rid: str) -> int:
    if lead is not None:
        if lead not in sig_names:
            raise RecordError(f"record {rid}: no lead {lead!r}; it has {sig_names}.")
        return sig_names.index(lead)
    for name in LEAD_PREFERENCE:
        if name in sig_names:
            return sig_names.index(name)
    return 0


def load_record(
    db: str,
    name: str,
    *,
    root: Path | None = None,
    lead: str | None = None,
    annotator: str = "atr",
) -> Record:
    """Load one lead of a WFDB record, in mV at 360 Hz, with its reference annotations.

    Args:
        db: Database folder under the data directory (``"mitdb"``, ``"svdb"``, ...).
        name: Record name as listed in RECORDS.
        root: Data directory; default :func:`data_dir`.
        lead: Lead name to use; default the first of :data:`LEAD_PREFERENCE` present, else
            the record's first lead (mitdb 102 and 104 have no MLII; 114 has it second).
        annotator: Annotation file extension. Default ``"atr"`` (the reference).

    Raises:
        RecordError: naming the record and the problem (missing file, truncated signal,
            unusable sampling rate, unknown lead, non-finite samples, bad annotations).
    """
    path = record_path(db, name, root=root)
    rid = f"{db}/{name}"
    for ext in ("hea", "dat", annotator):
        f = path.with_name(f"{name}.{ext}")
        if ext == "dat" and not f.exists():
            continue  # some formats name their signal files differently; the header says
        if not f.is_file():
            raise RecordError(f"record {rid}: missing file {f}.")
    try:
        header = wfdb.rdheader(str(path))
    except Exception as exc:  # wfdb raises many types for a bad header
        raise RecordError(f"record {rid}: unreadable header {path}.hea ({exc}).") from exc
    if header.fs is None or not np.isfinite(header.fs) or not 1 <= header.fs <= 20_000:
        raise RecordError(
            f"record {rid}: sampling rate {header.fs!r} Hz in {path}.hea; expected 1-20000 Hz."
        )
    ch = _pick_lead(list(header.sig_name or []), lead, rid)
    for fname in set(header.file_name or []):
        if not (path.parent / fname).is_file():
            raise RecordError(f"record {rid}: missing signal file {path.parent / fname}.")
    try:
        rec = wfdb.rdrecord(str(path), channels=[ch], physical=True)
    except Exception as exc:  # a truncated .dat makes wfdb fail deep inside numpy
        raise RecordError(
            f"record {rid}: cannot read signal file (truncated or corrupt? {exc})."
        ) from exc
    x = np.asarray(rec.p_signal[:, 0], dtype=np.float64)
    if len(x) != header.sig_len:
        raise RecordError(
            f"record {rid}: {len(x)} samples read, header says {header.sig_len} (truncated?)."
        )
    bad = ~np.isfinite(x)
    if bad.any():
        raise RecordError(
            f"record {rid}: {int(bad.sum())} non-finite samples in lead {rec.sig_name[0]!r} "
            f"(first at sample {int(np.argmax(bad))}); expected finite mV values."
        )
    units = (rec.units or ["mV"])[0]
    if units.lower() == "uv":
        x = x / 1000.0
    elif units.lower() != "mv":
        raise RecordError(f"record {rid}: lead units {units!r}; expected mV or uV.")

    try:
        ann = wfdb.rdann(str(path), annotator)
    except Exception as exc:
        raise RecordError(
            f"record {rid}: unreadable annotations {path}.{annotator} ({exc})."
        ) from exc

    fs_native = float(header.fs)
    n_native = len(x)
    samples = np.asarray(ann.sample, dtype=np.int64)
    if fs_native != FS:
        ratio = Fraction(FS / fs_native).limit_denominator(1000)
        x = resample_poly(x, ratio.numerator, ratio.denominator)
        samples = np.rint(samples * (FS / fs_native)).astype(np.int64)
    n = len(x)
    # svdb 860 holds one annotation one sample past the end; anything further is an error.
    if len(samples) and (samples.min() < 0 or samples.max() > n_native * FS / fs_native + 1):
        raise RecordError(
            f"record {rid}: annotation sample {int(samples.max())} outside the signal (0..{n - 1})."
        )
    samples = np.clip(samples, 0, n - 1)
    symbols = np.asarray(ann.symbol, dtype="<U1")
    aux = np.asarray([a or "" for a in (ann.aux_note or [""] * len(symbols))], dtype=object)
    is_beat = np.isin(symbols, sorted(BEAT_SYMBOLS))
    return Record(
        db=db,
        name=name,
        lead=rec.sig_name[0],
        fs=FS,
        fs_native=fs_native,
        signal=x,
        beat_samples=samples[is_beat],
        beat_symbols=symbols[is_beat],
        other_samples=samples[~is_beat],
        other_symbols=symbols[~is_beat],
        other_aux=aux[~is_beat],
    )
