"""Run one function over many records in worker processes, results in input order.

The dataset builder, the classification evaluator and the detection evaluator all process
whole records independently; this is the one place that fans them out.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, TypeVar

__all__ = ["map_in_order", "progress_bar", "resolve_workers"]

T = TypeVar("T")


def resolve_workers(workers: int | None) -> int:
    """``None`` -> the CPU count; anything under 1 is refused."""
    n = (os.cpu_count() or 1) if workers is None else workers
    if n < 1:
        raise ValueError(f"workers must be >= 1 processes; got {workers}.")
    return n


def map_in_order(
    fn: Callable[[Any], T],
    jobs: Sequence[Any],
    *,
    workers: int | None = None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    on_result: Callable[[T], None] | None = None,
) -> list[T]:
    """``[fn(job) for job in jobs]``, in ``workers`` processes, in input order.

    Args:
        fn: A picklable module-level function of one job.
        jobs: The jobs.
        workers: Processes; default the CPU count. 1 (or a single job) runs in this process.
        initializer: Called once in each worker (and once here when running inline).
        initargs: Its arguments.
        on_result: Called with each result as it arrives, in input order (progress).

    Worker processes are spawned, not forked: the parent may run threads (rich's refresh).
    """
    n = resolve_workers(workers)
    results: list[T] = []
    if n == 1 or len(jobs) <= 1:
        if initializer is not None:
            initializer(*initargs)
        for job in jobs:
            results.append(fn(job))
            if on_result is not None:
                on_result(results[-1])
        return results
    pool = ProcessPoolExecutor(
        max_workers=min(n, len(jobs)),
        mp_context=get_context("spawn"),
        initializer=initializer,
        initargs=initargs,
    )
    try:
        for res in pool.map(fn, jobs):
            results.append(res)
            if on_result is not None:
                on_result(res)
    finally:
        # On an error or Ctrl-C, do not wait for the queued jobs.
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def progress_bar(*, console=None, disable: bool = False, fields: Iterable[str] = ()):
    """The rich progress bar of every records-in-parallel command (on stderr by default).

    Args:
        console: A ``rich.console.Console``; default one on stderr.
        disable: Draw nothing. Default False.
        fields: Extra task fields shown after the count (e.g. ``"last"``).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(f"{{task.fields[{f}]}}") for f in fields]
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=console or Console(stderr=True), disable=disable)
