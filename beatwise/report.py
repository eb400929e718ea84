"""Session reports: a doctor's report and a patient's report per bed, and WFDB annotations.

Input is a session's messages (the consumer's JSON lines: ``session``, ``bed``, ``beat``,
``alert``, ``strip``, ``end``), from a live run or a log file (:func:`read_log`). For each
bed, :func:`write_reports` writes into ``out/<bed>/``:

* ``doctor.md`` / ``doctor.json`` -- recording span, mean / min / max heart rate, HRV (SDNN,
  RMSSD of normal-to-normal intervals), count and burden of each class, V beats next to
  the PVC, couplet and run events, V-tach runs (onset, length, rate), SVT runs, pauses and
  other episodes, the technical events (lead off, noisy signal, signal loss, data gaps, a
  monitor restart: which stretches were not monitored or less trustworthy), and a PNG
  strip of each serious event;
* ``patient.md`` / ``patient.json`` -- the same night in plain words;
* ``<record>.bwa`` -- the session's beats as a WFDB annotation file (``wfdb.wrann``), so
  PhysioNet tools (``bxb``, ``rdann``) can compare them with the reference ``.atr``.

An episode is an onset and its end: an end is paired with the onset its ``onset_sample``
names, else with the latest open onset of its kind (older logs: a ``signal_loss`` end
names none). An onset with no end lasts to the log's last sample ("ongoing at end of
recording"), or, when the bed's session restarted (a consumer crash), to the restart;
the time from the bed's last logged sample to the restart was not monitored.
Every time of day in both reports is :func:`clock` (rounded to the nearest second).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from beatwise.classes import CLASSES
from beatwise.protocol import BED_NAME
from beatwise.rhythm import NAMES, SEVERITY, bpm_tenths

__all__ = [
    "bed_summary",
    "clock",
    "patient_summary",
    "read_log",
    "write_annotations",
    "write_reports",
]

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
#: Technical alert kinds, in report order: no ECG (lead off, signal loss, data gaps), then
#: ECG of less trust (noise). Their stretches are what was not monitored, or less well.
_TECHNICAL = ("lead_off", "signal_loss", "data_gap", "unlogged", "noisy_signal")
_NO_ECG = ("lead_off", "signal_loss", "data_gap", "unlogged")
#: "unlogged": from a bed's last logged sample to where its restarted session began (the
#: consumer was down: a crash). Not an alert kind, hence its own name.
_TECH_NAMES = {**NAMES, "unlogged": "Not logged (monitor restarted)"}
#: Rhythm episodes besides the runs (which have tables of their own).
_OTHER_EPISODES = ("asystole", "bigeminy", "trigeminy", "brady", "tachy", "paced")
#: RR intervals per heart-rate mean, as :class:`beatwise.rhythm.RhythmMonitor` (hr_beats).
_HR_BEATS = 8
#: When a heart-rate episode holds, at a rate in bpm (its onset rule in beatwise.rhythm).
_HR_EPISODES = {"brady": lambda hr: hr < 50.0, "tachy": lambda hr: hr > 120.0}
#: Seconds without a beat before an asystole onset (its rule in beatwise.rhythm).
_ASYSTOLE_S = 4.0


#: Fields the reports read, by message type, and their JSON types.
_NEEDS: dict[str, dict[str, type]] = {
    "beat": {"sample": int, "class": str},
    "alert": {"sample": int, "kind": str, "state": str, "detail": dict},
    "strip": {"kind": str, "start_sample": int, "mv": list},
}


def read_log(path: str | Path) -> list[dict]:
    """A session log (JSON lines) -> its messages.

    The log of a crashed session is read too: its last line, when cut short by the crash
    (no newline, not JSON), is skipped with a warning, and so is a line cut short by a crash
    after which a restarted consumer went on appending (the next line opens a session);
    open episodes simply have no end. A beat, alert or strip line without a field the
    reports read (or with one of the wrong type, or a beat class outside ``CLASSES``) is
    skipped; one warning counts them and names the first lines.

    Raises:
        ValueError: any other line that is not a JSON object (names the file and line).
    """
    out, unusable = [], []
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
        kind = msg.get("type")
        need = _NEEDS.get(kind, {}) if isinstance(kind, str) else {}
        lacks = [repr(f) for f, t in need.items() if not isinstance(msg.get(f), t)]
        if kind == "beat" and not lacks and msg["class"] not in CLASSES:
            lacks.append(f"'class' (got {msg['class']!r}, expected one of {''.join(CLASSES)})")
        if lacks:
            unusable.append(f"line {i} ({kind}: no usable {', '.join(lacks)})")
            continue
        out.append(msg)
    if unusable:
        log.warning(
            "session log %s: %d line(s) skipped for lack of fields the report reads: %s%s",
            path,
            len(unusable),
            ", ".join(unusable[:5]),
            ", ..." if len(unusable) > 5 else "",
        )
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
                "restarts": [],
            },
        )
        kind = m.get("type")
        if kind == "beat":
            b["beats"].append(m)
        elif kind == "alert":
            b["alerts"].append(m)
            if m.get("kind") == "data_gap" and (m.get("detail") or {}).get("new_session"):
                b["gap_session"] = True  # the consumer closed the session: no crash
        elif kind == "strip":
            b["strips"].append(m)
        elif kind == "bed":
            b.setdefault("first", int(m.get("first_sample") or 0))  # where it was joined
            if b.pop("gap_session", False):
                pass  # a new session after a gap too long to bridge, its data gap logged
            elif b["beats"] or b["alerts"]:  # the bed's session began again: a restart
                seen = max(int(x["sample"]) for x in (*b["beats"], *b["alerts"]))
                first = int(m.get("first_sample") or 0)
                b["restarts"].append((len(b["alerts"]), first, seen))
            b["record"] = m.get("record") or b["record"]
            b["record_offset"] = int(m.get("record_offset", 0))
        elif kind == "end":
            b["total"] = m.get("total_samples")
    return beds


def clock(t_s: float) -> str:
    """Seconds -> ``hh:mm:ss``, rounded to the nearest second (half up): the one way every
    time of day is written in both reports, so an event reads the same everywhere."""
    t = _whole_s(t_s)
    return f"{t // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d}"


def _whole_s(t_s: float) -> int:
    """Seconds rounded to the nearest whole second, half up (``round`` goes to even)."""
    return int(math.floor(t_s + 0.5))


def _plural(n: int, unit: str, units: str | None = None) -> str:
    """``1 beat``, ``2 beats``, ``1,204 beats``."""
    return f"{n:,} {unit if n == 1 else units or unit + 's'}"


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n:,} times")


def _pct(p: float) -> str:
    return "under 0.1%" if 0 < p < 0.05 else f"{p:.1f}%"


def _secs(d: float | None) -> str:
    """A duration for the doctor: ``20.0 s``; ``--`` when unknown."""
    return "--" if d is None else f"{d:.1f} s"


def _spoken(seconds: float) -> str:
    """A duration in words for the patient: ``40 seconds``, ``1 minute``, ``2.5 hours``."""
    s = _whole_s(seconds)
    if s < 1:
        return "less than a second"
    if s < 60:
        return _plural(s, "second")
    minutes = _whole_s(seconds / 60)
    if minutes < 60:
        return _plural(minutes, "minute")
    hours = round(seconds / 3600, 1)
    return "1 hour" if hours == 1 else f"{hours:g} hours"


def _last_sample(bed: dict) -> int:
    """The log's last sample for a bed: its end message, else its last beat or alert."""
    seen = [int(m["sample"]) for m in (*bed["beats"], *bed["alerts"])]
    return max([int(bed.get("total") or 0), *seen])


def _episodes(
    alerts: list[dict], kind: str, last: int, restarts: Iterable[tuple[int, ...]] = ()
) -> list[dict]:
    """The episodes of one kind, in onset order, from a bed's alerts in log order.

    An end is paired with the onset its ``onset_sample`` names, else with the latest open
    onset of its kind. Its duration is the end's ``duration_s``, else end sample - onset
    sample; a ``signal_loss`` whose end says neither (older logs: the sample clock stands
    still while nothing comes) lasted at least its onset's ``silent_s``. An onset with no
    end lasts until a later onset of its kind, else until the bed's session restarted
    (``restarts``: alert index, first sample of the new session, ...), else to ``last``
    (ongoing).

    Returns dicts: ``onset_sample``, ``end_sample``, ``duration_s``, ``ongoing``,
    ``end_logged``, ``at_least`` (duration is a lower bound), ``stated`` (the end gave its
    duration), ``detail`` (the end's detail over the onset's).
    """
    breaks = sorted(restarts)
    pending: list[dict] = []
    out: list[dict] = []

    def close(ep: dict, end: int, *, ongoing: bool = False, logged: bool = False) -> None:
        ep.update(end_sample=max(end, ep["onset_sample"]), ongoing=ongoing, end_logged=logged)

    for i, a in enumerate(alerts):
        while breaks and breaks[0][0] <= i:
            at = breaks.pop(0)[1]
            for ep in pending:  # its end was lost with the crashed session
                close(ep, at)
            pending.clear()
        if a.get("kind") != kind:
            continue
        detail = a.get("detail") or {}
        if a.get("state") == "onset":
            ep = {"onset_sample": int(a["sample"]), "detail": dict(detail), "_onset": detail}
            pending.append(ep)
            out.append(ep)
        elif a.get("state") == "end":
            named = detail.get("onset_sample")
            ep = next((e for e in reversed(pending) if e["onset_sample"] == named), None)
            ep = ep or (pending[-1] if pending else None)
            if ep is None:
                if named is None:
                    continue  # an end whose onset is not in the log, and it names none
                ep = {"onset_sample": int(named), "detail": {}, "_onset": {}}
                out.append(ep)
            else:
                pending.remove(ep)
            close(ep, int(a["sample"]), logged=True)
            ep["detail"].update(detail)
            if detail.get("duration_s") is not None:
                ep["duration_s"] = float(detail["duration_s"])
    out.sort(key=lambda e: e["onset_sample"])
    for k, ep in enumerate(out):
        if "end_sample" not in ep:  # still open at the end of the log
            later = [e["onset_sample"] for e in out[k + 1 :]]
            close(ep, later[0]) if later else close(ep, last, ongoing=True)
        ep["stated"] = "duration_s" in ep
        span = (ep["end_sample"] - ep["onset_sample"]) / FS
        silent = ep.pop("_onset").get("silent_s")
        ep["at_least"] = not ep["stated"] and span <= 0 and silent is not None
        if not ep["stated"]:
            ep["duration_s"] = float(silent) if ep["at_least"] else span
        for key in ("onset_sample", "duration_s"):
            ep["detail"].pop(key, None)
    return out


def _row(ep: dict) -> dict:
    """An episode as the reports show it (JSON-safe)."""
    return {
        "onset": clock(ep["onset_sample"] / FS),
        "onset_s": round(ep["onset_sample"] / FS, 2),
        "duration_s": round(ep["duration_s"], 2),
        "ongoing": ep["ongoing"],
        "end_logged": ep["end_logged"],
        "at_least": ep["at_least"],
    }


def _gaps(alerts: list[dict]) -> list[dict]:
    """Data gaps as episodes: the samples that never came."""
    out = []
    for a in alerts:
        if a.get("kind") == "data_gap" and a.get("state") == "event":
            d = a.get("detail") or {}
            n = int(d.get("missing_samples") or 0)
            out.append(
                {
                    "onset_sample": int(a["sample"]),
                    "end_sample": int(a["sample"]) + n,
                    "duration_s": n / FS,
                    "ongoing": False,
                    "end_logged": True,
                    "at_least": False,
                    "stated": True,
                    "detail": d,
                }
            )
    return sorted(out, key=lambda e: e["onset_sample"])


def _unlogged(restarts: Iterable[tuple[int, ...]]) -> list[dict]:
    """The stretches a crashed consumer left unlogged: from the bed's last logged sample
    to the first sample of its restarted session."""
    return [
        {
            "onset_sample": seen,
            "end_sample": first,
            "duration_s": (first - seen) / FS,
            "ongoing": False,
            "end_logged": True,
            "at_least": False,
            "stated": True,
            "detail": {},
        }
        for _, first, seen in restarts
        if first > seen
    ]


def _without_ecg(technical: dict[str, list[dict]]) -> list[tuple[int, int]]:
    """Sample stretches ``[start, stop)`` without ECG, from :func:`_episodes` /
    :func:`_gaps`: lead off and signal loss (onset to end), data gaps (the missing
    samples). A signal loss in which no sample was lost spans no sample."""
    return [
        (e["onset_sample"], e["end_sample"])
        for kind in _NO_ECG
        for e in technical[kind]
        if e["end_sample"] > e["onset_sample"]
    ]


def _union(stretches: list[tuple[int, int]]) -> int:
    """Samples covered by ``[start, stop)`` stretches, overlaps counted once."""
    total, reach = 0, None
    for start, stop in sorted(stretches):
        if reach is None or start > reach:
            total, reach = total + stop - start, stop
        elif stop > reach:
            total, reach = total + stop - reach, stop
    return total


def bed_summary(bed: dict) -> dict:
    """The doctor's figures for one bed (JSON-safe).

    Heart rate: mean = 60 / mean RR; min / max over running means of 8 RR intervals. An
    interval across a stretch without ECG (a data gap, lead off, signal loss) is no RR and
    is left out, and a running mean takes the 8 RR before it, as the rhythm rules do
    (:class:`beatwise.rhythm.RhythmMonitor`): so the lowest rate and a reported
    bradycardia (under 50 bpm) agree, as do the highest and a tachycardia (over 120). A
    bradycardia, tachycardia or pause that only an interval across such a stretch raised,
    or an asystole whose 4 s without a beat overlap one (logs of older monitors), is left
    out and counted in ``discarded``.
    HRV over normal-to-normal intervals (both beats N, L or R; 0.3-2.0 s): SDNN and RMSSD
    in ms (None under 3 intervals). Burden: share of the classified beats, %.
    Technical events (``technical``): lead off, signal loss, data gaps, ``unlogged`` (the
    monitor was down: :func:`_unlogged`) -- no ECG, their union is ``no_ecg_s`` -- and noisy
    signal (ECG of less trust), each with count, total and list.
    """
    beats = sorted(bed["beats"], key=lambda m: m["sample"])
    samples = np.array([m["sample"] for m in beats], np.int64)
    labels = [m["class"] for m in beats]
    n = len(beats)
    alerts = bed["alerts"]
    last = _last_sample(bed)
    restarts = bed.get("restarts", ())
    out: dict = {"bed": bed["bed"], "record": bed.get("record"), "beats": n}
    # from where the bed was joined (a late join's samples start past 0) to its last sample
    span = max(last - int(bed.get("first", 0)), 0) / FS
    out["span_s"] = round(span, 1)
    out["span"] = clock(span)

    technical = {
        k: _episodes(alerts, k, last, restarts) for k in ("lead_off", "signal_loss", "noisy_signal")
    }
    technical["data_gap"] = _gaps(alerts)
    technical["unlogged"] = _unlogged(restarts)
    no_ecg = _without_ecg(technical)
    out["no_ecg_s"] = round(_union(no_ecg) / FS, 1)

    rr = np.diff(samples) / FS
    measured = np.ones(len(rr), bool)
    for start, stop in no_ecg:  # RR i spans samples[i]..samples[i + 1]
        first = np.searchsorted(samples[1:], start, side="right")
        measured[first : np.searchsorted(samples[:-1], stop, side="left")] = False
    valid = rr[measured]
    hr_at: dict[int, float] = {}  # beat sample -> rate over the 8 RR before it, as the rules
    if len(valid):
        out["hr_mean_bpm"] = round(60.0 / float(np.mean(valid)), 1)
        k = min(_HR_BEATS, len(valid))
        run = np.convolve(valid, np.ones(k) / k, mode="valid")
        # To 0.1 bpm, the low down and the high up, as the reports print them: rounded, a
        # 49.96-bpm low read "50" beside a bradycardia (< 50), a 120.02 high "120" beside a
        # tachycardia (> 120).
        out["hr_min_bpm"] = bpm_tenths(60.0 / float(run.max()), up=False)
        out["hr_max_bpm"] = bpm_tenths(60.0 / float(run.min()), up=True)
        if k == _HR_BEATS:
            ends = samples[1:][measured][k - 1 :]
            hr_at = dict(zip(ends.tolist(), (60.0 / run).tolist()))
    else:
        out["hr_mean_bpm"] = out["hr_min_bpm"] = out["hr_max_bpm"] = None
    rr[~measured] = np.nan  # kept in place: the HRV pairs below stay beat to beat
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

    def events(kind: str) -> list[dict]:
        return [a for a in alerts if a["kind"] == kind and a["state"] in ("event", "onset")]

    def crosses_no_ecg(beat_sample: int, n_rr: int) -> bool:
        """Whether one of the ``n_rr`` RR intervals up to this beat crosses a stretch
        without ECG (False for a beat not in the log: nothing to correct)."""
        i = int(np.searchsorted(samples, beat_sample))
        if i >= n or samples[i] != beat_sample:
            return False
        return not measured[max(i - n_rr, 0) : i].all()

    paired: dict[str, list[dict]] = {}

    def episodes(kind: str) -> list[dict]:
        if kind not in paired:
            paired[kind] = _episodes(alerts, kind, last, restarts)
        return paired[kind]

    def runs(kind: str) -> list[dict]:
        return [
            {**_row(e), "beats": e["detail"].get("beats"), "rate_bpm": e["detail"].get("rate_bpm")}
            for e in episodes(kind)
        ]

    out["v_beats"] = out["pvc_beats"] = counts["V"]
    out["isolated_pvcs"] = len(events("pvc"))
    out["couplets"] = len(events("couplet"))
    out["vtach_runs"] = runs("vtach")
    out["ventricular_runs"] = runs("vrun")
    out["svt_runs"] = runs("svt")
    out["svpb_events"] = len(events("svpb"))
    discarded: dict[str, int] = {}
    pauses = []
    for a in events("pause"):  # beat_sample: the beat that ends the pause
        if a.get("beat_sample") is not None and crosses_no_ecg(int(a["beat_sample"]), 1):
            discarded["pause"] = discarded.get("pause", 0) + 1
            continue
        pauses.append(
            {
                "at": clock(a["sample"] / FS),
                "at_s": round(a["sample"] / FS, 2),
                "duration_s": a["detail"].get("duration_s"),
            }
        )
    out["pauses"] = pauses
    out["episodes"] = {}
    for kind in _OTHER_EPISODES:
        eps = episodes(kind)
        holds = _HR_EPISODES.get(kind)
        if holds is not None:  # the rate the rules saw, without RR across no-ECG stretches
            keep = [
                e
                for e in eps
                if not crosses_no_ecg(e["onset_sample"], _HR_BEATS)
                or (e["onset_sample"] in hr_at and holds(hr_at[e["onset_sample"]]))
            ]
        elif kind == "asystole":  # its 4 s without a beat must have been 4 s of ECG
            keep = [
                e
                for e in eps
                if not any(
                    a < e["onset_sample"] and b > e["onset_sample"] - _ASYSTOLE_S * FS
                    for a, b in no_ecg
                )
            ]
        else:
            keep = eps
        if len(keep) < len(eps):
            discarded[kind] = len(eps) - len(keep)
        eps = keep
        out["episodes"][kind] = [_row(e) for e in eps]
    out["discarded"] = discarded
    # The rules report no PVC event for a lone V beat while bigeminy / trigeminy is on.
    v = samples[np.array([c == "V" for c in labels], bool)] if n else samples
    in_pattern = np.zeros(len(v), bool)
    for e in episodes("bigeminy") + episodes("trigeminy"):  # the end beat breaks the pattern
        in_pattern[slice(*np.searchsorted(v, [e["onset_sample"], e["end_sample"]]))] = True
    out["v_beats_in_bigeminy_trigeminy"] = int(in_pattern.sum())

    out["technical"] = {}
    for kind in _TECHNICAL:
        rows = []
        for e in technical[kind]:
            r = _row(e)
            if kind == "signal_loss":  # the sample clock stands still while nothing comes
                r["wall_clock"] = e["stated"]
                r["samples_lost_s"] = round((e["end_sample"] - e["onset_sample"]) / FS, 2)
            if kind == "data_gap":
                r["new_session"] = bool(e["detail"].get("new_session"))
            rows.append(r)
        out["technical"][kind] = {
            "count": len(rows),
            "total_s": round(sum(e["duration_s"] for e in technical[kind]), 1),
            "episodes": rows,
        }
    out["data_gaps"] = len(technical["data_gap"])
    out["alert_counts"] = {k: len(events(k)) for k in NAMES if events(k)}
    return out


def patient_summary(s: dict) -> dict:
    """Plain-language lines for the patient, from :func:`bed_summary`."""
    lines = [
        f"Your heart was watched for {_spoken(s['span_s'])}; we counted "
        f"{_plural(s['beats'], 'heartbeat')}."
    ]
    if s.get("no_ecg_s"):
        lines.append(
            f"For {_spoken(s['no_ecg_s'])} in all, the monitor got no usable signal (for "
            "example while a sensor was loose or the connection dropped), so those "
            "stretches could not be checked."
        )
    findings = []
    if s["hr_mean_bpm"] is not None:
        lines.append(
            f"Your average heart rate was {s['hr_mean_bpm']:.0f} beats a minute "
            f"(lowest {math.floor(s['hr_min_bpm'])}, highest {math.ceil(s['hr_max_bpm'])})."
        )
    extra_v, extra_a = s["counts"]["V"], s["counts"]["A"]
    pct_v, pct_a = s["burden_pct"]["V"], s["burden_pct"]["A"]
    if extra_v:
        findings.append(
            f"{_plural(extra_v, 'beat')} ({_pct(pct_v)}) started early in the lower "
            "chambers of the heart (extra beats). "
            + (
                "Many people have a few."
                if pct_v < 1.0
                else "That is more than usual; your doctor will look at it."
            )
        )
    if extra_a:
        findings.append(
            f"{_plural(extra_a, 'beat')} ({_pct(pct_a)}) started early in the upper chambers."
        )
    n = len(s["vtach_runs"])
    if n:
        findings.append(
            f"There {'was' if n == 1 else 'were'} {_plural(n, 'short spell')} of a fast "
            "rhythm from the lower chambers. Your doctor will look at "
            f"{'it' if n == 1 else 'these'} closely."
        )
    n = len(s["svt_runs"])
    if n:
        findings.append(
            f"There {'was' if n == 1 else 'were'} {_plural(n, 'spell')} of a fast rhythm "
            "from the upper chambers."
        )
    eps = s["episodes"]
    if eps["brady"]:
        findings.append(
            f"Your heart beat slower than 50 beats a minute {_times(len(eps['brady']))}. "
            "Your doctor will look at this."
        )
    if eps["tachy"]:
        findings.append(
            f"Your heart beat faster than 120 beats a minute {_times(len(eps['tachy']))}."
        )
    if eps["asystole"]:
        findings.append(
            f"Your heart stopped beating for 4 seconds or more {_times(len(eps['asystole']))}. "
            "Your doctor will look at this closely."
        )
    if s["pauses"]:
        findings.append(f"Your heart paused for more than 2 seconds {_times(len(s['pauses']))}.")
    # Conduction patterns only when they dominate: a few misclassified beats say nothing.
    if eps["paced"] or s["burden_pct"]["/"] >= 20:
        findings.append(
            "Your pacemaker was setting the pace of your heart for much of the recording."
        )
    bbb = s["burden_pct"]["L"] + s["burden_pct"]["R"]
    if bbb >= 20:
        findings.append(
            "Many of your heartbeats show a pattern called bundle branch block: the signal "
            "spreads through the heart by a slower path. Your doctor will say what it "
            "means for you."
        )
    lines += findings or ["We found nothing unusual."]
    lines.append(
        "This report was made by a computer program. Please talk it over with your doctor; "
        "it is not a diagnosis."
    )
    return {"bed": s["bed"], "lines": lines}


def _when(row: dict) -> str:
    """What to add to an episode's duration: why it is not a plain one."""
    notes = []
    if row["at_least"]:
        notes.append("at least: the end gave no duration")
    if row["ongoing"]:
        notes.append("ongoing at end of recording")
    elif not row["end_logged"]:
        notes.append("end not logged")
    return "; ".join(notes)


def _lasted(duration_s: float | None, note: str) -> str:
    """``20.0 s``, or ``20.0 s (note)``."""
    return _secs(duration_s) + (f" ({note})" if note else "")


def _doctor_md(s: dict, strips: list[str]) -> str:
    hr = lambda v: "--" if v is None else f"{v:.0f}"  # noqa: E731
    # min down, max up: a 49.6-bpm low must not read "50" beside a bradycardia (< 50)
    lo = lambda v: "--" if v is None else f"{math.floor(v)}"  # noqa: E731
    hi = lambda v: "--" if v is None else f"{math.ceil(v)}"  # noqa: E731
    val = lambda v: "--" if v is None else f"{v}"  # noqa: E731
    span = s["span_s"]
    no_ecg = s.get("no_ecg_s") or 0.0
    hrv = (
        f"- HRV (NN intervals, n={s['nn_intervals']}): SDNN {s['sdnn_ms']} ms, "
        f"RMSSD {s['rmssd_ms']} ms"
        if s["sdnn_ms"] is not None
        else f"- HRV: not enough normal-to-normal intervals (n={s['nn_intervals']}, 3 needed)"
    )
    eps = s["episodes"]
    vent = (
        f"- Ventricular beats (class V): {s['v_beats']}. Events: "
        f"{_plural(s['isolated_pvcs'], 'isolated PVC')}, {_plural(s['couplets'], 'couplet')}, "
        f"{_plural(len(s['vtach_runs']), 'V-tach run')}, "
        f"{_plural(len(s['ventricular_runs']), 'slow ventricular run')}"
    )
    if eps["bigeminy"] or eps["trigeminy"]:
        vent += (
            f". {_plural(s['v_beats_in_bigeminy_trigeminy'], 'V beat')} fell within bigeminy / "
            "trigeminy episodes: counted as beats, not as separate PVC events"
        )
    rows = [
        f"# Doctor's report — bed {s['bed']} ({s.get('record') or 'unknown record'})",
        "",
        f"- Recording span: {s['span']} ({span} s), {s['beats']} beats classified",
        f"- Without ECG (lead off, signal loss, data gaps, monitor down): {_secs(no_ecg)}"
        + (f" ({100 * no_ecg / span:.1f}% of the span)" if span and no_ecg else ""),
        f"- Heart rate: mean {hr(s['hr_mean_bpm'])}, min {lo(s['hr_min_bpm'])}, "
        f"max {hi(s['hr_max_bpm'])} bpm (min/max over running means of 8 RR; no RR across "
        "a stretch without ECG)",
        hrv,
        vent,
        f"- Supraventricular premature beats: {s['counts']['A']} "
        f"({s['svpb_events']} outside SVT runs)",
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
            rows += ["| onset | beats | rate bpm | duration |", "|---|---:|---:|---|"]
            rows += [
                f"| {r['onset']} | {val(r['beats'])} | {val(r['rate_bpm'])} | "
                f"{_lasted(r['duration_s'], _when(r))} |"
                for r in s[key][:50]
            ]
            rows.append("")
    rows += [f"## Pauses (RR > 2 s): {len(s['pauses'])}", ""]
    rows += [f"- {p['at']}: {_secs(p['duration_s'])}" for p in s["pauses"][:50]]
    rows += ["", "## Other episodes", ""]
    for k, found in eps.items():
        if found:
            ongoing = sum(e["ongoing"] for e in found)
            rows.append(
                f"- {NAMES[k]} ({SEVERITY[k]}): {_plural(len(found), 'episode')}, "
                f"{_secs(sum(e['duration_s'] for e in found))} in all; first at "
                f"{found[0]['onset']}"
                + (f"; {ongoing} ongoing at end of recording" if ongoing else "")
            )
    for k, m in s.get("discarded", {}).items():
        rows.append(
            f"- {NAMES[k]}: {_plural(m, 'alert')} left out (counted a stretch without ECG as "
            "time between beats)"
        )
    rows += _technical_md(s)
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


def _technical_md(s: dict) -> list[str]:
    """The "Signal quality / technical events" section of the doctor's report."""
    tech = s["technical"]
    listed = sorted(
        ((r["onset_s"], k, r) for k in _TECHNICAL for r in tech[k]["episodes"]),
        key=lambda x: x[0],
    )
    rows = ["", f"## Signal quality / technical events: {len(listed)}", ""]
    if not listed:
        return rows
    rows += [
        "No ECG during lead off, signal loss, data gaps and while the monitor was down (not "
        "monitored); noisy signal: "
        "beats still classified, rhythm alerts of that stretch less trustworthy.",
        "",
        "| event | count | total |",
        "|---|---:|---:|",
    ]
    rows += [
        f"| {_TECH_NAMES[k]} | {tech[k]['count']} | {_secs(tech[k]['total_s'])} |"
        for k in _TECHNICAL
        if tech[k]["count"]
    ]
    rows += ["", "| onset | event | duration |", "|---|---|---|"]
    for _, k, r in listed[:50]:
        note = _when(r)
        if k == "signal_loss":
            clock_note = "wall clock" if r["wall_clock"] else ""
            lost = r["samples_lost_s"]
            lost_note = f"{_secs(lost)} of ECG lost" if lost > 0 else "no ECG lost"
            if r["ongoing"]:
                lost_note = ""  # nothing came after it: how much was lost is unknown
            note = "; ".join(x for x in (clock_note, lost_note, note) if x)
        elif k == "data_gap" and r["new_session"]:
            note = "not bridged: a new session began"
        rows.append(f"| {r['onset']} | {_TECH_NAMES[k]} | {_lasted(r['duration_s'], note)} |")
    if len(listed) > 50:
        rows.append(f"\n{len(listed) - 50} more in doctor.json.")
    return rows


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
    ax.set_title(f"bed {strip['bed']}: {NAMES.get(strip['kind'], strip['kind'])} at {clock(at)}")
    ax.grid(True, color="#f4a0a0", lw=0.4)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


_SYMBOL = {"N": "N", "L": "L", "R": "R", "A": "A", "V": "V", "/": "/"}


def write_annotations(bed: dict, out_dir: str | Path, *, extension: str = "bwa") -> Path | None:
    """The bed's beats as a WFDB annotation file ``<record name>.<extension>`` (360 Hz
    record samples). Returns the path, or None when there are no beats.

    A looped replay (``--loop``) goes through the record again and again; an annotation
    file holds one pass, so it holds the first (up to the first beat whose record sample
    is not after the one before), and the log says how many beats were left out.
    """
    import wfdb

    beats = sorted(bed["beats"], key=lambda m: m["sample"])
    if not beats:
        return None
    name = (bed.get("record") or bed["bed"]).rpartition("/")[2]
    samples = np.array([m.get("record_sample", m["sample"]) for m in beats], np.int64)
    back = np.flatnonzero(np.diff(samples) <= 0)
    if len(back):  # the record started over
        log.warning(
            "bed %s: %s.%s holds the first pass through the record (%d beats); %d beats of "
            "later passes left out",
            bed["bed"],
            name,
            extension,
            back[0] + 1,
            len(beats) - back[0] - 1,
        )
        beats, samples = beats[: back[0] + 1], samples[: back[0] + 1]
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
        if not isinstance(name, str) or not BED_NAME.fullmatch(name):
            # the name becomes a folder: '../x' would write outside ``out_dir``
            log.warning(
                "bed %r: no report (expected a bed name of 1-64 letters, digits, '_' or '-', "
                "as the protocol allows)",
                name,
            )
            continue
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
            at = _whole_s(st.get("sample", st["start_sample"]) / FS)
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
