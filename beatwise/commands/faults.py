"""Fault benchmarks: ``beatwise bench restart`` and ``beatwise bench gaps``.

``bench gaps`` (offline, the live pipeline objects): 3-s data gaps cut into mitdb records,
bridged and marked as the consumer does them; counts the detected beats in the second after
each gap that match no reference beat (within 150 ms), and the reference beats there that
were missed -- with the gaps marked (the consumer's way) and unmarked (the fill alone).

``bench restart``: how fast the live system notices a dead publisher and resumes.

A consumer (this process, the shipped model) takes one bed from a real-time replay (a child
process); the replay is killed with SIGKILL and started again, further into the record, a
few times. Measured per restart, on the consumer's wall clock:

* ``loss_alarm_s``: last samples received -> ``signal_loss`` onset published;
* ``gap_report_s``: data back -> ``data_gap`` published (with the missing sample count);
* ``resume_s``: data back -> first beat label published for an R peak in the new data;
* ``first_label_latency_s``: that beat's R peak acquired -> its label published (the
  pipeline's usual label latency, for comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["register"]


def register(groups: dict[str, argparse._SubParsersAction]) -> None:
    p = groups["bench"].add_parser(
        "restart", help="publisher killed and restarted: gap reported, classification resumed"
    )
    p.add_argument("--db", default="mitdb")
    p.add_argument("--record", default="100")
    p.add_argument("--restarts", type=int, default=3, help="kill/restart cycles (default: 3)")
    p.add_argument("--run-s", type=float, default=15.0, help="seconds streamed between kills")
    p.add_argument("--outage-s", type=float, default=3.0, help="seconds the publisher is dead")
    p.add_argument("--model", default="models/beatwise_interpatient.pt")
    p.add_argument("--json", dest="out", default="docs/results/bench_restart.json")
    p.set_defaults(func=_bench_restart)

    p = groups["bench"].add_parser(
        "gaps", help="data gaps bridged as the consumer does: false and missed beats after them"
    )
    p.add_argument("--records", default="100,101,103,105,106,113,117,119,200,203,208,233")
    p.add_argument("--gaps", type=int, default=20, help="gaps per record (default: 20)")
    p.add_argument("--gap-s", type=float, default=3.0, help="seconds per gap (default: 3)")
    p.add_argument("--json", dest="out", default="docs/results/bench_gaps.json")
    p.set_defaults(func=_bench_gaps)


def _bench_gaps(args: argparse.Namespace) -> int:
    import numpy as np

    from beatwise.eval.matching import match_beats
    from beatwise.pipeline import BeatPipeline, bridge
    from beatwise.records import FS, load_record

    gap, tol = int(round(args.gap_s * FS)), int(round(0.150 * FS))
    rows, totals = [], {m: {"false": 0, "missed": 0} for m in ("marked", "unmarked")}
    for name in args.records.split(","):
        rec = load_record("mitdb", name)
        starts = np.linspace(30 * FS, len(rec.signal) - 30 * FS, args.gaps).astype(int)
        x = np.array(rec.signal, np.float64)
        for g in starts:
            x[g : g + gap] = bridge(gap, x[g - 1], x[g + gap])
        row = {"record": f"mitdb/{name}"}
        for mode in ("marked", "unmarked"):
            pipe, out, todo = BeatPipeline(), [], list(starts) if mode == "marked" else []
            for a in range(0, len(x), FS):  # 1-s chunks; a gap marked as its chunk comes
                while todo and todo[0] < a + FS:
                    g = int(todo.pop(0))
                    pipe.mark_gap(g, g + gap)
                out.append(pipe.push(x[a : a + FS]))
            det = np.concatenate([b.sample for b in [*out, pipe.flush()]])
            false = missed = 0
            for g in starts:
                e = g + gap
                after = det[(det >= e) & (det < e + FS)]
                ref = rec.beat_samples[(rec.beat_samples >= e + tol) & (rec.beat_samples < e + FS)]
                false += int(np.sum(match_beats(after, rec.beat_samples, tolerance=tol)[0] < 0))
                missed += int(np.sum(match_beats(ref, det, tolerance=tol)[0] < 0))
            row[mode] = {"false_beats": false, "missed_beats": missed}
            totals[mode]["false"] += false
            totals[mode]["missed"] += missed
        rows.append(row)
        print(f"{row['record']}: marked {row['marked']}, unmarked {row['unmarked']}")
    result = {
        "command": "beatwise bench gaps " + " ".join(sys.argv[3:]),
        "gaps": len(rows) * args.gaps,
        "gap_s": args.gap_s,
        "window": "the second after each gap's end; false: a detected beat matching no "
        "reference beat within 150 ms; missed: a reference beat from 150 ms after the end "
        "on that no detected beat matches",
        "totals": totals,
        "records": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{result['gaps']} gaps: {totals}; wrote {args.out}")
    return 0


def _bench_restart(args: argparse.Namespace) -> int:
    import numpy as np

    from beatwise.commands.live import load_classifier, print_targets
    from stream import StreamConsumer

    clf, name = load_classifier(args.model)
    tmp = Path(tempfile.mkdtemp(prefix="beatwise-restart-"))
    data, ctl = f"ipc://{tmp}/data", f"ipc://{tmp}/ctl"
    events: list[tuple[float, dict]] = []
    lock = threading.Lock()

    def listen(msg: dict) -> None:
        if msg.get("type") in ("beat", "alert"):
            with lock:
                events.append((time.monotonic(), msg))

    con = StreamConsumer(
        clf, connect=data, control=ctl, publish=None, listeners=[listen], model_name=name
    )
    stop = threading.Event()
    tc = threading.Thread(target=con.run, kwargs={"stop": stop, "until_end": False})
    tc.start()

    def replay(start_s: float) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "beatwise.cli",
                "replay",
                "--db",
                args.db,
                "--records",
                args.record,
                "--speed",
                "1",
                "--start-s",
                f"{start_s:.3f}",
                "--endpoint",
                data,
                "--control",
                ctl,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def received() -> int:
        return sum(con.stats.samples.values())

    rows = []
    start_s = 0.0
    child = replay(start_s)
    try:
        for k in range(args.restarts):
            _wait(lambda: received() > 0, 60)
            t0 = time.monotonic()
            time.sleep(args.run_s)
            child.send_signal(signal.SIGKILL)
            child.wait()
            last_rx = con.stats.last_data_at
            got = received()
            time.sleep(args.outage_s)
            # the record goes on while the publisher is down: the new run starts where real
            # time has got to (a bedside device would do the same)
            start_s = (con.beds[args.record].record_off + con.beds[args.record].n) / 360.0 + (
                time.monotonic() - last_rx
            )
            n_before = len(events)
            child = replay(start_s)
            _wait(lambda got=got: received() > got, 60)
            back = con.stats.last_data_at
            _wait(lambda n=n_before, s=start_s: _first_beat_after(events[n:], s), 30)
            time.sleep(1.0)
            with lock:
                new = events[n_before:]
                old = [e for e in events[:n_before] if e[0] >= t0]
            loss = [t for t, m in old if m.get("kind") == "signal_loss" and m["state"] == "onset"]
            gap = [(t, m) for t, m in new if m.get("kind") == "data_gap"]
            beat = _first_beat_after(new, start_s)
            lat = con.stats.label_latency_s.last(200)
            rows.append(
                {
                    "restart": k + 1,
                    "resumed_at_record_s": round(start_s, 2),
                    "loss_alarm_s": round(loss[0] - last_rx, 3) if loss else None,
                    "gap_report_s": round(max(gap[0][0] - back, 0.0), 3) if gap else None,
                    "missing_samples": gap[0][1]["detail"]["missing_samples"] if gap else None,
                    "resume_s": round(beat[0] - back, 3) if beat else None,
                    # its R peak came this long after the data did (speed 1: record s = wall s)
                    "first_r_after_return_s": round(beat[1]["record_sample"] / 360 - start_s, 3)
                    if beat
                    else None,
                    "first_label_latency_s": round(
                        beat[0] - back - (beat[1]["record_sample"] / 360 - start_s), 3
                    )
                    if beat
                    else None,
                    "label_latency_p50_s": round(float(np.median(lat)), 3) if len(lat) else None,
                }
            )
            print(f"restart {k + 1}: {rows[-1]}", file=sys.stderr)
    finally:
        child.kill()
        stop.set()
        tc.join(30)
    loss = [r["loss_alarm_s"] for r in rows]
    gap = [r["gap_report_s"] for r in rows]
    resume = [r["resume_s"] for r in rows]
    targets = [
        {
            "row": "publisher killed: signal-loss alarm after the last samples",
            "target": "<= 2 s",
            "measured": f"max {max(loss, key=_none_high)} s over {len(rows)} restarts",
            "pass": all(v is not None and v <= 2.0 for v in loss),
        },
        {
            "row": "publisher back: data gap reported (with its sample count)",
            "target": "<= 2 s",
            "measured": f"max {max(gap, key=_none_high)} s",
            "pass": all(v is not None and v <= 2.0 for v in gap),
        },
        {
            "row": "publisher back: first beat label for the new data",
            "target": "<= 1 s",
            "measured": f"max {max(resume, key=_none_high)} s",
            "pass": all(v is not None and v <= 1.0 for v in resume),
        },
        {
            "row": "  of which: the first R peak arriving / that beat's label latency",
            "target": "(explains the row above)",
            "measured": "max {} s / max {} s (usual label latency p50 {} s)".format(
                max((r["first_r_after_return_s"] for r in rows), key=_none_high),
                max((r["first_label_latency_s"] for r in rows), key=_none_high),
                rows[-1]["label_latency_p50_s"] if rows else None,
            ),
            "pass": None,
        },
    ]
    result = {
        "command": "beatwise bench restart " + " ".join(sys.argv[3:]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "model": name,
        "record": f"{args.db}/{args.record}",
        "speed": 1,
        "note": "replay child killed with SIGKILL and restarted further into the record; "
        "consumer in this process, ipc loopback; wall-clock seconds on the consumer",
        "restarts": rows,
        "targets": targets,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print_targets(targets)
    return 0


def _first_beat_after(events: list[tuple[float, dict]], start_s: float):
    for t, m in events:
        if m.get("type") == "beat" and m["record_sample"] >= start_s * 360:
            return t, m
    return None


def _none_high(v):
    return float("inf") if v is None else v


def _wait(cond, bound_s: float) -> None:
    t = time.monotonic()
    while not cond():
        if time.monotonic() - t > bound_s:
            raise TimeoutError(f"bench restart: condition not met within {bound_s} s")
        time.sleep(0.01)
