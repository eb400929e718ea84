"""The beat classifier: network, training, TorchScript export, inference.

Names are imported lazily, so ``beatwise.model.net`` and ``beatwise.model.train`` load with
torch and numpy alone (a training machine needs nothing else).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BeatResNet", "CardError", "Classifier", "export_model", "make_untrained"]

_WHERE = {
    "BeatResNet": "beatwise.model.net",
    "CardError": "beatwise.model.card",
    "Classifier": "beatwise.model.infer",
    "export_model": "beatwise.model.export",
    "make_untrained": "beatwise.model.export",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'beatwise.model' has no attribute {name!r}")
