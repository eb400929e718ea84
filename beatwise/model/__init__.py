"""The beat classifier: network, training, TorchScript export, inference.

Importing this package imports torch; command functions import it lazily.
"""

from __future__ import annotations

from beatwise.model.card import CardError
from beatwise.model.export import export_model, make_untrained
from beatwise.model.infer import Classifier
from beatwise.model.net import BeatResNet

__all__ = ["BeatResNet", "CardError", "Classifier", "export_model", "make_untrained"]
