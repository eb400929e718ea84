"""The replay publisher: records as beds, streamed over ZeroMQ (see ``docs/protocol.md``)."""

from __future__ import annotations

from replay.publisher import (
    DEFAULT_CONTROL,
    DEFAULT_ENDPOINT,
    BedSource,
    ReplayPublisher,
    ReplayStats,
    load_beds,
    parse_speed,
)

__all__ = [
    "DEFAULT_CONTROL",
    "DEFAULT_ENDPOINT",
    "BedSource",
    "ReplayPublisher",
    "ReplayStats",
    "load_beds",
    "parse_speed",
]
