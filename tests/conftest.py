"""Shared fixtures: the PhysioNet data (never skipped silently in CI)."""

from __future__ import annotations

import os
from functools import lru_cache

import pytest

from beatwise.records import RecordError, data_dir, list_records, load_record


def _require_data(db: str) -> None:
    try:
        list_records(db)
    except RecordError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI needs the data: {exc}")
        pytest.skip(f"no {db} data in {data_dir()} (set BEATWISE_DATA)")


@lru_cache(maxsize=16)
def _load(db: str, name: str):
    return load_record(db, name)


@pytest.fixture
def record():
    """``record(db, name)`` -> :class:`beatwise.records.Record` (cached across tests)."""

    def get(db: str, name: str):
        _require_data(db)
        return _load(db, name)

    return get


@pytest.fixture
def mitdb() -> None:
    """For tests that read mitdb records themselves (``load_beds``, the CLI)."""
    _require_data("mitdb")
