"""Session reports: a doctor's report and a patient's report per bed, and WFDB annotations.

Input is a session's messages (the consumer's JSON lines: ``session``, ``bed``, ``beat``,
``alert``, ``strip``, ``end``), from a live run or a log file (:func:`read_log`). For each
bed, :func:`write_reports` writes into ``out/<bed>/``:

* ``doctor.md`` / ``doctor.json`` -- recording span, mean / min / max heart rate, HRV (SDNN,
  RMSSD of normal-to-normal intervals), count and burden of each class, PVCs, couplets,
  V-tach runs (onset, length, rate), SVT runs, pauses and other episodes, and a PNG strip
  of each serious event;
* ``patient.md`` / ``patient.json`` -- the same night in plain words;
* ``<record>.bwa`` -- the session's beats as a WFDB annotation file (``wfdb.wrann``), so
  PhysioNet tools (``bxb``, ``rdann``) can compare them with the reference ``.atr``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from beatwise.classes import CLASSES
from beatwise.rhythm import NAMES, SEVERITY

__all__ = ["bed_summary", "patient_summary", "read_log", "write_annotations", "write_reports"]

log = logging.getLogger(__name__)

FS = 360
#: Normal-to-normal beats for HRV: conducted sinus beats, bundle-branch blocks included.
_NORMAL = frozenset("NLR")
_MEANING = {
    "N": "normal",
    "L": "left bundle branch block",
    "R": "right bundle branch block",
    "A": "supraventricular premature",
    "V": "ventricular premature",
    "/": "paced",
}


def read_log(path: str | Path) -> list[dict]:
    """A session log (JSON lines) -> its messages.

    The log of a crashed session is read too: its last line, when cut short by the crash
    (no newline, not JSON), is skipped with a warning, and so is a line cut short by a crash
    after which a restarted consumer went on appending (the next line opens a session);
    open episodes simply have no end.

    Raises:
        ValueError: any other line that is not a JSON object (names the file and line).
    """
    out = []
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except ValueError as exc:
            if i == len(lines) and not line.endswith("\n"):
                log.warning("session log %s: last line cut short (a crash?): skipped", path)
                continue
            if _opens_session(lines[i:]):
                log.warning("session log %s, line %d: cut short before a restart: skipped", path, i)
                continue
            raise ValueError(f"session log {path}, line {i}: not JSON ({exc}).") from exc
        if not isinstance(msg, dict):
            raise ValueError(f"session log {path}, line {i}: expected a JSON object.")
        out.append(msg)
    return out


def _opens_session(rest: list[str]) -> bool:
    """Whether the first non-empty line of ``rest`` is a session message."""
    for line in rest:
        if line.strip():
            try:
                msg = json.loads(line)
            except ValueError:
                return False
            return isinstance(msg, dict) and msg.get("type") == "session"
    return False


def _by_bed(messages: Iterable[dict]) -> dict[str, dict]:
    beds: dict[str, dict] = {}
    for m in messages:
        bed = m.get("bed")
        if bed is None:
            continue
        b = beds.setdefault(
            bed,
            {
                "bed": bed,
                "record": m.get("record"),
                "record_offset": 0,
                "beats": [],
                "alerts": [],
                "strips": [],
                "total": None,
            },
        )
        kind = m.get("type")
        if kind == "beat":
            b["beats"].append(m)
        elif kind == "alert":
            b["alerts"].append(m)
        elif kind == "strip":
            b["strips"].append(m)
        elif kind == "bed":
            b["record"] = m.get("record") or b["record"]
            b["record_offset"] = int(m.get("record_offset", 0))
        elif kind == "end":
            b["total"] = m.get("total_samples")
    return beds


def _without_ecg(alerts: list[dict]) -> list[tuple[int, int]]:
    """Sample stretches ``(start, stop)`` without ECG: data gaps (their missing samples),
    lead off and signal loss (onset to end, or on to the end of the log)."""
    out, open_at = [], {}
    for a in sorted(alerts, key=lambda m: m["sample"]):
        kind, state = a.get("kind"), a.get("state")
        if kind == "data_gap":
            out.append((a["sample"], a["sample"] + int(a["detail"].get("missing_samples") or 0)))
        elif kind in ("lead_off", "signal_loss") and state == "onset":
            open_at.setdefault(kind, a["sample"])
        elif kind in ("lead_off", "signal_loss") and state == "end" and kind in open_at:
            out.append((open_at.pop(kind), a["sample"] + 1))
    out += [(at, 1 << 62) for at in open_at.values()]
    return out


def _hms(t: float) -> str:
    t = int(round(t))
    return f"{t // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d}"


def bed_summary(bed: dict) -> dict:
    """The doctor's figures for one bed (JSON-safe).

    Heart rate: mean = 60 / mean RR; min / max over a running mean of 8 RR intervals. An
    interval across a stretch without ECG (a data gap, lead off, signal loss) is no RR and
    is left out, as the rhythm rules leave it out.
    HRV over normal-to-normal intervals (both beats N, L or R; 0.3-2.0 s): SDNN and RMSSD
    in ms. Burden: share of the classified beats, %.
    """
    beats = sorted(bed["beats"], key=lambda m: m["sample"])
    samples = np.array([m["sample"] for m in beats], np.int64)
    labels = [m["class"] for m in beats]
    n = len(beats)
    out: dict = {"bed": bed["bed"], "record": bed.get("record"), "beats": n}
    end = bed.get("total") or (int(samples[-1]) if n else 0)
    out["span_s"] = round(end / FS, 1)
    out["span"] = _hms(end / FS)
    rr = np.diff(samples) / FS
    measured = np.ones(len(rr), bool)
    for start, stop in _without_ecg(bed["alerts"]):  # RR i spans samples[i]..samples[i + 1]
        first = np.searchsorted(samples[1:], start, side="right")
        measured[first : np.searchsorted(samples[:-1], stop, side="left")] = False
    rr[~measured] = np.nan  # kept in place: the HRV pairs below stay beat to beat
    valid = rr[measured]
    if len(valid):
        out["hr_mean_bpm"] = round(60.0 / float(np.mean(valid)), 1)
        k = min(8, len(valid))
        run = np.convolve(rr, np.ones(k) / k, mode="valid")  # NaN where a window spans a gap
        run = run[np.isfinite(run)] if np.isfinite(run).any() else np.array([valid.mean()])
        out["hr_min_bpm"] = round(60.0 / float(run.max()), 1)
        out["hr_max_bpm"] = round(60.0 / float(run.min()), 1)
    else:
        out["hr_mean_bpm"] = out["hr_min_bpm"] = out["hr_max_bpm"] = None
    nn = np.array(
        [
            r
            for r, a, b in zip(rr, labels[:-1], labels[1:])
            if a in _NORMAL and b in _NORMAL and 0.3 <= r <= 2.0
        ]
    )
    out["nn_intervals"] = len(nn)
    out["sdnn_ms"] = round(float(np.std(nn, ddof=1)) * 1000, 1) if len(nn) > 2 else None
    out["rmssd_ms"] = (
        round(float(np.sqrt(np.mean(np.diff(nn) ** 2))) * 1000, 1) if len(nn) > 2 else None
    )
    counts = {c: labels.count(c) for c in CLASSES}
    out["counts"] = counts
    out["burden_pct"] = {c: round(100.0 * v / n, 2) if n else 0.0 for c, v in counts.items()}
    alerts = bed["alerts"]

    def events(kind: str) -> list[dict]:
        return [a for a in alerts if a["kind"] == kind and a["state"] in ("event", "onset")]

    def episodes(kind: str) -> list[dict]:
        ends = {
            a["detail"].get("onset_sample"): a
            for a in alerts
            if a["kind"] == kind and a["state"] == "end"
        }
        rows = []
        for a in events(kind):
            e = ends.get(a["sample"])
            d = {**(e["detail"] if e else {}), **a["detail"]}
            rows.append(
                {
                    "onset": _hms(a["sample"] / FS),
                    "onset_s": round(a["sample"] / FS, 2),
                    "beats": d.get("beats"),
                    "rate_bpm": d.get("rate_bpm"),
                    "duration_s": e["detail"].get("duration_s") if e else None,
                }
            )
        return rows

    out["pvc_beats"] = counts["V"]
    out["isolated_pvcs"] = len(events("pvc"))
    out["couplets"] = len(events("couplet"))
    out["vtach_runs"] = episodes("vtach")
    out["ventricular_runs"] = episodes("vrun")
    out["svt_runs"] = episodes("svt")
    out["svpb_events"] = len(events("svpb"))
    out["pauses"] = [
        {
            "at": _hms(a["sample"] / FS),
            "at_s": round(a["sample"] / FS, 2),
            "duration_s": a["detail"].get("duration_s"),
        }
        for a in events("pause")
    ]
    out["episodes"] = {
        k: episodes(k)
        for k in ("asystole", "bigeminy", "trigeminy", "brady", "tachy", "paced", "signal_loss")
    }
    out["data_gaps"] = len(events("data_gap"))
    out["alert_counts"] = {k: len(events(k)) for k in NAMES if events(k)}
    return out


def patient_summary(s: dict) -> dict:
    """Plain-language lines for the patient, from :func:`bed_summary`."""
    lines = []
    hours = s["span_s"] / 3600
    dur = f"{hours:.1f} hours" if hours >= 1 else f"{s['span_s'] / 60:.0f} minutes"
    lines.append(f"Your heart was watched for {dur}; we counted {s['beats']:,} heartbeats.")
    if s["hr_mean_bpm"]:
        lines.append(
            f"Your average heart rate was {s['hr_mean_bpm']:.0f} beats a minute "
            f"(lowest {s['hr_min_bpm']:.0f}, highest {s['hr_max_bpm']:.0f})."
        )
    extra_v, extra_a = s["counts"]["V"], s["counts"]["A"]
    if extra_v:
        lines.append(
            f"{extra_v:,} beats ({s['burden_pct']['V']:.1f}%) started early in the lower "
            "chambers of the heart (extra beats). "
            + (
                "Many people have a few."
                if s["burden_pct"]["V"] < 1.0
                else "That is more than usual; your doctor will look at it."
            )
        )
    if extra_a:
        lines.append(
            f"{extra_a:,} beats ({s['burden_pct']['A']:.1f}%) started early in the upper chambers."
        )
    if s["vtach_runs"]:
        lines.append(
            f"There were {len(s['vtach_runs'])} short spells of a fast rhythm from the lower "
            "chambers. "
            "Your doctor will look at these closely."
        )
    if s["svt_runs"]:
        lines.append(
            f"There were {len(s['svt_runs'])} spells of a fast rhythm from the upper chambers."
        )
    if s["episodes"]["brady"]:
        lines.append(
            f"Your heart beat slower than 50 beats a minute {len(s['episodes']['brady'])} "
            "time(s). Your doctor will look at this."
        )
    if s["episodes"]["tachy"]:
        lines.append(
            f"Your heart beat faster than 120 beats a minute {len(s['episodes']['tachy'])} time(s)."
        )
    if s["episodes"]["asystole"]:
        lines.append(
            f"Your heart stopped beating for 4 seconds or more "
            f"{len(s['episodes']['asystole'])} time(s). Your doctor will look at this closely."
        )
    if s["pauses"]:
        lines.append(f"Your heart paused for more than 2 seconds {len(s['pauses'])} time(s).")
    # Conduction patterns only when they dominate: a few misclassified beats say nothing.
    if s["episodes"]["paced"] or s["burden_pct"]["/"] >= 20:
        lines.append("Your pacemaker was setting the pace of your heart for much of the recording.")
    bbb = s["burden_pct"]["L"] + s["burden_pct"]["R"]
    if bbb >= 20:
        lines.append(
            "Many of your heartbeats show a pattern called bundle branch block: the signal "
            "spreads through the heart by a slower path. Your doctor will say what it "
            "means for you."
        )
    if len(lines) <= 2:
        lines.append("We found nothing unusual.")
    lines.append(
        "This report was made by a computer program. Please talk it over with your doctor; "
        "it is not a diagnosis."
    )
    return {"bed": s["bed"], "lines": lines}


def _doctor_md(s: dict, strips: list[str]) -> str:
    hr = lambda v: "--" if v is None else f"{v:.0f}"  # noqa: E731
    rows = [
        f"# Doctor's report — bed {s['bed']} ({s.get('record') or 'unknown record'})",
        "",
        f"- Recording span: {s['span']} ({s['span_s']} s), {s['beats']} beats classified",
        f"- Heart rate: mean {hr(s['hr_mean_bpm'])}, min {hr(s['hr_min_bpm'])}, "
        f"max {hr(s['hr_max_bpm'])} bpm (min/max over 8-beat running means)",
        f"- HRV (NN intervals, n={s['nn_intervals']}): SDNN {s['sdnn_ms']} ms, "
        f"RMSSD {s['rmssd_ms']} ms",
        f"- PVCs: {s['pvc_beats']} beats ({s['isolated_pvcs']} isolated), "
        f"couplets: {s['couplets']}",
        f"- Supraventricular premature beats: {s['counts']['A']} "
        f"({s['svpb_events']} outside SVT runs)",
        f"- Data gaps: {s['data_gaps']}",
        "",
        "## Beat classes",
        "",
        "| class | meaning | count | burden % |",
        "|---|---|---:|---:|",
        *[f"| {c} | {_MEANING[c]} | {s['counts'][c]} | {s['burden_pct'][c]} |" for c in CLASSES],
        "",
    ]
    for title, key in (
        ("V-tach runs (>= 3 V, > 100 bpm)", "vtach_runs"),
        ("Slow ventricular runs (>= 3 V, <= 100 bpm)", "ventricular_runs"),
        ("SVT runs (>= 3 A, > 100 bpm)", "svt_runs"),
    ):
        rows += [f"## {title}: {len(s[key])}", ""]
        if s[key]:
            rows += ["| onset | beats | rate bpm | duration s |", "|---|---:|---:|---:|"]
            rows += [
                f"| {r['onset']} | {r['beats']} | {r['rate_bpm']} | {r['duration_s']} |"
                for r in s[key][:50]
            ]
            rows.append("")
    rows += [f"## Pauses (RR > 2 s): {len(s['pauses'])}", ""]
    rows += [f"- {p['at']}: {p['duration_s']} s" for p in s["pauses"][:50]]
    rows += ["", "## Other episodes", ""]
    for k, eps in s["episodes"].items():
        if eps:
            total = sum(e["duration_s"] or 0 for e in eps)
            rows.append(
                f"- {NAMES[k]} ({SEVERITY[k]}): {len(eps)} episode(s), {total:.0f} s in all; "
                f"first at {eps[0]['onset']}"
            )
    if strips:
        rows += ["", "## Strips of serious events", ""]
        rows += [f"![{p}]({p})" for p in strips]
    rows += [
        "",
        "Definitions of every rule: `beatwise/rhythm.py` and docs/live.md. Machine-generated; "
        "to be reviewed by a clinician.",
        "",
    ]
    return "\n".join(rows)


def _strip_png(strip: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(strip["mv"], float)
    t = (strip["start_sample"] + np.arange(len(x))) / strip.get("fs", FS)
    fig, ax = plt.subplots(figsize=(10, 2.4), dpi=90)
    ax.plot(t, x, lw=0.8, color="black")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mV")
    at = strip.get("sample", strip["start_sample"]) / strip.get("fs", FS)
    ax.axvline(at, color="red", lw=0.8, ls="--")
    ax.set_title(f"bed {strip['bed']}: {NAMES.get(strip['kind'], strip['kind'])} at {_hms(at)}")
    ax.grid(True, color="#f4a0a0", lw=0.4)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


_SYMBOL = {"N": "N", "L": "L", "R": "R", "A": "A", "V": "V", "/": "/"}


def write_annotations(bed: dict, out_dir: str | Path, *, extension: str = "bwa") -> Path | None:
    """The bed's beats as a WFDB annotation file ``<record name>.<extension>`` (360 Hz
    record samples). Returns the path, or None when there are no beats."""
    import wfdb

    beats = sorted(bed["beats"], key=lambda m: m["sample"])
    if not beats:
        return None
    name = (bed.get("record") or bed["bed"]).rpartition("/")[2]
    samples = np.array([m.get("record_sample", m["sample"]) for m in beats], np.int64)
    wfdb.wrann(
        name,
        extension,
        samples,
        symbol=[_SYMBOL[m["class"]] for m in beats],
        fs=FS,
        write_dir=str(out_dir),
    )
    return Path(out_dir) / f"{name}.{extension}"


def write_reports(
    messages: Iterable[dict], out_dir: str | Path, *, max_strips: int = 12
) -> list[Path]:
    """Write the reports of every bed of a session into ``out_dir/<bed>/``.

    Args:
        messages: The session's messages (live, or :func:`read_log`).
        out_dir: Output folder (created).
        max_strips: Most strip PNGs per bed besides the critical events' (V-tach,
            asystole), which all get one (up to 100). Default 12.

    Returns:
        The bed folders written.
    """
    out = Path(out_dir)
    folders = []
    for name, bed in _by_bed(messages).items():
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        s = bed_summary(bed)
        strips = []
        serious = sorted(
            bed["strips"], key=lambda m: (SEVERITY.get(m["kind"]) != "critical", m["start_sample"])
        )
        serious = [st for st in serious if len(st.get("mv", ())) > 1]
        crit = [st for st in serious if SEVERITY.get(st["kind"]) == "critical"]
        rest = [st for st in serious if SEVERITY.get(st["kind"]) != "critical"]
        serious = crit[:100] + rest[:max_strips]
        for i, st in enumerate(serious):
            at = int(st.get("sample", st["start_sample"]) / FS)
            p = f"strip_{i:02d}_{st['kind']}_{at}s.png"
            _strip_png(st, d / p)
            strips.append(p)
        s["strips"] = strips
        (d / "doctor.json").write_text(json.dumps(s, indent=1))
        (d / "doctor.md").write_text(_doctor_md(s, strips))
        p = patient_summary(s)
        (d / "patient.json").write_text(json.dumps(p, indent=1))
        (d / "patient.md").write_text(
            f"# Your heart recording — bed {name}\n\n"
            + "\n".join(f"- {x}" for x in p["lines"])
            + "\n"
        )
        write_annotations(bed, d)
        folders.append(d)
    return folders
