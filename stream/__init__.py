"""The live consumer, its subscribers and the bedside monitor (see ``docs/protocol.md``)."""

from __future__ import annotations

from stream.consumer import ConsumerStats, StreamConsumer
from stream.subscriber import Subscriber

__all__ = ["ConsumerStats", "StreamConsumer", "Subscriber"]
