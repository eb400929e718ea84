"""What a consumer counts, and the memory it keeps doing so.

:class:`ConsumerStats` is every counter and latency sample of a run (published in part in the
``status`` messages); :class:`Recent` keeps the latest latency samples in a buffer allocated
up front; :func:`release_memory` hands freed heap memory back to the OS. Together they keep a
consumer's resident size flat over hours (``beatwise bench soak``).
"""

from __future__ import annotations

import ctypes
from collections import deque
from dataclasses import dataclass, field

import numpy as np

__all__ = ["KEEP", "TRIM_EVERY_S", "ConsumerStats", "Recent", "release_memory"]

#: Latency samples kept in :class:`ConsumerStats` (the most recent).
KEEP = 200_000


class Recent:
    """The most recent ``size`` floats, in a buffer allocated up front, so that a long run's
    memory is flat from its first second. Iterates (and converts with ``np.asarray``) in
    arrival order.

    Args:
        size: Values kept. Default :data:`KEEP`.
    """

    def __init__(self, size: int = KEEP) -> None:
        # written now (np.empty / np.zeros pages are only mapped when first touched, so
        # the buffer would grow the resident size while it fills)
        self._a = np.full(size, np.nan, np.float64)
        self._n = 0

    def append(self, value: float) -> None:
        self._a[self._n % len(self._a)] = value
        self._n += 1

    def __len__(self) -> int:
        return min(self._n, len(self._a))

    def values(self) -> np.ndarray:
        if self._n <= len(self._a):
            return self._a[: self._n].copy()
        i = self._n % len(self._a)
        return np.concatenate([self._a[i:], self._a[:i]])

    def last(self, n: int) -> np.ndarray:
        """The ``n`` most recent values (fewer if fewer came), in arrival order."""
        k = min(n, len(self))
        idx = (self._n - k + np.arange(k)) % len(self._a)
        return self._a[idx]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        v = self.values()
        return v if dtype is None else v.astype(dtype)

    def __iter__(self):
        return iter(self.values().tolist())


@dataclass
class ConsumerStats:
    """Counters and latency samples of a consumer run.

    Every message taken off the socket is counted once: ``received`` = ``control`` +
    ``messages`` + ``ends`` + ``ignored`` + the sum of ``refused``.

    Attributes:
        received: Messages taken off the source socket.
        control: Hellos of the source.
        messages: Sample messages accepted.
        ends: End-of-stream messages accepted.
        ignored: Messages of beds that are not this consumer's (prefix subscriptions).
        refused: Refused messages per reason (:data:`beatwise.protocol.REASONS`).
        suppressed: Alerts not raised because their condition lay in a data gap (asystole,
            pause over samples that never came), per kind.
        disconnects: Times the source connection dropped (a source restart, or a frame
            beyond the size cap cut by ZeroMQ).
        reconnects: Of those, the ones ZeroMQ gave up on and the consumer reconnected.
        control_dropped: Control messages (acks) not sent because the source's control
            socket was not taking them.
        samples: Samples received per bed.
        lost_samples: Samples missing per bed (sequence gaps; filled flat).
        gaps: Sequence gaps per bed.
        beats: Beats published.
        alerts: Alerts published.
        compute_s: Per beat: receipt of the message that completed it -> published (s); the
            most recent :data:`KEEP` only, so a long run holds bounded memory.
        label_latency_s: Per beat, paced streams only: R peak acquired -> label published
            (s); the most recent :data:`KEEP`.
        alarm_delay_s: Per alert completed by a beat, paced streams only: that beat's R peak
            acquired -> alert published, as ``(kind, state, seconds)``; the most recent
            :data:`KEEP`.
        cpu_s: Process CPU time spent in :meth:`StreamConsumer.run` (s).
        first_data_at: Clock time of the first source message (s); ``last_data_at``: of
            the last one.
        wall_s: Wall time of the run (s).
    """

    received: int = 0
    control: int = 0
    messages: int = 0
    ends: int = 0
    ignored: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)
    disconnects: int = 0
    reconnects: int = 0
    control_dropped: int = 0
    samples: dict[str, int] = field(default_factory=dict)
    lost_samples: dict[str, int] = field(default_factory=dict)
    gaps: dict[str, int] = field(default_factory=dict)
    beats: int = 0
    alerts: int = 0
    compute_s: Recent = field(default_factory=Recent)
    label_latency_s: Recent = field(default_factory=Recent)
    alarm_delay_s: deque[tuple[str, str, float]] = field(default_factory=lambda: deque(maxlen=KEEP))
    cpu_s: float = 0.0
    wall_s: float = 0.0
    first_data_at: float | None = None
    last_data_at: float | None = None

    def summary(self) -> dict:
        """JSON-safe totals (latencies as percentiles, ms / s)."""

        def pct(x, q, scale=1.0):
            return None if not len(x) else round(float(np.percentile(x, q)) * scale, 3)

        comp = np.asarray(self.compute_s)
        lab = np.asarray(self.label_latency_s)
        return {
            "received": self.received,
            "control": self.control,
            "messages": self.messages,
            "ends": self.ends,
            "ignored": self.ignored,
            "refused": dict(self.refused),
            "suppressed": dict(self.suppressed),
            "disconnects": self.disconnects,
            "reconnects": self.reconnects,
            "control_dropped": self.control_dropped,
            "samples": int(sum(self.samples.values())),
            "samples_per_bed": dict(self.samples),
            "lost_samples": int(sum(self.lost_samples.values())),
            "gaps": int(sum(self.gaps.values())),
            "beats": self.beats,
            "alerts": self.alerts,
            "compute_ms": {"p50": pct(comp, 50, 1e3), "p99": pct(comp, 99, 1e3)},
            "label_latency_s": {"p50": pct(lab, 50), "p95": pct(lab, 95)},
            "cpu_s": round(self.cpu_s, 2),
            "wall_s": round(self.wall_s, 2),
        }


def _libc_trim():
    """glibc's ``malloc_trim``, or None on other C libraries."""
    try:
        fn = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_TRIM = _libc_trim()
#: Seconds between two hand-backs of freed heap memory to the OS.
TRIM_EVERY_S = 30.0


def release_memory() -> None:
    """Give the heap memory freed since the last call back to the OS (glibc).

    A consumer frees and allocates arrays of every size all day (chunks, windows, model
    batches); glibc keeps freed blocks in its heap, fragmented, so a process's resident size
    creeps up over hours though nothing lives longer. Trimming every half minute keeps it
    flat (``beatwise bench soak``). Costs a few milliseconds; a no-op elsewhere."""
    if _TRIM is not None:
        _TRIM(0)
