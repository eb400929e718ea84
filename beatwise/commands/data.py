"""``beatwise data download`` and ``beatwise data check``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DATABASES = ("mitdb", "svdb")
#: The reference annotator every record needs (what ``load_record`` reads by default).
ANNOTATOR = "atr"
#: The checksum list at the top of the data directory (``sha256sum -c SHA256SUMS`` format).
SUMS_FILE = "SHA256SUMS"


def register(groups: dict[str, argparse._SubParsersAction]) -> None:
    p = groups["data"].add_parser(
        "download", help="fetch databases from PhysioNet (needs the network)"
    )
    p.add_argument(
        "--db",
        nargs="+",
        default=list(DATABASES),
        choices=DATABASES,  # the ones BeatWise reads; a name is also a folder name
        help="databases (default: %(default)s)",
    )
    p.add_argument("--dir", default=None, help="target folder (default: the data directory)")
    p.set_defaults(func=_download)

    p = groups["data"].add_parser(
        "check",
        help="check that every record of the databases has its files (exit 1 if not)",
        description="Per database: the records its RECORDS file lists and any of their "
        f".hea, signal (.dat) or .{ANNOTATOR} files missing; with --sha256, also every file "
        f"against the data directory's {SUMS_FILE}. Exit status 1 when anything is missing "
        "or differs.",
    )
    p.add_argument("--dir", default=None, help="data directory (default: the data directory)")
    p.add_argument(
        "--sha256",
        action="store_true",
        help=f"also verify every file listed in <dir>/{SUMS_FILE} (slow: reads all the data)",
    )
    p.set_defaults(func=_check)


def _download(args: argparse.Namespace) -> int:
    import wfdb

    from beatwise.records import data_dir

    root = Path(args.dir) if args.dir else data_dir()
    for db in args.db:
        target = root / db
        made = _missing_folders(target)  # what this call creates, so a failure can undo it
        try:
            target.mkdir(parents=True, exist_ok=True)
            print(f"downloading {db} into {target} ...")
            wfdb.dl_database(db, dl_dir=str(target))
            names = wfdb.get_record_list(db)
            (target / "RECORDS").write_text("\n".join(names) + "\n")
        except Exception as exc:  # network, HTTP, disk: wfdb and requests raise many types
            _remove_empty(made)
            kept = (
                "; the files in it are kept (run again to resume)"
                if target.is_dir() and any(target.iterdir())
                else ""
            )
            print(
                f"beatwise: error: download of database {db!r} into {target} failed: "
                f"{_cause(exc)}{kept}.",
                file=sys.stderr,
            )
            return 1
        except BaseException:  # Ctrl-C: no empty folder left behind either
            _remove_empty(made)
            raise
    print(f"done. Set BEATWISE_DATA={root} if that is not the default.")
    return 0


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, innermost first."""
    out = []
    while not folder.exists() and folder != folder.parent:
        out.append(folder)
        folder = folder.parent
    return out


def _remove_empty(folders: list[Path]) -> None:
    """Remove those of ``folders`` (innermost first) that are empty; never one with files."""
    for f in folders:
        try:
            f.rmdir()  # fails on a folder that holds anything
        except OSError:
            return


def _cause(exc: BaseException) -> str:
    """One line: the exception, and its innermost cause when that says something more
    (``requests`` wraps "Name or service not known" three deep)."""
    root, seen = exc, {id(exc)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        root = nxt
        seen.add(id(nxt))
    text = f"{type(exc).__name__}: {exc}"
    if root is not exc and str(root) and str(root) not in text:
        text += f" (cause: {type(root).__name__}: {root})"
    return " ".join(text.split())


def _check(args: argparse.Namespace) -> int:
    from beatwise.records import RecordError, data_dir, list_records

    root = Path(args.dir) if args.dir else data_dir()
    print(f"data directory: {root}")
    sums, ok = None, True
    if args.sha256:
        sums, problems = _read_sums(root)
        for line in problems:
            print(f"  {line}")
        ok = not problems
    for db in DATABASES:
        try:
            names = list_records(db, root=root)
        except RecordError as exc:
            ok = False
            print(f"  {db}: {exc}")
            continue
        problems = [p for name in names for p in _record_problems(root / db, name)]
        line = f"  {db}: {len(names)} records"
        if sums is not None:
            listed = {rel: h for rel, h in sums.items() if rel.startswith(f"{db}/")}
            bad, gone = _verify(root, listed)
            problems += [f"missing: {f}" for f in gone if f"missing: {f}" not in problems]
            problems += [f"bad checksum: {f} (differs from {root / SUMS_FILE})" for f in bad]
            line += f"; {len(listed) - len(bad) - len(gone)} of {len(listed)} checksums match"
        line += f"; {len(problems)} problem(s):" if problems else "; all files present"
        print(line)
        for p in problems:
            print(f"    {p}")
        ok = ok and not problems
    return 0 if ok else 1


def _record_problems(folder: Path, name: str) -> list[str]:
    """What record ``name`` in ``folder`` lacks, as lines to print: its header, the signal
    files the header names (``<name>.dat`` when there is no header) and its reference
    annotations, each when not there; a header ``wfdb`` cannot read."""
    import wfdb

    hea = folder / f"{name}.hea"
    signals, out = [folder / f"{name}.dat"], []
    if hea.is_file():
        try:
            named = wfdb.rdheader(str(folder / name)).file_name or []
            signals = [folder / f for f in dict.fromkeys(named)]
        except Exception as exc:  # wfdb raises many types for a bad header
            out.append(f"unreadable header: {hea} ({type(exc).__name__}: {exc})")
    wanted = [hea, *signals, folder / f"{name}.{ANNOTATOR}"]
    return [f"missing: {f}" for f in wanted if not f.is_file()] + out


def _read_sums(root: Path) -> tuple[dict[str, str], list[str]]:
    """``root/SHA256SUMS`` as {path relative to ``root``: hex digest}, and the problems met
    reading it (no such file, malformed lines) as lines to print."""
    path = root / SUMS_FILE
    if not path.is_file():
        return {}, [
            f"--sha256: no {path}; expected a {SUMS_FILE} file as 'sha256sum' writes it "
            "(lines '<64 hex digits>  <db>/<file>')."
        ]
    sums, problems = {}, []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, _, rel = line.strip().partition(" ")
        rel = rel.strip().removeprefix("*")  # '*' marks binary mode in sha256sum's format
        if len(digest) != 64 or not rel or any(c not in "0123456789abcdef" for c in digest.lower()):
            problems.append(
                f"{path}, line {i}: {line.strip()[:80]!r}; expected '<64 hex digits>  <file>'."
            )
            continue
        sums[rel] = digest.lower()
    return sums, problems


def _verify(root: Path, listed: dict[str, str]) -> tuple[list[Path], list[Path]]:
    """(files whose SHA-256 differs, files not there) among ``listed`` ({path relative to
    ``root``: hex digest})."""
    import hashlib

    bad, gone = [], []
    for rel, digest in sorted(listed.items()):
        f = root / rel
        if not f.is_file():
            gone.append(f)
            continue
        with open(f, "rb") as fh:
            if hashlib.file_digest(fh, "sha256").hexdigest() != digest:
                bad.append(f)
    return bad, gone
