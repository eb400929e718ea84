"""Contract checks shared by every streaming stage (cf. river's ``checks/common.py``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

#: Chunkings every stage must be invariant to: 1 sample, 7, 360, one call, random sizes.
CHUNKINGS = ("1", "7", "360", "whole", "random")


def chunk_sizes(kind: str, n: int, *, seed: int = 0) -> list[int]:
    if kind == "whole":
        return [n]
    if kind == "random":
        rng = np.random.default_rng(seed)
        sizes, total = [], 0
        while total < n:
            s = int(rng.integers(0, 1000))  # zero-length chunks included on purpose
            sizes.append(min(s, n - total))
            total += sizes[-1]
        return sizes
    k = int(kind)
    return [min(k, n - i) for i in range(0, n, k)]


def split(x: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    edges = np.cumsum([0, *sizes])
    return [x[a:b] for a, b in zip(edges[:-1], edges[1:])]


def assert_chunk_invariant(
    run_chunked: Callable[[list[np.ndarray]], object],
    x: np.ndarray,
    *,
    kinds: Sequence[str] = CHUNKINGS,
    equal: Callable[[object, object], bool],
) -> None:
    """``run_chunked(chunks)`` on a fresh stage must give the same result for every chunking."""
    ref = run_chunked([x])
    for kind in kinds:
        got = run_chunked(split(x, chunk_sizes(kind, len(x))))
        assert equal(got, ref), f"result differs when pushed in chunks of {kind!r}"
