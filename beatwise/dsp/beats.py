"""Beat assembler: cuts one window per R peak and attaches its RR context."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from beatwise.dsp.filter import as_samples

__all__ = ["TEMPLATE_BEATS", "BeatAssembler", "Beats", "minmax", "running_template"]


@dataclass(frozen=True, eq=False)
class Beats:
    """A batch of beats, as arrays (struct of arrays: cheap to batch into the model).

    Attributes:
        sample: R-peak sample index (global, at the pipeline rate), int64, shape ``(n,)``.
        window: Filtered ECG around each R peak, min-max scaled to [0, 1], float32,
            shape ``(n, before + after)``; sample ``before`` is the R peak.
        rr: RR context in seconds, float32, shape ``(n, 3)``: pre-RR, post-RR, local mean RR
            (mean pre-RR of the last ``rr_context`` beats, this one included).
        template: The stream's running template before each beat, float32, shape like
            ``window``: the median of the windows of the last :data:`TEMPLATE_BEATS` beats
            before it (its own window for the first beat); see :func:`running_template`.
            ``(n, 0)`` when the beats were cut without it (what models without a template
            input take).
    """

    sample: np.ndarray
    window: np.ndarray
    rr: np.ndarray
    template: np.ndarray

    def __len__(self) -> int:
        return len(self.sample)

    @staticmethod
    def empty(width: int) -> Beats:
        return Beats(
            np.empty(0, np.int64),
            np.empty((0, width), np.float32),
            np.empty((0, 3), np.float32),
            np.empty((0, width), np.float32),
        )

    @staticmethod
    def concat(parts: list[Beats], width: int) -> Beats:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Beats.empty(width)
        return Beats(
            np.concatenate([p.sample for p in parts]),
            np.concatenate([p.window for p in parts]),
            np.concatenate([p.rr for p in parts]),
            np.concatenate([p.template for p in parts]),
        )

    def __getitem__(self, idx) -> Beats:
        return Beats(self.sample[idx], self.window[idx], self.rr[idx], self.template[idx])


#: Beats in the running template (the median of their windows).
TEMPLATE_BEATS = 16


def running_template(windows: np.ndarray, history: np.ndarray | None = None) -> np.ndarray:
    """The running template before each beat of a stream: the median of the windows of the
    last :data:`TEMPLATE_BEATS` beats before it; the first beat of a stream, with no
    history, gets its own window. What the patient's beats usually look like, so the model
    can tell how this one differs.

    Args:
        windows: ``(n, width)`` windows of consecutive beats of one stream.
        history: ``(k, width)`` windows of the beats just before them (k <= TEMPLATE_BEATS).
            Default: none (the stream starts here).

    Returns:
        ``(n, width)`` float32.
    """
    w = np.asarray(windows, np.float32)
    past = np.zeros((0, w.shape[1]), np.float32) if history is None else history
    both = np.concatenate([past, w])
    out = np.empty_like(w)
    for i in range(len(w)):
        j = len(past) + i
        lo = max(j - TEMPLATE_BEATS, 0)
        out[i] = w[i] if j == lo else np.median(both[lo:j], axis=0)
    return out


def minmax(window: np.ndarray) -> np.ndarray:
    """Scale each row to [0, 1]; a flat row becomes zeros."""
    w = np.asarray(window, dtype=np.float64)
    lo = w.min(axis=-1, keepdims=True)
    span = w.max(axis=-1, keepdims=True) - lo
    return np.divide(w - lo, span, out=np.zeros_like(w), where=span > 0).astype(np.float32)


class BeatAssembler:
    """Cuts a window around each R peak and computes its RR context, chunk by chunk.

    A beat is emitted once its window is complete (``after`` samples past the R peak) and
    its post-RR is known: when the next R peak has been confirmed, or when ``max_post_rr_s``
    has passed without one (post-RR is then ``max_post_rr_s``). Both rules depend only on
    sample indices, never on chunking, so any chunking yields the same beats.

    Samples that never came (a data gap, bridged flat by the consumer) are marked with
    :meth:`mark_gap`: no RR interval is measured across them. The beat before a gap takes its
    local mean RR as post-RR (as the last beat of a record does), and the RR context starts
    afresh after it (as at the start of a record), so a gap can neither make the next beats
    look premature nor the last one look followed by a pause.

    Args:
        fs: Sampling rate in Hz. Default 360.
        before: Window samples before the R peak. Default 100.
        after: Window samples from the R peak on (the R peak included). Default 180.
        rr_context: Beats in the local mean RR. Default 10.
        max_post_rr_s: Longest wait for the next beat, seconds. Default 3.0.
        max_delay: Largest detection delay in samples (how far back a peak may lie when it
            is pushed). Default 720 (2 s at 360 Hz), as :class:`OnlinePanTompkins`.
        template: Give each beat its running template (:func:`running_template`: a median
            over 16 windows per beat). Default False: ``template`` is then ``(n, 0)``.
    """

    def __init__(
        self,
        *,
        fs: float = 360.0,
        before: int = 100,
        after: int = 180,
        rr_context: int = 10,
        max_post_rr_s: float = 3.0,
        max_delay: int = 720,
        template: bool = False,
    ) -> None:
        if before < 0 or after < 1:
            raise ValueError(f"need before >= 0 and after >= 1 samples; got {before}, {after}.")
        self.fs = fs
        self.before = before
        self.after = after
        self.rr_context = rr_context
        self.max_post_rr_s = max_post_rr_s
        self.max_delay = max_delay
        self.template = template
        self._max_post = int(round(max_post_rr_s * fs))
        self._keep = max_delay + before + after + 1
        self._reset()

    def _reset(self) -> None:
        self._buf = np.zeros(0)  # the last samples seen
        self._buf_start = 0  # global index of _buf[0]
        self._n = 0  # samples seen
        self._first = 0.0  # first sample (edge padding before the record)
        # pending beats: R sample, confirmation sample, window (None until cut)
        self._pending: list[list] = []
        self._pre_rrs: list[float] = []
        self._last_r: int | None = None
        self._gaps: list[tuple[int, int]] = []  # [start, stop) marked, not yet behind us
        self._blanks: list[list] = []  # [start, stop) where no beat is taken; stop None: open
        self._recent = np.zeros((0, self.width), np.float32)  # windows of the last beats
        self._none = Beats.empty(self.width)  # what a chunk without a new beat returns

    def mark_gap(self, start: int, stop: int) -> None:
        """Samples ``start..stop-1`` (global indices) never came: measure no RR interval
        across them. Mark a gap before pushing the samples that follow it (its bridging
        samples may already be in).

        Raises:
            ValueError: ``stop <= start``, or the gap begins before the last emitted beat
                (its RR context is already out).
        """
        start, stop = int(start), int(stop)
        floor = self._last_r if self._last_r is not None else -1
        if stop <= start or start <= floor:
            raise ValueError(
                f"gap [{start}, {stop}): expected start < stop and start after the last "
                f"emitted beat (sample {floor})."
            )
        self._gaps.append((start, stop))

    def blank(self, start: int, stop: int | None = None) -> None:
        """Take no beat whose R peak lies in ``start..stop-1`` (``stop`` None: from ``start``
        on, until called again with the same ``start`` and a ``stop``): the edges of a flat
        stretch and the seconds around a step, where the detector reads the step as a QRS
        and the bandpass rings. A beat already emitted stays out; one still pending is
        dropped, and the RR context goes from the beat before it to the beat after it (mark
        the stretch itself with :meth:`mark_gap`)."""
        start = int(start)
        for b in self._blanks:
            if b[0] == start and b[1] is None:  # the open one it closes
                b[1] = stop
                return
        self._blanks.append([start, stop])

    def _blanked(self, r: int) -> bool:
        return any(a <= r and (b is None or r < b) for a, b in self._blanks)

    @property
    def last_emitted(self) -> int | None:
        """R peak of the last beat emitted (None before the first): a gap must begin after it."""
        return self._last_r

    def _gap_between(self, a: int, b: int) -> bool:
        """Whether a marked gap overlaps the samples between R peaks ``a`` and ``b``."""
        return any(start < b and a < stop for start, stop in self._gaps)

    @property
    def width(self) -> int:
        return self.before + self.after

    def _cut(self, r: int, pad_end: bool = False) -> np.ndarray:
        lo, hi = r - self.before, r + self.after
        a, b = lo - self._buf_start, hi - self._buf_start
        if a < 0 and lo >= 0:
            raise RuntimeError(f"beat at {r}: window start {lo} already dropped (delay too large).")
        seg = self._buf[max(a, 0) : max(min(b, len(self._buf)), 0)]
        left = max(-lo, 0)
        right = (hi - lo) - left - len(seg)
        if right and not pad_end:
            raise RuntimeError(f"beat at {r}: window not complete.")
        return np.concatenate(
            [
                np.full(left, self._first),
                seg,
                np.full(right, self._buf[-1] if len(self._buf) else 0.0),
            ]
        )

    def push(self, chunk, peaks, confirmed_at=None) -> Beats:
        """Add filtered samples (mV) and the R peaks confirmed with them; return new beats.

        Args:
            chunk: The next filtered samples.
            peaks: R-peak global indices confirmed during this chunk, increasing, each within
                ``max_delay`` of the end of the chunk.
            confirmed_at: For each peak, the sample at which it was confirmed. Default: the
                last sample of the chunk.
        """
        x = as_samples(chunk)
        peaks = np.asarray(peaks, dtype=np.int64)
        n_new = self._n + len(x)
        conf = (
            np.full(len(peaks), n_new - 1, np.int64)
            if confirmed_at is None
            else np.asarray(confirmed_at, dtype=np.int64)
        )
        if len(conf) != len(peaks):
            raise ValueError(
                f"confirmed_at has {len(conf)} entries for {len(peaks)} peaks; expected one each."
            )
        # Check everything before changing any state: a refused call leaves no trace.
        new = list(zip(peaks.tolist(), conf.tolist()))
        prev = self._pending[-1][0] if self._pending else self._last_r
        for r, c in new:
            if prev is not None and r <= prev:
                raise ValueError(f"peaks must increase; got {r} after {prev}.")
            if not c - self.max_delay <= r <= c < n_new:
                raise ValueError(
                    f"peak {r} confirmed at sample {c}: expected the peak within "
                    f"max_delay={self.max_delay} samples before its confirmation, and the "
                    f"confirmation within the samples pushed (< {n_new})."
                )
            prev = r
        if self._n == 0 and len(x):
            self._first = float(x[0])
        self._buf = np.concatenate([self._buf, x])
        self._n = n_new
        self._pending.extend([r, c, None] for r, c in new)
        beats = self._emit(final=False)
        drop = len(self._buf) - self._keep
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start += drop
        return beats

    def flush(self) -> Beats:
        """End of stream: emit every pending beat (windows padded with the last sample;
        the last beat's post-RR is its local mean RR)."""
        return self._emit(final=True)

    def _emit(self, *, final: bool) -> Beats:
        rows_s, rows_w, rows_rr = [], [], []
        if self._blanks:
            self._pending = [p for p in self._pending if not self._blanked(p[0])]
            floor = self._pending[0][0] if self._pending else self._n - self._keep
            self._blanks = [b for b in self._blanks if b[1] is None or b[1] > floor]
        while self._pending:
            r, c, w = self._pending[0]
            if w is None:
                if r + self.after <= self._n:
                    w = self._pending[0][2] = self._cut(r)
                elif final:
                    w = self._pending[0][2] = self._cut(r, pad_end=True)
                else:
                    break
            nxt = self._pending[1][0] if len(self._pending) > 1 else None
            if nxt is not None and self._pending[1][1] <= r + self._max_post:
                post = None if self._gap_between(r, nxt) else (nxt - r) / self.fs
            elif self._n - 1 >= r + self._max_post:
                post = None if self._gap_between(r, r + self._max_post) else self.max_post_rr_s
            elif final:
                post = None
            else:
                break
            pre = None
            if self._last_r is not None:
                if self._gap_between(self._last_r, r):
                    self._pre_rrs.clear()  # the RR context starts afresh after a gap
                else:
                    pre = (r - self._last_r) / self.fs
            if self._gaps:
                self._gaps = [g for g in self._gaps if g[1] > r]
            if pre is None:
                pre = post if post is not None else 1.0
            self._pre_rrs.append(pre)
            del self._pre_rrs[: -self.rr_context]
            local = float(np.mean(self._pre_rrs))
            if post is None:
                post = local
            rows_s.append(r)
            rows_w.append(w)
            rows_rr.append((pre, post, local))
            self._last_r = r
            self._pending.pop(0)
        if not rows_s:
            return self._none  # nearly every chunk: no new beat
        windows = minmax(np.asarray(rows_w))
        if self.template:
            template = running_template(windows, self._recent)
            self._recent = np.concatenate([self._recent, windows])[-TEMPLATE_BEATS:]
        else:
            template = np.empty((len(windows), 0), np.float32)
        return Beats(
            np.asarray(rows_s, np.int64), windows, np.asarray(rows_rr, np.float32), template
        )
