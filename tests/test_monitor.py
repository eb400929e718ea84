"""The monitor renders real data to a capture console; --headless output parses."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest
from rich.console import Console

from beatwise.bedside import RuleClassifier
from beatwise.cli import main
from replay import ReplayPublisher, load_beds
from stream import StreamConsumer
from stream.monitor import JsonLines, Monitor, braille_trace


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def run_into(listeners, tmp_path, records=("203",), duration_s=90):
    data, ctl = f"ipc://{tmp_path}/d.sock", f"ipc://{tmp_path}/c.sock"
    beds = load_beds("mitdb", list(records), duration_s=duration_s)
    pub = ReplayPublisher(beds, endpoint=data, control=ctl, speed=math.inf)
    t = threading.Thread(target=pub.run, daemon=True)
    t.start()
    con = StreamConsumer(
        RuleClassifier(),
        connect=data,
        control=ctl,
        publish=None,
        listeners=listeners,
        model_name="rules",
    )
    con.run(max_duration_s=60)
    t.join(10)
    return con


@pytest.mark.usefixtures("mitdb")
def test_monitor_renders_real_data(tmp_path):
    clock = FakeClock()
    mon = Monitor(clock=clock)
    con = run_into([mon], tmp_path, records=("203", "119"))
    console = Console(record=True, width=140, force_terminal=True, color_system="truecolor")
    console.print(mon.render())
    text = console.export_text(clear=False)
    assert "bed 203 · mitdb/203" in text and "bed 119 · mitdb/119" in text
    assert "bpm" in text and "model rules" in text and "dropped 0" in text and "gaps 0" in text
    v = mon.beds["203"]
    assert sum(v.counts.values()) + sum(mon.beds["119"].counts.values()) == con.stats.beats
    assert str(v.counts["N"]) in text  # the running counts are shown
    assert v.hr is not None and 40 < v.hr < 200
    last = v.alerts[-1]
    assert last["name"] in text  # the last alerts, by name
    assert any(ch in text for ch in "⣿⡇⠁")  # the braille trace
    # severity colours reach the terminal
    styled = console.export_text(styles=True)
    assert "\x1b[36m" in styled or "\x1b[1;33m" in styled or "\x1b[1;37;41m" in styled
    # beats/s follows the injected clock: 5 s later nothing is recent
    clock.t += 10
    assert mon.beats_per_s == 0.0


def test_rhythm_line_names_the_open_episode():
    mon = Monitor()
    mon({"type": "beat", "bed": "x", "class": "N", "hr_bpm": 150.0})
    mon(
        {
            "type": "alert",
            "bed": "x",
            "kind": "vtach",
            "state": "onset",
            "severity": "critical",
            "name": "V-tach",
            "time_s": 12.0,
            "detail": {},
        }
    )
    assert mon.beds["x"].rhythm == "V-tach"
    mon(
        {
            "type": "alert",
            "bed": "x",
            "kind": "vtach",
            "state": "end",
            "severity": "critical",
            "name": "V-tach",
            "time_s": 14.0,
            "detail": {},
        }
    )
    assert mon.beds["x"].rhythm == "Sinus rhythm"
    console = Console(record=True, width=80)
    console.print(mon.render())
    assert "V-tach end" in console.export_text()


def test_no_stale_heart_rate_without_ecg_or_in_asystole():
    """The last beat's 75 bpm must not stay on screen once the lead is off, the signal lost or
    the heart stopped."""
    mon = Monitor()

    def alert(kind, state):
        mon({"type": "alert", "bed": "x", "kind": kind, "state": state, "severity": "warning",
             "name": kind, "time_s": 1.0, "detail": {}})  # fmt: skip

    def screen() -> str:
        console = Console(record=True, width=100)
        console.print(mon.render())
        return console.export_text()

    mon({"type": "beat", "bed": "x", "class": "N", "hr_bpm": 75.0})
    assert "75 bpm" in screen() and "Sinus rhythm" in screen()
    for kind, shown, rhythm in (
        ("asystole", "0 bpm", "Asystole"),
        ("lead_off", "-- bpm", "Lead off"),
        ("signal_loss", "-- bpm", "Signal loss"),
    ):
        alert(kind, "onset")
        assert shown in screen() and rhythm in screen(), kind
        alert(kind, "end")
        assert "75 bpm" in screen(), kind
    mon({"type": "beat", "bed": "x", "class": "N", "hr_bpm": 80.0})
    assert "80 bpm" in screen()


def test_new_session_of_a_bed_starts_a_fresh_view():
    """A bed's new session (another record after an end, or a gap too long to bridge) must not
    show the last session's rate, rhythm, record, alerts or 'ended' on a live bed; a new
    session of the same record (a gap too long to bridge) keeps the alert that says why."""
    mon = Monitor()

    def screen() -> str:
        console = Console(record=True, width=100)
        console.print(mon.render())
        return console.export_text()

    mon({"type": "bed", "bed": "b1", "record": "mitdb/208", "first_sample": 0})
    for s in range(5):
        cls = "V" if s % 2 else "N"
        mon({"type": "beat", "bed": "b1", "sample": 360 * s, "class": cls, "hr_bpm": 142.0})
    mon({"type": "alert", "bed": "b1", "kind": "vtach", "state": "event", "severity": "critical",
         "name": "V-tach", "time_s": 1.0, "detail": {}})  # fmt: skip
    mon({"type": "samples", "bed": "b1", "x": np.sin(np.linspace(0, 20, 720))})
    mon({"type": "end", "bed": "b1"})
    assert "142 bpm" in screen() and "mitdb/208 · ended" in screen()

    mon({"type": "bed", "bed": "b1", "record": "mitdb/100", "first_sample": 0})
    v = mon.beds["b1"]
    assert v.rate is None and v.rhythm == "—"
    assert v.record == "mitdb/100" and not v.ended
    # The class counts are the new session's (all 0): the panel belongs to the patient on the
    # bed now, like its rate and rhythm, and the consumer counts per session too (its end
    # message's counts).
    assert v.counts == dict.fromkeys(v.counts, 0)
    assert not v.alerts and not v.active and len(v.trace) == 0
    text = screen()
    assert "bed b1 · mitdb/100" in text and "ended" not in text and "mitdb/208" not in text
    assert "-- bpm" in text and "142" not in text and "V-tach" not in text
    # the new session's first beat shows as usual
    mon({"type": "beat", "bed": "b1", "sample": 360, "class": "N", "hr_bpm": 70.0})
    assert "70 bpm" in screen() and "Sinus rhythm" in screen() and v is mon.beds["b1"]
    assert list(mon.beds) == ["b1"]

    mon({"type": "alert", "bed": "b1", "kind": "data_gap", "state": "event", "severity": "warning",
         "name": "Data gap", "time_s": 9.0, "detail": {"new_session": True}})  # fmt: skip
    mon({"type": "end", "bed": "b1"})
    mon({"type": "bed", "bed": "b1", "record": "mitdb/100", "first_sample": 7200})
    v = mon.beds["b1"]
    assert v.rate is None and not v.ended and [a["kind"] for a in v.alerts] == ["data_gap"]
    assert "Data gap" in screen()


def test_braille_trace_shape():
    rows = braille_trace(np.sin(np.linspace(0, 20, 1440)), width=30, height=3)
    assert len(rows) == 3 and all(len(r) == 30 for r in rows)
    assert all(0x2800 <= ord(c) <= 0x28FF for r in rows for c in r)
    assert braille_trace(np.zeros(0), width=5) == ["\u2800" * 5] * 3


@pytest.mark.usefixtures("mitdb")
def test_json_lines_listener_parses(tmp_path):
    import io

    buf = io.StringIO()
    run_into([JsonLines(buf, strips=False)], tmp_path, duration_s=60)
    msgs = [json.loads(line) for line in buf.getvalue().splitlines()]
    kinds = {m["type"] for m in msgs}
    assert {"session", "bed", "beat", "alert", "end", "status"} <= kinds
    assert "strip" not in kinds and "samples" not in kinds


@pytest.mark.usefixtures("mitdb")
def test_headless_command_output_parses(tmp_path, capsys):
    data, ctl = f"ipc://{tmp_path}/d.sock", f"ipc://{tmp_path}/c.sock"
    beds = load_beds("mitdb", ["208"], duration_s=60)
    pub = ReplayPublisher(beds, endpoint=data, control=ctl, speed=math.inf)
    t = threading.Thread(target=pub.run, daemon=True)
    t.start()
    log = tmp_path / "session.jsonl"
    rc = main(
        [
            "monitor",
            "--headless",
            "--connect",
            data,
            "--control",
            ctl,
            "--publish",
            "none",
            "--model",
            "rules",
            "--log",
            str(log),
            "--report-dir",
            str(tmp_path / "rep"),
            "--duration-s",
            "60",
        ]
    )
    t.join(10)
    assert rc == 0
    out = capsys.readouterr().out
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    beats = [m for m in lines if m["type"] == "beat"]
    assert len(beats) > 50 and all(m["bed"] == "208" for m in beats)
    assert {"sample", "time_s", "class", "probs", "rr_s", "hr_bpm", "seq"} <= set(beats[0])
    assert log.is_file() and (tmp_path / "rep" / "208" / "doctor.md").is_file()


@pytest.mark.usefixtures("mitdb")
def test_many_beds_render_as_compact_rows(tmp_path):
    mon = Monitor(max_panels=2)
    run_into([mon], tmp_path, records=("203", "119", "232"), duration_s=30)
    console = Console(record=True, width=160)
    console.print(mon.render())
    text = console.export_text()
    assert "╭" not in text  # no panels
    rows = [line for line in text.splitlines() if line.strip().startswith(("203", "119", "232"))]
    assert len(rows) == 3 and all(any(ch in line for ch in "▁▂▃▄▅▆▇█") for line in rows)
