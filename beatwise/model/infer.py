"""Inference: load a shipped TorchScript model with its card, classify :class:`Beats`.

This is the one door the evaluator and the live consumer use::

    clf = Classifier.load("models/beatwise_interpatient.pt")
    probs = clf.predict(beats)            # (n, 6) float32, CLASSES order
    labels = clf.labels(probs)            # ('N', 'V', ...)
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from beatwise.classes import CLASSES
from beatwise.dsp.beats import Beats
from beatwise.model.card import CardError, check_card, read_card
from beatwise.pipeline import WINDOW_AFTER, WINDOW_BEFORE

__all__ = ["CardError", "Classifier"]

_WIDTH = WINDOW_BEFORE + WINDOW_AFTER
#: Passes of at most this many beats run on ATen's own convolutions, not oneDNN's: on one
#: core oneDNN takes 1.3-2.6 ms for a pass of 2-8 beats of the shipped models, ATen
#: 0.3-1.6 ms; from 16 beats oneDNN wins (1.7-3.0 ms against 8-20). A live round of 48
#: beds brings about six beats. Logits differ by at most 2.1e-5, and no label changed
#: over the 294,716 beats of the dataset for any shipped model (passes of 8 on ATen against
#: passes of 256 on oneDNN).
_ATEN_MAX_BEATS = 8


class Classifier:
    """A TorchScript beat classifier and its card.

    Build it with :meth:`load`. Stateless: :meth:`predict` may be called from any stream, on
    beats of any number of beds batched together.

    Args:
        module: The loaded TorchScript module (inputs ``window (n, 280)``, ``rr (n, 3)``,
            and ``template (n, 280)`` when its card lists it; output logits ``(n, 6)``).
        card: Its model card.
        path: Where the model was loaded from (for messages).
        batch_size: Most beats per forward pass. Default 128.

    Every forward pass has one of a few shapes: beats go in passes of ``batch_size``, and
    the last, shorter pass is padded up to one of a few sizes (:meth:`_pass_size`; 19 at the
    default ``batch_size``, all run once at load). torch keeps state per input shape on the
    CPU path (oneDNN kernels, TorchScript's shape-specialised plans); a consumer whose rounds
    bring any number of beats would otherwise add to it for hours (measured: random batches
    of 1-1,500 beats grew a process by 58 MiB, bucketed ones by 4 MiB; ``beatwise bench
    soak``). Padding rows change no other row's output (the model is per beat in eval mode).
    128 is where one core is fastest per beat (inter-patient model: 0.045 ms at 128, 0.079
    at 256; seed: 0.093 and 0.089). Passes of up to 8 beats switch oneDNN off around the call
    (:data:`_ATEN_MAX_BEATS`), a process-wide torch setting: call
    :meth:`predict` from one thread at a time.
    """

    def __init__(
        self,
        module: torch.jit.ScriptModule,
        card: dict[str, Any],
        *,
        path: Path | None = None,
        batch_size: int = 128,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 beats; got {batch_size}.")
        self.module = module
        self.card = card
        self.path = path
        self.batch_size = batch_size
        self.classes: tuple[str, ...] = tuple(card.get("classes", CLASSES))
        #: Whether the model takes the running template as a third input (its card says so).
        self.takes_template = "template" in (card.get("input") or {})

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        batch_size: int = 128,
        num_threads: int | None = None,
        verify_sha256: bool = True,
        other_beats: bool = False,
    ) -> Classifier:
        """Load a model file and the card beside it, and check both.

        Args:
            path: The TorchScript file (``.pt``); its card is the same name with ``.json``.
            batch_size: Most beats per forward pass. Default 128.
            num_threads: When given, ``torch.set_num_threads(num_threads)`` (process-wide).
                Default None: leave torch's setting alone.
            verify_sha256: Check that the card's sha256 is the model file's. Default True.
            other_beats: Accept a model trained on beats the pipeline does not cut (see
                :func:`beatwise.model.card.check_card`). Default False.

        Raises:
            FileNotFoundError: the model file does not exist.
            CardError: the card is missing or unreadable, does not match the pipeline
                (classes, fs, window, RR units, the beats' producer), or the model file is
                corrupt or gives the wrong output shape. The message names the file.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"model file {path} not found (train one with 'beatwise train', or use the "
                f"shipped models/beatwise_interpatient.pt)."
            )
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        card = read_card(path)
        check_card(card, model_path=path, verify_sha256=verify_sha256, other_beats=other_beats)
        try:
            with warnings.catch_warnings():
                # TorchScript is deprecated in favour of torch.export, but it is what loads
                # without the model's Python source; keep the warning out of users' logs.
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError, ValueError, zip errors...
            raise CardError(
                f"model file {path}: not a loadable TorchScript model ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''})."
            ) from exc
        module.eval()
        self = cls(module, card, path=path, batch_size=batch_size)
        try:
            probe = self.predict(_probe_beats())
        except Exception as exc:
            raise CardError(
                f"model file {path}: fails on a (1, {_WIDTH}) window + (1, 3) RR input "
                f"({type(exc).__name__}: {exc})."
            ) from exc
        if probe.shape != (1, len(CLASSES)):
            raise CardError(
                f"model file {path}: output shape {probe.shape}, expected (1, {len(CLASSES)})."
            )
        self._warm_up()
        return self

    def _warm_up(self) -> None:
        """Run every pass shape twice now: torch's first calls at a new shape cost several
        times a later one (2-10 ms more), which would otherwise land on the first beats of a
        live run -- all beds' first beats come out in the same round."""
        for n in sorted({self._pass_size(k) for k in range(1, self.batch_size + 1)}):
            beats = _probe_beats(n)
            self.predict(beats)
            self.predict(beats)

    def _pass_size(self, k: int) -> int:
        """The shape a pass of ``k`` beats (1..batch_size) runs at: the next power of two up
        to :data:`_ATEN_MAX_BEATS`, then the next multiple of it, at most ``batch_size``. A
        pass costs about a fixed 1.3 ms plus 0.05 ms a row (inter-patient model, one core),
        so a power of two would pay for up to twice the rows: the 66 beats of 48 beds'
        last round ran at 128 rows, 10.2 ms instead of 5.1 at 72."""
        if k <= _ATEN_MAX_BEATS:
            return min(1 << (k - 1).bit_length(), self.batch_size)
        return min(-(-k // _ATEN_MAX_BEATS) * _ATEN_MAX_BEATS, self.batch_size)

    def predict(self, beats: Beats) -> np.ndarray:
        """Class probabilities of each beat.

        Args:
            beats: Beats as cut by :class:`beatwise.pipeline.BeatPipeline`: ``window`` ``(n,
                280)`` in [0, 1], ``rr`` ``(n, 3)`` seconds.

        Returns:
            ``(n, 6)`` float32 probabilities, columns in :data:`beatwise.classes.CLASSES`
            order, rows summing to 1.
        """
        window = np.asarray(beats.window, dtype=np.float32)
        rr = np.asarray(beats.rr, dtype=np.float32)
        template = np.asarray(beats.template, dtype=np.float32)
        if window.ndim != 2 or window.shape[1] != _WIDTH:
            raise ValueError(f"beats.window must have shape (n, {_WIDTH}); got {window.shape}.")
        if rr.shape != (len(window), 3):
            raise ValueError(
                f"beats.rr must have shape ({len(window)}, 3) seconds; got {rr.shape}."
            )
        if self.takes_template and template.shape != window.shape:
            raise ValueError(
                f"model {self.path} takes each beat's running template: beats.template must "
                f"have the windows' shape {window.shape}; got {template.shape} (cut the "
                f"beats with BeatPipeline(template=True))."
            )
        n = len(window)
        out = np.empty((n, len(self.classes)), np.float32)
        with torch.inference_mode():
            for a in range(0, n, self.batch_size):
                part = [window[a : a + self.batch_size], rr[a : a + self.batch_size]]
                if self.takes_template:
                    part.append(template[a : a + self.batch_size])
                k = len(part[0])
                pad = self._pass_size(k) - k
                if pad:
                    part = [
                        np.concatenate([p, np.full((pad, p.shape[1]), 0.5, p.dtype)]) for p in part
                    ]
                logits = self._forward(
                    [torch.from_numpy(np.ascontiguousarray(p)) for p in part],
                    aten=len(part[0]) <= _ATEN_MAX_BEATS,
                )
                out[a : a + k] = torch.softmax(logits[:k], dim=1).numpy()
        return out

    def _forward(self, inputs: list[torch.Tensor], *, aten: bool) -> torch.Tensor:
        """One pass of the module; on ATen's convolutions if ``aten`` and oneDNN is on."""
        if not (aten and torch.backends.mkldnn.enabled):
            return self.module(*inputs)
        torch.backends.mkldnn.set_flags(False, None, None, None)
        try:
            return self.module(*inputs)
        finally:
            torch.backends.mkldnn.set_flags(True, None, None, None)

    def labels(self, probs: np.ndarray) -> np.ndarray:
        """Class name of each row of :meth:`predict`'s output (``<U1`` array)."""
        return np.asarray(self.classes, dtype="<U1")[np.argmax(probs, axis=1)]

    def __repr__(self) -> str:
        return f"Classifier({str(self.path)!r}, classes={self.classes})"


def _probe_beats(n: int = 1) -> Beats:
    return Beats(
        np.zeros(n, np.int64),
        np.full((n, _WIDTH), 0.5, np.float32),
        np.full((n, 3), 0.8, np.float32),
        np.full((n, _WIDTH), 0.5, np.float32),
    )
