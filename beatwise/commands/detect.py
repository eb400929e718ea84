"""``beatwise detect``, ``beatwise eval detect`` and ``beatwise bench detect``."""

from __future__ import annotations

import argparse


def register(groups: dict[str, argparse._SubParsersAction]) -> None:
    p = groups[""].add_parser(
        "detect", help="run the R-peak detector on one record and summarize it"
    )
    p.add_argument("--db", required=True, help="database folder under the data directory")
    p.add_argument("--record", required=True, help="record name, e.g. 100")
    p.add_argument("--json", metavar="PATH", help="also write the summary and R peaks as JSON")
    p.set_defaults(func=_detect)

    p = groups["eval"].add_parser(
        "detect", help="score the R-peak detector (Se, +P, DER, speed) on a database"
    )
    _common(p)
    p.set_defaults(func=_eval_detect)

    p = groups["bench"].add_parser(
        "detect", help="our R-peak detector side by side with peers (wfdb, biosppy, neurokit2)"
    )
    _common(p)
    p.add_argument(
        "--detectors",
        nargs="+",
        metavar="NAME",
        default=None,
        help="detectors to run (default: all: beatwise, wfdb-xqrs, biosppy-hamilton, "
        "biosppy-pantompkins++, biosppy-pantompkins++-dedup, neurokit2-pantompkins1985)",
    )
    p.set_defaults(func=_bench_detect)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        required=True,
        help="WFDB database folder (with a RECORDS file) under the data "
        "directory, e.g. mitdb or svdb",
    )
    p.add_argument("--records", nargs="+", metavar="NAME", help="records (default: all)")
    p.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: CPU count)"
    )
    p.add_argument(
        "--tolerance-s",
        type=float,
        default=0.150,
        help="matching tolerance in seconds (default: %(default)s)",
    )
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _workers(workers: int | None) -> int:
    import os

    if workers is None:
        return os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}.")
    return workers


def _console():
    from rich.console import Console

    console = Console()
    # Piped to a file, rich assumes 80 columns and squeezes the tables; give them room.
    return console if console.is_terminal else Console(width=120)


def _eval_detect(args: argparse.Namespace) -> int:
    import time

    from beatwise.eval import detection as dt

    records = dt.check_records(args.db, args.records)
    workers = _workers(args.workers)
    t0 = time.perf_counter()
    results = dt.evaluate(
        args.db,
        records,
        workers=workers,
        tolerance_s=args.tolerance_s,
        progress=not args.no_progress,
    )
    report = dt.eval_report(args.db, results, tolerance_s=args.tolerance_s, workers=workers)
    console = _console()
    console.print(dt.rich_table(report))
    worst = sorted(results, key=lambda r: -(r.fn + r.fp))[:5]
    console.print(
        "most errors (FN+FP): "
        + ", ".join(f"{r.record} ({r.fn}+{r.fp})" for r in worst if r.fn + r.fp)
    )
    if report["totals"].get("chunk_invariant") is False:
        bad = [r.record for r in results if r.chunk_invariant is False]
        console.print(f"[red]1-second chunks gave other peaks than one push on: {bad}")
    if args.json:
        console.print(f"wrote {dt.write_json(report, args.json)}")
    console.print(f"{len(records)} records in {time.perf_counter() - t0:.1f} s")
    return 0


def _bench_detect(args: argparse.Namespace) -> int:
    import time

    from beatwise.eval import detection as dt

    records = dt.check_records(args.db, args.records)
    names = dt.check_detectors(args.detectors or list(dt.DETECTORS))
    workers = _workers(args.workers)
    console = _console()
    skipped = {n: why for n in names if (why := dt.available(n))}
    for name, why in skipped.items():
        console.print(f"[yellow]skipping {name}: {why}")
    names = [n for n in names if n not in skipped]
    t0 = time.perf_counter()
    results = dt.evaluate(
        args.db,
        records,
        detectors=names,
        workers=workers,
        tolerance_s=args.tolerance_s,
        progress=not args.no_progress,
    )
    report = dt.bench_report(
        args.db, results, skipped=skipped, tolerance_s=args.tolerance_s, workers=workers
    )
    console.print(dt.rich_table(report))
    if args.json:
        console.print(f"wrote {dt.write_json(report, args.json)}")
    console.print(
        f"{len(names)} detector(s) x {len(records)} records in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def _detect(args: argparse.Namespace) -> int:
    import numpy as np

    from beatwise.eval import detection as dt
    from beatwise.records import load_record

    dt.check_records(args.db, [args.record])
    result = dt.evaluate_record(args.db, args.record)
    rec = load_record(args.db, args.record)
    peaks = dt.detect(dt.OURS, rec.signal, fs=rec.fs)
    rr_s = np.diff(peaks) / rec.fs
    hr_bpm = float(60.0 / rr_s.mean()) if len(rr_s) else None
    summary = {
        "db": args.db,
        "record": args.record,
        "lead": rec.lead,
        "duration_s": rec.duration_s,
        "beats_detected": len(peaks),
        "beats_reference": result.n_ref,
        "matched": result.tp,
        "fn": result.fn,
        "fp": result.fp,
        "se": result.se,
        "ppv": result.ppv,
        "mean_hr_bpm": hr_bpm,
        "x_realtime": result.x_realtime,
        "x_realtime_chunked_1s": result.x_realtime_chunked_1s,
    }
    _console().print(
        f"{rec.id} ({rec.lead}, {rec.duration_s / 60:.1f} min): {len(peaks)} beats found, "
        f"{result.tp}/{result.n_ref} reference beats matched (FN {result.fn}, FP {result.fp}); "
        f"Se {dt._fmt(result.se)} %, +P {dt._fmt(result.ppv)} %; mean HR "
        f"{dt._fmt(hr_bpm, 1)} bpm; {result.x_realtime:,.0f}x real time "
        f"({dt._fmt(result.x_realtime_chunked_1s, 0)}x in 1 s chunks)"
    )
    if args.json:
        dt.write_json({**summary, "r_peaks": peaks.tolist(), "fs": rec.fs}, args.json)
    return 0
