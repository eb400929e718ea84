"""TorchScript export of a trained :class:`BeatResNet`, with its card."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from beatwise.model.card import base_card, write_card
from beatwise.model.net import BeatResNet

__all__ = ["export_model", "make_untrained"]


def export_model(
    model: torch.nn.Module,
    path: str | Path,
    *,
    card: dict[str, Any] | None = None,
    detector: str = "pipeline",
) -> Path:
    """Script ``model`` (eval mode, frozen) to ``path`` and write its card beside it.

    Args:
        model: A :class:`BeatResNet` (any ``forward(window, rr[, template]) -> logits``
            module; ``template_input`` says whether it takes the template).
        path: Output ``.pt`` file; its folder is created.
        card: Card fields beyond :func:`beatwise.model.card.base_card` (training data,
            split, command, metrics). Default none.
        detector: The beat cutter of the training beats (``beatwise dataset build
            --detector``): the card's input spec says which beats the model expects.
            Default ``"pipeline"``.

    Returns:
        The model path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # see infer.py
        scripted = torch.jit.freeze(torch.jit.script(model))
        scripted.save(str(path))
    full = base_card(template=bool(getattr(model, "template_input", False)), detector=detector)
    full.update(card or {})
    write_card(path, full)
    return path


def make_untrained(
    path: str | Path,
    *,
    seed: int = 0,
    widths: tuple[int, ...] = (8, 16),
    blocks: int = 1,
) -> Path:
    """Export a tiny untrained model + card: a stand-in for tests of code that loads models.

    Args:
        path: Output ``.pt`` file.
        seed: Weight initialisation seed. Default 0.
        widths: Channels per stage. Default ``(8, 16)``.
        blocks: Residual blocks per stage. Default 1.

    Returns:
        The model path (load it with :meth:`beatwise.model.infer.Classifier.load`).
    """
    torch.manual_seed(seed)
    model = BeatResNet(widths=widths, blocks=blocks, rr_hidden=8, head_hidden=16)
    return export_model(
        model,
        path,
        card={
            "name": "untrained",
            "training": {"note": "untrained random weights; for tests only"},
            "architecture": {"widths": list(widths), "blocks": blocks},
        },
    )
