"""Training of :class:`BeatResNet` on prepared arrays (torch and numpy only).

A *prepared* set is a dict of arrays: ``x_train`` (n, 280) float32 windows in [0, 1],
``rr_train`` (n, 3) float32 seconds, ``y_train`` (n,) int64 class indices, and the same for
``_val``. :mod:`beatwise.model.protocols` makes them from the beat dataset; this module only
fits, so it can run on a machine that has torch and numpy and nothing else::

    python -m beatwise.model.train cache/prepared_seed.npz --out runs/seed --device cuda
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import shlex
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from beatwise.model.net import BeatResNet

__all__ = [
    "TrainConfig",
    "confusion",
    "fit",
    "load_prepared",
    "macro_f1",
    "predict_logits",
    "save_prepared",
    "tune_logit_bias",
]

N_CLASSES = 6
CLASS_WEIGHTS = ("none", "balanced", "sqrt")


@dataclass
class TrainConfig:
    """Settings of one training run (all checked on creation).

    Args:
        epochs: Largest number of epochs. Default 30.
        batch_size: Beats per step. Default 256.
        lr: Peak learning rate (AdamW, one-cycle schedule). Default 2e-3.
        weight_decay: AdamW weight decay. Default 1e-4.
        patience: Epochs without a better validation macro-F1 before stopping. Default 6.
        seed: Seed of initialisation, shuffling and augmentation. Default 0.
        device: ``"cpu"`` or ``"cuda"``. Default ``"cpu"``.
        class_weight: Loss weights per class: ``"none"``, ``"balanced"`` (inverse
            frequency) or ``"sqrt"`` (inverse square root). Default ``"none"``.
        augment: Random shifts (up to 3 samples), noise and baseline tilt on training
            windows. Default False.
        widths: Channels per ResNet stage. Default ``(16, 32, 64)``.
        blocks: Residual blocks per stage. Default 2.
        n_per_epoch: When given, each epoch trains on a fresh random draw of this many N
            beats (all beats of the other classes): undersampling that still sees every N
            beat over the epochs. Default None (every beat every epoch).
        swa_start: When given, from this epoch on validate (and keep) the average of the
            weights at the end of each epoch since, with batch-norm statistics recomputed on
            training beats (stochastic weight averaging: smooths the epoch-to-epoch swings of
            inter-patient validation scores). Default None.
        rr_key: Which RR arrays of the prepared set to use: ``"rr"`` (as the pipeline feeds
            them) or an experiment's, e.g. ``"rr_run"``. Default ``"rr"``.
        template: Also feed the running template (``t_train`` / ``t_val`` of the prepared
            set; augmented like the windows, independently). Default False.
    """

    epochs: int = 30
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 6
    seed: int = 0
    device: str = "cpu"
    class_weight: str = "none"
    augment: bool = False
    widths: tuple[int, ...] = field(default=(16, 32, 64))
    blocks: int = 2
    n_per_epoch: int | None = None
    swa_start: int | None = None
    rr_key: str = "rr"
    template: bool = False

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError(
                f"epochs, batch_size and patience must be >= 1; got {self.epochs}, "
                f"{self.batch_size}, {self.patience}."
            )
        if self.class_weight not in CLASS_WEIGHTS:
            raise ValueError(
                f"class_weight must be one of {CLASS_WEIGHTS}; got {self.class_weight!r}."
            )
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda'; got {self.device!r}.")

    def model(self) -> BeatResNet:
        return BeatResNet(
            n_classes=N_CLASSES, widths=self.widths, blocks=self.blocks, template=self.template
        )


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """Confusion matrix, rows = truth, columns = prediction (int64)."""
    m = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = N_CLASSES) -> float:
    """Mean F1 over the classes present in ``y_true`` (a class never seen has no F1)."""
    m = confusion(y_true, y_pred, n_classes)
    tp = np.diag(m).astype(float)
    support, predicted = m.sum(1), m.sum(0)
    f1 = np.divide(
        2 * tp, support + predicted, out=np.zeros(n_classes), where=support + predicted > 0
    )
    present = support > 0
    return float(f1[present].mean()) if present.any() else 0.0


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    x: torch.Tensor,
    rr: torch.Tensor,
    template: torch.Tensor | None = None,
    *,
    batch_size: int = 8192,
) -> torch.Tensor:
    """Logits of many beats, in eval mode, batched (``template`` for template models)."""
    model.eval()
    return (
        torch.cat(
            [
                model(*_inputs(x, rr, template, slice(a, a + batch_size)))
                for a in range(0, len(x), batch_size)
            ]
        )
        if len(x)
        else torch.zeros((0, N_CLASSES), device=x.device)
    )


def tune_logit_bias(
    logits: np.ndarray,
    y: np.ndarray,
    *,
    grid: np.ndarray | None = None,
    passes: int = 2,
) -> tuple[np.ndarray, float, float]:
    """Per-class offsets added to the logits that maximise macro-F1 on validation beats.

    Balanced training (SMOTE, undersampled N, class weights) trains the model for priors it
    will not meet; a bias per class, fitted on held-out validation beats (never on test
    beats), puts the decision boundaries back. Coordinate ascent over ``grid`` for each class
    present in ``y`` but N (class 0, the reference); other classes keep 0.

    Args:
        logits: ``(n, 6)`` validation logits of the trained model (bias zero).
        y: ``(n,)`` their classes.
        grid: Candidate offsets. Default 81 steps over [-4, 4].
        passes: Rounds over the classes. Default 2.

    Returns:
        ``(bias, macro_f1_before, macro_f1_after)``.
    """
    grid = np.linspace(-4.0, 4.0, 81) if grid is None else np.asarray(grid, float)
    logits = np.asarray(logits, np.float64)
    y = np.asarray(y)
    bias = np.zeros(logits.shape[1])
    before = best = macro_f1(y, logits.argmax(1))
    classes = [c for c in np.unique(y).tolist() if c != 0]
    order = np.argsort(np.abs(grid), kind="stable")  # ties go to the smaller offset
    for _ in range(passes):
        for c in classes:
            for v in grid[order]:
                trial = bias.copy()
                trial[c] = v
                score = macro_f1(y, (logits + trial).argmax(1))
                if score > best + 1e-9:
                    best, bias = score, trial
    return bias, before, best


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n, width = x.shape
    dev = x.device
    shift = torch.randint(-3, 4, (n, 1), generator=gen, device=dev)
    idx = (torch.arange(width, device=dev).unsqueeze(0) - shift).clamp(0, width - 1)
    x = torch.gather(x, 1, idx)
    noise = 0.01 * torch.randn(x.shape, generator=gen, device=dev)
    tilt = 0.05 * (torch.rand((n, 1), generator=gen, device=dev) - 0.5)
    ramp = torch.linspace(-1.0, 1.0, width, device=dev).unsqueeze(0)
    x = x + noise + tilt * ramp
    lo = x.min(dim=1, keepdim=True).values
    span = (x.max(dim=1, keepdim=True).values - lo).clamp(min=1e-6)
    return (x - lo) / span  # back to min-max [0, 1], as the pipeline scales


@torch.no_grad()
def _inputs(x: torch.Tensor, rr: torch.Tensor, template: torch.Tensor | None, idx) -> list:
    """The model's inputs for rows ``idx``: window, RR and, when given, the template."""
    return [x[idx], rr[idx]] + ([] if template is None else [template[idx]])


def _update_bn(
    model: nn.Module,
    x: torch.Tensor,
    rr: torch.Tensor,
    template: torch.Tensor | None,
    pick: torch.Tensor,
) -> None:
    """Recompute batch-norm statistics of averaged weights on the training beats ``pick``.

    ``pick`` must be drawn as the epochs draw (with ``n_per_epoch``, N undersampled): on
    all training beats, ~80 % N, the statistics would not be those the weights were
    trained under."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = {}
    for m in bns:
        m.reset_running_stats()
        momenta[m] = m.momentum
        m.momentum = None  # cumulative average over the batches below
    model.train()
    for a in range(0, len(pick), 1024):
        idx = pick[a : a + 1024]
        model(*_inputs(x, rr, template, idx))
    for m in bns:
        m.momentum = momenta[m]
    model.eval()


def fit(
    prepared: dict[str, np.ndarray],
    *,
    config: TrainConfig,
    log: Callable[[str], None] = print,
    time_limit_s: float | None = None,
) -> tuple[BeatResNet, list[dict[str, Any]]]:
    """Train a :class:`BeatResNet` with early stopping on validation macro-F1.

    Args:
        prepared: ``x_train``, ``rr_train``, ``y_train``, ``x_val``, ``rr_val``, ``y_val``.
        config: The run's settings.
        log: Called with one line per epoch. Default ``print``.
        time_limit_s: Stop after the epoch that passes this many seconds (the best epoch so
            far is kept; the history says so). Default None.

    Returns:
        ``(model, history)``: the model of the best validation epoch (on the CPU, eval mode)
        and one dict per epoch (``epoch``, ``loss``, ``val_loss``, ``val_macro_f1``,
        ``val_accuracy``, ``seconds``).
    """
    dev = torch.device(config.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, but torch sees no CUDA device.")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(config.seed)
    gen = torch.Generator(device=dev).manual_seed(config.seed)

    def tensors(split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            torch.as_tensor(np.asarray(prepared[f"x_{split}"], np.float32), device=dev),
            torch.as_tensor(
                np.asarray(prepared[f"{config.rr_key}_{split}"], np.float32), device=dev
            ),
            torch.as_tensor(np.asarray(prepared[f"y_{split}"], np.int64), device=dev),
        )

    xt, rt, yt = tensors("train")
    xv, rv, yv = tensors("val")
    tt = tv = None
    if config.template:
        tt, tv = (
            torch.as_tensor(np.asarray(prepared[f"t_{k}"], np.float32), device=dev)
            for k in ("train", "val")
        )
    if len(xt) == 0 or len(xv) == 0:
        raise ValueError(f"need training and validation beats; got {len(xt)} and {len(xv)}.")
    counts = torch.bincount(yt, minlength=N_CLASSES).double().clamp(min=1)
    if config.class_weight == "balanced":
        w = counts.sum() / (N_CLASSES * counts)
    elif config.class_weight == "sqrt":
        w = (counts.max() / counts).sqrt()
    else:
        w = torch.ones(N_CLASSES, dtype=torch.float64)
    loss_fn = nn.CrossEntropyLoss(weight=w.float().to(dev))
    val_loss_fn = nn.CrossEntropyLoss()

    model = config.model().to(dev)
    swa = None
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    is_n = yt == 0  # N is class 0 (CLASSES order)
    n_idx, other_idx = torch.nonzero(is_n).flatten(), torch.nonzero(~is_n).flatten()
    per_epoch = len(xt)
    if config.n_per_epoch is not None and config.n_per_epoch < len(n_idx):
        per_epoch = config.n_per_epoch + len(other_idx)
    steps = (per_epoch + config.batch_size - 1) // config.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=config.epochs * steps, pct_start=0.15
    )
    best_f1, best_state, best_epoch, history = -1.0, None, 0, []
    t_start = time.perf_counter()
    y_val = yv.cpu().numpy()
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        if per_epoch < len(xt):
            pick = n_idx[torch.randperm(len(n_idx), generator=gen, device=dev)]
            pool = torch.cat([pick[: config.n_per_epoch], other_idx])
            order = pool[torch.randperm(len(pool), generator=gen, device=dev)]
        else:
            order = torch.randperm(len(xt), generator=gen, device=dev)
        total = 0.0
        for a in range(0, len(order), config.batch_size):
            idx = order[a : a + config.batch_size]
            xb, rb, *tb = _inputs(xt, rt, tt, idx)
            if config.augment:
                xb, tb = _augment(xb, gen), [_augment(t, gen) for t in tb]
            loss = loss_fn(model(xb, rb, *tb), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        judged = model
        if config.swa_start is not None and epoch >= config.swa_start:
            if swa is None:
                swa = torch.optim.swa_utils.AveragedModel(model)
            swa.update_parameters(model)
            _update_bn(swa.module, xt, rt, tt, order[:20_000])  # a draw like the epoch's
            judged = swa.module
        logits = predict_logits(judged, xv, rv, tv)
        val_loss = float(val_loss_fn(logits, yv))
        pred = logits.argmax(1).cpu().numpy()
        f1 = macro_f1(y_val, pred)
        m = confusion(y_val, pred)
        support, predicted = m.sum(1), m.sum(0)
        f1_class = np.divide(
            2 * np.diag(m), support + predicted, out=np.zeros(N_CLASSES), where=support > 0
        )
        row = {
            "epoch": epoch,
            "loss": total / len(order),
            "val_loss": val_loss,
            "val_macro_f1": f1,
            "val_accuracy": float((pred == y_val).mean()),
            "val_f1_per_class": [round(float(v), 4) for v in f1_class],
            "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        log(
            f"epoch {epoch:3d}  loss {row['loss']:.4f}  val loss {val_loss:.4f}  "
            f"val macro-F1 {f1:.4f}  val acc {row['val_accuracy']:.4f}  ({row['seconds']:.1f} s)"
        )
        if f1 > best_f1:
            best_f1, best_epoch = f1, epoch
            best_state = copy.deepcopy(judged.state_dict())
        elif epoch - best_epoch >= config.patience:
            log(f"early stop: no better val macro-F1 since epoch {best_epoch} ({best_f1:.4f})")
            break
        if time_limit_s is not None and time.perf_counter() - t_start > time_limit_s:
            row["stopped"] = f"time limit {time_limit_s:.0f} s"
            log(f"time limit: stopping after epoch {epoch}; best epoch {best_epoch}")
            break
    model.load_state_dict(best_state)
    return model.cpu().eval(), history


# --- prepared sets on disk: compact, so they can travel to a training machine -------------


def save_prepared(prepared: dict[str, Any], path: str | Path) -> Path:
    """Write a prepared set compactly: windows quantised to 8 bits (step 1/255, the same
    rounding for every window) and delta coded, deflated. Other arrays as they are; ``info``
    (a dict) as JSON. Deterministic bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    members: dict[str, np.ndarray] = {}
    for key, value in prepared.items():
        if key == "info":
            members["info"] = np.asarray(json.dumps(value, sort_keys=True))
        elif key.startswith(("x_", "t_")):
            q = np.rint(np.clip(np.asarray(value, np.float32), 0, 1) * 255).astype(np.uint8)
            members[key + "_q8d"] = np.diff(q, axis=1, prepend=np.uint8(0)).astype(np.uint8)
        else:
            members[key] = np.asarray(value)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(members):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(members[key]), allow_pickle=False)
            zf.writestr(info, buf.getvalue())
    return path


def load_prepared(path: str | Path) -> dict[str, Any]:
    """Read :func:`save_prepared`'s file (windows back to float32 in [0, 1])."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"prepared training set {path} not found ('beatwise train --prepare-only')."
        )
    out: dict[str, Any] = {}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            if key == "info":
                out["info"] = json.loads(str(z[key].reshape(-1)[0]))
            elif key.endswith("_q8d"):
                q = np.cumsum(z[key], axis=1, dtype=np.uint8)  # wraps mod 256, undoing the diff
                out[key[:-4]] = q.astype(np.float32) / 255.0
            else:
                out[key] = z[key]
    return out


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m beatwise.model.train",
        description="Fit BeatResNet on a prepared set; write weights + history (torch + numpy).",
    )
    p.add_argument("prepared", help="prepared .npz (beatwise train --prepare-only)")
    p.add_argument("--out", required=True, help="output folder: weights.pt, history.json")
    p.add_argument("--config", default="{}", help="TrainConfig fields as JSON")
    p.add_argument("--max-train", type=int, default=None, help="smoke test: first N beats only")
    p.add_argument("--time-limit", type=float, default=None, help="seconds (best epoch kept)")
    args = p.parse_args(argv)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    prepared = load_prepared(args.prepared)
    if args.max_train:
        for k in prepared:
            if k.endswith(("_train", "_val")):
                prepared[k] = prepared[k][: args.max_train]
    cfg = {**prepared.get("info", {}).get("config", {}), **json.loads(args.config)}
    config = TrainConfig(**cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, history = fit(prepared, config=config, time_limit_s=args.time_limit)
    seconds = time.perf_counter() - t0
    torch.save(model.state_dict(), out / "weights.pt")
    (out / "history.json").write_text(
        json.dumps(
            {
                "config": asdict(config),
                "history": history,
                "train_seconds": seconds,
                "device": torch.cuda.get_device_name() if config.device == "cuda" else "cpu",
                "torch": torch.__version__,
                "command": shlex.join(
                    ["python", "-m", "beatwise.model.train", *(argv or sys.argv[1:])]
                ),
                "prepared_info": prepared.get("info", {}),
            },
            indent=2,
        )
    )
    print(f"trained in {seconds:.0f} s; wrote {out}/weights.pt")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
