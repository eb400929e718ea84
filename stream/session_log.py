"""The durable session log: every beat, alert and strip, appended before it is published.

JSON lines, one message per line, the same dicts the consumer publishes (plus ``session``,
``bed``, ``end`` and ``strip`` messages that are only logged). Each line is flushed to the
operating system as it is written, so a crashed consumer process loses nothing it has
published; the file is ``fsync``-ed at most every ``sync_every_s`` so that a crashed
*machine* loses at most that much. ``beatwise report`` reads a log whose session never ended
(:func:`beatwise.report.read_log` skips a last line cut short by the crash).

A restarted consumer appends to the same file: the log is the whole session.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["LOGGED", "SessionLog"]

#: Message types that go into the log (``samples`` and ``status`` do not).
LOGGED = frozenset({"session", "bed", "beat", "alert", "strip", "end"})


class SessionLog:
    """Append-only JSON-lines log.

    Args:
        path: The log file; created (with its folder) if missing, appended to otherwise.
        sync_every_s: Most seconds between two ``fsync`` calls (see :meth:`sync`).
            Default 1.0.
    """

    def __init__(self, path: str | Path, *, sync_every_s: float = 1.0) -> None:
        if not sync_every_s >= 0:
            raise ValueError(f"sync_every_s {sync_every_s!r}: expected >= 0 s.")
        self.path = Path(path)
        self.sync_every_s = sync_every_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cut = False  # a crash cut the last line short: end it, so ours start on a line of their own
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                cut = f.read(1) != b"\n"
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if cut:
            self._f.write("\n")
        self._synced_at: float | None = None
        self.lines = 0

    def write(self, msg: dict) -> None:
        """Append one message (if its type is logged) and flush it to the OS."""
        if msg.get("type") not in LOGGED:
            return
        self._f.write(json.dumps(msg, separators=(",", ":")) + "\n")
        self._f.flush()
        self.lines += 1

    def sync(self, now: float) -> None:
        """``fsync`` the file if ``sync_every_s`` passed since the last time (``now``: a
        monotonic clock, s)."""
        if self._synced_at is None or now - self._synced_at >= self.sync_every_s:
            os.fsync(self._f.fileno())
            self._synced_at = now

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def __enter__(self) -> SessionLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
