"""The bedside monitor: a ``rich`` view of the consumer's messages, and its headless twin.

:class:`Monitor` is a listener (``monitor(message_dict)``) of :class:`stream.StreamConsumer`
(in-process) or of a :class:`stream.Subscriber` (another process); :meth:`Monitor.render`
builds the screen: one panel per bed -- heart rate, running counts of the six classes,
current rhythm, a braille trace of the last seconds of ECG, the last alerts coloured by
severity -- and a footer with beats/s, per-beat compute latency p50/p99, label latency p95,
and the dropped-sample / gap counters. :class:`JsonLines` writes the same messages as JSON
lines instead (``--headless``, session logs).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO

import numpy as np
from rich.columns import Columns
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from beatwise.classes import CLASSES
from beatwise.rhythm import EPISODES, NAMES

__all__ = ["JsonLines", "Monitor", "braille_trace", "sparkline"]

FS = 360
STYLE = {"critical": "bold white on red", "warning": "bold yellow", "advisory": "cyan"}

# Braille dot bits: column 0 rows 0-3, column 1 rows 0-3.
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


def braille_trace(x: np.ndarray, *, width: int = 48, height: int = 3) -> list[str]:
    """A line plot of ``x`` in braille characters, ``width`` x ``height`` cells.

    Each cell holds 2 x 4 dots; consecutive points are joined vertically so QRS spikes stay
    visible. Returns ``height`` strings of ``width`` characters.
    """
    nx, ny = 2 * width, 4 * height
    grid = np.zeros((height, width), np.int32)
    x = np.asarray(x, np.float64)
    if len(x) >= 2:
        # min/max per column keeps narrow spikes that a plain decimation would drop
        edges = np.linspace(0, len(x), nx + 1).astype(int)
        cols = [
            (x[a:b] if b > a else x[min(a, len(x) - 1) : min(a, len(x) - 1) + 1])
            for a, b in zip(edges[:-1], edges[1:])
        ]
        lo, hi = float(np.min(x)), float(np.max(x))
        span = hi - lo or 1.0
        prev = None
        for i, c in enumerate(cols):
            ys = ((hi - np.array([c.min(), c.max()])) / span * (ny - 1)).round().astype(int)
            top, bot = int(ys.min()), int(ys.max())
            if prev is not None:
                top, bot = min(top, prev), max(bot, prev)
            prev = int(((hi - c[-1]) / span * (ny - 1)).round())
            for y in range(top, bot + 1):
                grid[y // 4, i // 2] |= _DOTS[i % 2][y % 4]
    return ["".join(chr(0x2800 + v) for v in row) for row in grid]


def sparkline(x: np.ndarray, *, width: int = 20) -> str:
    """``x`` as ``width`` block characters (max of each bin; spikes survive)."""
    x = np.asarray(x, np.float64)
    if len(x) < width:
        return " " * width
    bins = np.array_split(x, width)
    top = np.array([b.max() for b in bins])
    lo, hi = float(x.min()), float(x.max())
    levels = np.round((top - lo) / ((hi - lo) or 1.0) * 7).astype(int)
    return "".join("▁▂▃▄▅▆▇█"[v] for v in levels)


#: Technical states in which the screen has no ECG to read a rate or rhythm from.
_NO_ECG_ORDER = ("signal_loss", "lead_off")
_NO_ECG = frozenset(_NO_ECG_ORDER)


class _BedView:
    def __init__(self, name: str, record: str | None) -> None:
        self.name = name
        self.record = record
        self.hr: float | None = None
        self.counts = dict.fromkeys(CLASSES, 0)
        self.active: set[str] = set()
        self.alerts: deque[dict] = deque(maxlen=4)
        self.recent: deque[str] = deque(maxlen=8)
        self.trace = np.zeros(0, np.float32)
        self.last_sample = 0
        self.ended = False

    @property
    def rate(self) -> float | None:
        """Heart rate to show: none while there is no ECG to read it from (lead off, signal
        loss), 0 in asystole, else the last beat's (never a stale rate)."""
        if _NO_ECG & self.active:
            return None
        return 0.0 if "asystole" in self.active else self.hr

    @property
    def rhythm(self) -> str:
        for kind in (*_NO_ECG_ORDER, *EPISODES):
            if kind in self.active:
                return NAMES[kind]
        if not self.recent:
            return "—"
        labs = list(self.recent)
        top = max(set(labs), key=labs.count)
        return {
            "L": "LBBB rhythm",
            "R": "RBBB rhythm",
            "/": "Paced rhythm",
            "V": "Ventricular ectopy",
            "A": "Atrial ectopy",
        }.get(top, "Sinus rhythm")


class Monitor:
    """Keeps what the screen shows; call it with each message, :meth:`render` to draw.

    Args:
        trace_s: Seconds of ECG in the trace. Default 4.
        trace_width: Trace width in characters. Default 44.
        max_panels: More beds than this are shown as one compact row each. Default 6.
        clock: Monotonic clock (s) for the beats/s figure. Default ``time.monotonic``.
    """

    def __init__(
        self,
        *,
        trace_s: float = 4.0,
        trace_width: int = 44,
        max_panels: int = 6,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.trace_s = trace_s
        self.trace_width = trace_width
        self.max_panels = max_panels
        self.clock = clock
        self.beds: dict[str, _BedView] = {}
        self.status: dict = {}
        self.model = ""
        self._beat_times: deque[float] = deque(maxlen=5000)
        self.n_beats = 0
        # The consumer thread calls us while the screen thread renders.
        self._lock = threading.Lock()

    def _bed(self, msg: dict) -> _BedView:
        name = msg["bed"]
        if name not in self.beds:
            self.beds[name] = _BedView(name, msg.get("record"))
        return self.beds[name]

    def __call__(self, msg: dict) -> None:
        with self._lock:
            self._take(msg)

    def _take(self, msg: dict) -> None:
        kind = msg.get("type")
        if kind == "beat":
            b = self._bed(msg)
            b.hr = msg.get("hr_bpm")
            b.counts[msg["class"]] = b.counts.get(msg["class"], 0) + 1
            b.recent.append(msg["class"])
            self.n_beats += 1
            self._beat_times.append(self.clock())
        elif kind == "alert":
            b = self._bed(msg)
            if msg["state"] == "onset":
                b.active.add(msg["kind"])
            elif msg["state"] == "end":
                b.active.discard(msg["kind"])
            b.alerts.append(msg)
        elif kind == "samples":
            b = self._bed(msg)
            n = int(self.trace_s * FS)
            b.trace = np.concatenate([b.trace, np.asarray(msg["x"], np.float32)])[-n:]
        elif kind == "bed":
            # A (new) session of the bed: another record after an end, or a gap too long to
            # bridge. Nothing of the last session stays on screen as if current -- rate,
            # rhythm, counts, trace, open episodes, 'ended' -- a fresh view in the bed's place
            # (same panel order). The same record's last alerts stay listed (a gap too long
            # to bridge: the data gap that ended it); another record is another patient's.
            old = self.beds.get(msg["bed"])
            view = self.beds[msg["bed"]] = _BedView(msg["bed"], msg.get("record"))
            if old is not None and old.record == view.record:
                view.alerts = old.alerts
        elif kind == "end":
            self._bed(msg).ended = True
        elif kind == "status":
            self.status = msg
        elif kind == "session":
            self.model = msg.get("model", "")

    @property
    def beats_per_s(self) -> float:
        now = self.clock()
        return sum(1 for t in self._beat_times if now - t <= 5.0) / 5.0

    def panel(self, b: _BedView) -> Panel:
        hr = "--" if b.rate is None else f"{b.rate:.0f}"
        head = Text.assemble(
            (f"{hr}", "bold green"), (" bpm  ", "green"), (b.rhythm, _rhythm_style(b))
        )
        counts = Table.grid(padding=(0, 1))
        counts.add_row(*[Text(c, style="dim") for c in CLASSES])
        counts.add_row(
            *[
                Text(str(b.counts.get(c, 0)), style="bold" if c != "N" and b.counts.get(c) else "")
                for c in CLASSES
            ]
        )
        trace = Text("\n".join(braille_trace(b.trace, width=self.trace_width)), style="green")
        alerts = Text()
        for a in reversed(b.alerts):
            t = a.get("time_s", 0.0)
            mark = {"onset": "▲", "end": "▼", "event": "•"}[a["state"]]
            alerts.append(
                f"{mark} {_hms(t)} {a.get('name', a['kind'])} {a['state']}\n",
                style=STYLE[a["severity"]],
            )
        if not b.alerts:
            alerts.append("no alerts", style="dim")
        title = (
            f"bed {b.name}"
            + (f" · {b.record}" if b.record else "")
            + (" · ended" if b.ended else "")
        )
        border = "red" if {"vtach", "asystole"} & b.active else ("yellow" if b.active else "blue")
        return Panel(
            Group(head, counts, trace, alerts),
            title=title,
            border_style=border,
            width=self.trace_width + 4,
        )

    def footer(self) -> Text:
        s = self.status
        comp = s.get("compute_ms", {})
        lab = s.get("label_latency_s", {})
        return Text.assemble(
            ("beats/s ", "dim"),
            (f"{self.beats_per_s:.1f}", "bold"),
            ("   compute p50/p99 ", "dim"),
            (f"{_num(comp.get('p50'))}/{_num(comp.get('p99'))} ms", "bold"),
            ("   label p95 ", "dim"),
            (f"{_num(lab.get('p95'))} s", "bold"),
            ("   dropped ", "dim"),
            (str(s.get("lost_samples", 0)), "bold red" if s.get("lost_samples") else "bold"),
            ("   gaps ", "dim"),
            (str(s.get("gaps", 0)), "bold red" if s.get("gaps") else "bold"),
            ("   beds ", "dim"),
            (str(len(self.beds)), "bold"),
            ("   model ", "dim"),
            (self.model or "?", ""),
        )

    def render(self) -> Group:
        """The whole screen: bed panels and the footer."""
        with self._lock:
            return self._render()

    def _render(self) -> Group:
        if len(self.beds) > self.max_panels:
            return Group(self.table(), self.footer())
        panels = [self.panel(b) for b in self.beds.values()]
        body = Columns(panels) if panels else Text("waiting for the stream…", style="dim")
        return Group(body, self.footer())

    def table(self) -> Table:
        """Compact view for many beds: one row per bed, most serious beds first."""
        t = Table(box=None, padding=(0, 1), header_style="dim")
        for col in ("bed", "HR", "rhythm", *CLASSES, "trace", "last alert"):
            t.add_column(col, justify="right" if col in CLASSES or col == "HR" else "left")

        def rank(b: _BedView) -> tuple:
            return (not ({"vtach", "asystole"} & b.active), not b.active, b.name)

        for b in sorted(self.beds.values(), key=rank):
            last = b.alerts[-1] if b.alerts else None
            t.add_row(
                b.name,
                "--" if b.rate is None else f"{b.rate:.0f}",
                Text(b.rhythm, style=_rhythm_style(b)),
                *[str(b.counts.get(c, 0)) for c in CLASSES],
                Text(sparkline(b.trace[-2 * FS :], width=20), style="green"),
                Text(f"{last['name']} {last['state']}", style=STYLE[last["severity"]])
                if last
                else "",
            )
        return t


def _rhythm_style(b: _BedView) -> str:
    if {"vtach", "asystole"} & b.active:
        return STYLE["critical"]
    return STYLE["warning"] if b.active - {"paced"} else "bold"


def _hms(t: float) -> str:
    t = int(t)
    return f"{t // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d}"


def _num(x) -> str:
    return "--" if x is None else f"{x:g}"


class JsonLines:
    """A listener that writes each message as one JSON line (``--headless``, session logs).

    Args:
        out: Text stream to write to.
        strips: Include the ECG strips of serious events (large lines). Default True.
        beats: Include every beat (else alerts, status and bookkeeping only). Default True.
    """

    def __init__(self, out: IO[str], *, strips: bool = True, beats: bool = True) -> None:
        self.out = out
        self.strips = strips
        self.beats = beats

    def __call__(self, msg: dict) -> None:
        kind = msg.get("type")
        if (
            kind == "samples"
            or (kind == "strip" and not self.strips)
            or (kind == "beat" and not self.beats)
        ):
            return
        self.out.write(json.dumps(msg, separators=(",", ":")) + "\n")
