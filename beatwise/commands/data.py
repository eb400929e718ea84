"""``beatwise data download`` and ``beatwise data check``."""

from __future__ import annotations

import argparse

DATABASES = ("mitdb", "svdb")


def register(groups: dict[str, argparse._SubParsersAction]) -> None:
    p = groups["data"].add_parser(
        "download", help="fetch databases from PhysioNet (needs the network)"
    )
    p.add_argument(
        "--db", nargs="+", default=list(DATABASES), help="databases (default: %(default)s)"
    )
    p.add_argument("--dir", default=None, help="target folder (default: the data directory)")
    p.set_defaults(func=_download)

    p = groups["data"].add_parser("check", help="list what the data directory holds")
    p.set_defaults(func=_check)


def _download(args: argparse.Namespace) -> int:
    from pathlib import Path

    import wfdb

    from beatwise.records import data_dir

    root = Path(args.dir) if args.dir else data_dir()
    for db in args.db:
        target = root / db
        target.mkdir(parents=True, exist_ok=True)
        print(f"downloading {db} into {target} ...")
        wfdb.dl_database(db, dl_dir=str(target))
        names = wfdb.get_record_list(db)
        (target / "RECORDS").write_text("\n".join(names) + "\n")
    print(f"done. Set BEATWISE_DATA={root} if that is not the default.")
    return 0


def _check(args: argparse.Namespace) -> int:
    from beatwise.records import RecordError, data_dir, list_records

    root = data_dir()
    print(f"data directory: {root}")
    ok = True
    for db in DATABASES:
        try:
            print(f"  {db}: {len(list_records(db))} records")
        except RecordError as exc:
            ok = False
            print(f"  {db}: {exc}")
    return 0 if ok else 1
