"""The stream gives exactly the offline answer: replay -> consumer -> subscriber over real
ZeroMQ (ipc endpoints in a temporary folder), at speed max."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest

from beatwise.bedside import RuleClassifier, run_offline, warm_up
from replay import BedSource, ReplayPublisher, load_beds
from stream import StreamConsumer, Subscriber
from tests.sources import FakeSource, ecg, endpoints

TRANSPORT = {"data_gap", "signal_loss"}


def live_run(beds, classifier, tmp_path, *, speed=math.inf, **consumer_kw):
    """Publisher and consumer in threads, a subscriber here; all messages until the end."""
    ep = endpoints(tmp_path)
    pub = ReplayPublisher(
        beds, endpoint=ep["data"], control=ep["ctl"], speed=speed, handshake_timeout_s=30
    )
    con = StreamConsumer(
        classifier,
        connect=ep["data"],
        control=ep["ctl"],
        publish=ep["out"],
        publish_control=ep["octl"],
        wait_subscribers=1,
        **consumer_kw,
    )
    errors = []

    def guard(fn):
        def run():
            try:
                fn()
            except Exception as exc:  # surfaced below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guard(pub.run)), threading.Thread(target=guard(con.run))]
    for t in threads:
        t.start()
    msgs = []
    with Subscriber(ep["out"], ep["octl"], flow=True) as sub:
        ended = set()
        while len(ended) < len(beds):
            m = sub.recv(timeout_s=30)
            assert m is not None, "stream stalled"
            msgs.append(m)
            ended |= {b.bed for b in beds if con.beds.get(b.bed) and con.beds[b.bed].ended}
        # the last messages of the last bed
        while (m := sub.recv(timeout_s=1.0)) is not None:
            msgs.append(m)
        gaps = sub.gaps
    for t in threads:
        t.join(60)
    assert not errors, errors
    return msgs, pub.stats, con.stats, gaps


def assert_same(msgs, bed: BedSource, classifier):
    off = run_offline(bed.signal, classifier)
    got = [m for m in msgs if m["type"] == "beat" and m["bed"] == bed.bed]
    assert [m["seq"] for m in got] == list(range(len(got)))
    assert [(m["sample"], m["class"]) for m in got] == [
        (o["sample"], o["class"]) for o in off.beats
    ]
    assert np.allclose([m["probs"] for m in got], [o["probs"] for o in off.beats], atol=1e-5)
    assert [m["rr_s"] for m in got] == [o["rr_s"] for o in off.beats]
    alerts = [m for m in msgs if m["type"] == "alert" and m["bed"] == bed.bed]
    assert [m["seq"] for m in alerts] == list(range(len(alerts)))
    live = sorted(
        (m["kind"], m["state"], m["sample"], m["beat_sample"], str(m["detail"]))
        for m in alerts
        if m["kind"] not in TRANSPORT
    )
    ref = sorted((a.kind, a.state, a.sample, a.beat_sample, str(a.detail)) for a in off.alerts)
    assert live == ref
    assert not [m for m in alerts if m["kind"] in TRANSPORT]
    return got, alerts


@pytest.mark.usefixtures("mitdb")
def test_stream_equals_offline_at_speed_max(tmp_path):
    beds = load_beds("mitdb", ["208"], duration_s=240)
    clf = RuleClassifier()
    msgs, pstats, cstats, gaps = live_run(beds, clf, tmp_path)
    got, alerts = assert_same(msgs, beds[0], clf)
    assert len(got) > 250 and {"pvc", "svpb", "trigeminy"} <= {a["kind"] for a in alerts}
    assert cstats.samples["208"] == pstats.samples["208"] == len(beds[0].signal)
    assert cstats.lost_samples["208"] == 0 and cstats.gaps["208"] == 0 and gaps == 0


@pytest.mark.usefixtures("mitdb")
def test_several_beds_each_unaffected_by_the_others(tmp_path):
    # 232 from 20 min on holds pauses > 4 s: asystole declared by the sample clock live,
    # by the late beat offline -- the same alerts either way.
    beds = load_beds("mitdb", ["203", "119", "232@1200"], start_s=60, duration_s=120)
    clf = RuleClassifier()
    msgs, pstats, cstats, gaps = live_run(beds, clf, tmp_path)
    for bed in beds:
        _, alerts = assert_same(msgs, bed, clf)
        assert cstats.samples[bed.bed] == len(bed.signal)
        if bed.bed == "232":
            assert any(a["kind"] == "asystole" for a in alerts)
    # the start offset reaches the beat messages as record samples
    beat = next(m for m in msgs if m["type"] == "beat" and m["bed"] == "119")
    assert beat["record_sample"] == beat["sample"] + 60 * 360
    assert gaps == 0 and sum(cstats.lost_samples.values()) == 0


@pytest.mark.usefixtures("mitdb")
def test_stream_equals_offline_with_a_torchscript_model(tmp_path):
    export = pytest.importorskip("beatwise.model.export")
    infer = pytest.importorskip("beatwise.model.infer")
    path = export.make_untrained(tmp_path / "untrained.pt")
    clf = infer.Classifier.load(path)
    beds = load_beds("mitdb", ["203"], duration_s=60)
    msgs, *_ = live_run(beds, clf, tmp_path)
    assert_same(msgs, beds[0], clf)


SHIPPED = Path(__file__).resolve().parents[1] / "models" / "beatwise_interpatient.pt"


@pytest.mark.usefixtures("mitdb")
@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped model yet")
def test_stream_equals_offline_with_the_shipped_model(tmp_path):
    from beatwise.model.infer import Classifier

    clf = Classifier.load(SHIPPED)
    beds = load_beds("mitdb", ["203", "232@1200"], duration_s=90)
    msgs, *_ = live_run(beds, clf, tmp_path)
    for bed in beds:
        assert_same(msgs, bed, clf)


def test_warm_up_runs_beats_through_every_stage():
    """The consumer's warm-up must reach the classifier, the rhythm rules and the end of a
    stream, or it warms nothing."""
    res = warm_up(RuleClassifier())
    assert len(res.beats) >= 8 and {b["class"] for b in res.beats} == {"N"}
    assert res.alerts == []


def _consume(tmp_path, feed, **consumer_kw):
    """A consumer (RR rules) on a fake source that ``feed(src)`` drives to its end; returns
    the consumer and what its listener heard."""
    src = FakeSource(tmp_path)
    events = []
    con = StreamConsumer(
        RuleClassifier(),
        connect=src.ep["data"],
        control=src.ep["ctl"],
        publish=None,
        listeners=[events.append],
        **consumer_kw,
    )
    t = threading.Thread(target=con.run, kwargs={"max_duration_s": 20})
    t.start()
    src.handshake()
    feed(src)
    t.join(30)
    src.close()
    return con, events


def test_sequence_gap_is_counted_filled_and_alerted(tmp_path):
    def feed(src):
        x = np.zeros(36, np.float32)
        src.send("b1", 0, 0, x)
        src.send("b1", 1, 36, x)
        src.send("b1", 4, 144, x)  # seq 2 and 3 lost
        src.end("b1", 5, 180)

    con, events = _consume(tmp_path, feed)
    gaps = [e for e in events if e.get("type") == "alert" and e["kind"] == "data_gap"]
    assert len(gaps) == 1 and gaps[0]["detail"] == {"missing_messages": 2, "missing_samples": 72}
    assert con.stats.gaps["b1"] == 1 and con.stats.lost_samples["b1"] == 72
    assert con.beds["b1"].side.n_samples == 180  # the sample clock stayed true


def test_a_jump_too_long_to_bridge_is_alerted_counted_and_opens_a_new_session(tmp_path):
    def feed(src):
        x = np.zeros(36, np.float32)
        src.send("b1", 0, 0, x)
        src.send("b1", 20, 720, x)  # seq 1-19 lost: 684 samples, beyond max_fill_s (180)
        src.end("b1", 21, 756)

    con, events = _consume(tmp_path, feed, max_fill_s=0.5)
    gaps = [e for e in events if e.get("type") == "alert" and e["kind"] == "data_gap"]
    assert [g["detail"] for g in gaps] == [
        {"missing_messages": 19, "missing_samples": 684, "new_session": True}
    ]
    assert con.stats.gaps["b1"] == 1 and con.stats.lost_samples["b1"] == 684
    sessions = [e["first_sample"] for e in events if e.get("type") == "bed"]
    assert sessions == [0, 720]  # not filled: the bed's session closed, a new one opened


def test_beat_times_are_on_the_published_sample_clock(tmp_path):
    """A consumer that joins a stream 100 s in publishes sample 36000 + i at 100 s + i/360."""

    def feed(src):
        for k in range(30):
            src.send("b1", k, 36000 + 360 * k, ecg(360))
        src.end("b1", 30, 36000 + 360 * 30)

    _, events = _consume(tmp_path, feed)
    beats = [e for e in events if e.get("type") == "beat"]
    assert len(beats) > 20 and all(b["sample"] >= 36000 for b in beats)
    assert all(b["time_s"] == round(b["sample"] / 360, 4) for b in beats)


def test_a_gap_is_filled_flat_then_ramps_to_the_data_that_resumes(tmp_path):
    """Flat, so a long gap reads as a flat stretch (no asystole, no heart rate across it);
    no step where the data resumes, which the detector would take for a QRS complex."""

    def feed(src):
        src.send("b1", 0, 0, np.zeros(36, np.float32))
        src.send("b1", 11, 396, np.ones(36, np.float32))  # seq 1-10 lost: 360 samples
        src.end("b1", 12, 432)

    con, events = _consume(tmp_path, feed)
    x = np.concatenate([e["x"] for e in events if e.get("type") == "samples"])
    assert len(x) == 432 and con.stats.lost_samples["b1"] == 360
    fill = x[36:396]
    assert np.all(fill[:270] == 0.0)
    assert np.all(np.diff(fill[270:]) > 0) and 0.0 < fill[-1] < 1.0


class ManualClock:
    """A clock the test moves by hand: signal loss is decided on it, not on wall time."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def until(cond) -> bool:
    """Poll ``cond`` (a safety bound of 10 s only; nothing here is timed)."""
    ev = threading.Event()
    for _ in range(500):
        if cond():
            return True
        ev.wait(0.02)
    return False


def test_signal_loss_onset_and_end(tmp_path):
    src = FakeSource(tmp_path)
    events = []
    clock = ManualClock()
    con = StreamConsumer(
        RuleClassifier(),
        connect=src.ep["data"],
        control=src.ep["ctl"],
        publish=None,
        listeners=[events.append],
        signal_loss_s=2.0,
        clock=clock,
    )

    def loss():
        return [
            e["state"] for e in events if e.get("type") == "alert" and e["kind"] == "signal_loss"
        ]

    t = threading.Thread(target=con.run, kwargs={"max_duration_s": 60})
    t.start()
    src.handshake()
    x = np.zeros(36, np.float32)
    src.send("b1", 0, 3600, x)  # joined 10 s into the stream
    assert until(lambda: con.stats.messages >= 1)
    assert loss() == []
    clock.now += 2.1  # 2.1 s of the consumer's clock without samples
    assert until(lambda: loss() == ["onset"])
    clock.now += 3.0  # 5.1 s without samples in all
    src.send("b1", 1, 3636, x)
    src.end("b1", 2, 3672)
    t.join(30)
    src.close()
    assert loss() == ["onset", "end"]
    # the end says when the loss began and how long it lasted (wall clock: the sample
    # clock stands still while nothing comes)
    onset, end = (e for e in events if e.get("type") == "alert" and e["kind"] == "signal_loss")
    assert onset["sample"] == 3636  # on the published clock, as the end's onset_sample
    assert end["detail"] == {"onset_sample": onset["sample"], "duration_s": 5.1}


@pytest.mark.usefixtures("mitdb")
def test_alerts_command_prints_filtered_alerts(tmp_path, capsys):
    import json

    from beatwise.cli import main

    ep = endpoints(tmp_path)
    beds = load_beds("mitdb", ["208"], duration_s=120)
    pub = ReplayPublisher(beds, endpoint=ep["data"], control=ep["ctl"], speed=math.inf)
    con = StreamConsumer(
        RuleClassifier(),
        connect=ep["data"],
        control=ep["ctl"],
        publish=ep["out"],
        publish_control=ep["octl"],
        wait_subscribers=1,
    )
    threads = [
        threading.Thread(target=pub.run, daemon=True),
        threading.Thread(target=con.run, daemon=True),
    ]
    for t in threads:
        t.start()
    assert con.bound.wait(10)
    rc = main(
        [
            "alerts",
            "--connect",
            ep["out"],
            "--control",
            ep["octl"],
            "--bed",
            "208",
            "--kind",
            "pvc",
            "--json",
            "--count",
            "5",
        ]
    )
    for t in threads:
        t.join(30)
    assert rc == 0
    got = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(got) == 5 and {(m["bed"], m["kind"]) for m in got} == {("208", "pvc")}
    assert [m["seq"] for m in got] == sorted(m["seq"] for m in got)


def test_the_library_never_imports_replay_or_stream():
    import subprocess
    import sys

    code = (
        "import sys, beatwise.cli, beatwise.bedside, beatwise.report, beatwise.rhythm; "
        "beatwise.cli.build_parser(); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('replay', 'stream', 'zmq')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_recent_keeps_the_latest_values_in_arrival_order():
    from stream.stats import Recent

    r = Recent(3)
    assert len(r) == 0 and np.asarray(r).tolist() == []
    for v in range(5):
        r.append(v)
    assert len(r) == 3 and list(r) == [2, 3, 4] and np.asarray(r).tolist() == [2, 3, 4]
    assert r.last(2).tolist() == [3, 4] and r.last(10).tolist() == [2, 3, 4]


@pytest.mark.usefixtures("mitdb")
def test_a_looped_record_gives_record_samples_within_the_record(tmp_path):
    """With --loop the stream index keeps counting; the beats' record_sample wraps with the
    record, so a .bwa annotation or a look-up in the record lands on the right beat."""
    ep = endpoints(tmp_path)
    (src,) = load_beds("mitdb", ["100@60"], duration_s=20)
    length = len(src.signal)
    pub = ReplayPublisher([src], endpoint=ep["data"], control=ep["ctl"], speed=math.inf, loop=True)
    stop, beats, headers = threading.Event(), [], []

    def take(m):
        if m.get("type") == "beat":
            beats.append(m)
            if m["sample"] > 2.5 * length:
                stop.set()
        elif m.get("type") == "bed":
            headers.append(m)

    t = threading.Thread(target=pub.run, kwargs={"stop": stop}, daemon=True)
    t.start()
    con = StreamConsumer(
        RuleClassifier(), connect=ep["data"], control=ep["ctl"], publish=None, listeners=[take]
    )
    con.run(max_duration_s=60)
    t.join(10)
    assert headers[0]["loop_samples"] == length and headers[0]["record_offset"] == 60 * 360
    rs = np.array([b["record_sample"] for b in beats])
    s = np.array([b["sample"] for b in beats])
    assert s.max() > 2.5 * length
    assert np.all((rs >= 60 * 360) & (rs < 60 * 360 + length))
    assert np.all((s - (rs - 60 * 360)) % length == 0)


@pytest.mark.parametrize("how", ["long gap", "restart"])
def test_a_session_closed_during_a_signal_loss_ends_the_loss(tmp_path, how):
    """Found by review: data resuming past max_fill_s, or a source restarted from its
    start, closed the bed's session without ending its signal_loss; the monitor then read
    'Signal loss' and no rate while beats flowed."""
    from stream.monitor import Monitor

    src, events, clock = FakeSource(tmp_path), [], ManualClock()
    mon = Monitor(clock=clock)
    con = StreamConsumer(
        RuleClassifier(),
        connect=src.ep["data"],
        control=src.ep["ctl"],
        publish=None,
        listeners=[events.append, mon],
        signal_loss_s=1.5,
        clock=clock,
    )

    t = threading.Thread(target=con.run, kwargs={"max_duration_s": 10_000})
    t.start()
    src.handshake()
    x = ecg(20 * 360)
    for k in range(100):  # 10 s of ECG
        src.send("b1", k, 36 * k, x[36 * k : 36 * k + 36])
    assert until(lambda: con.stats.messages >= 100)
    clock.now += 2.0
    assert until(lambda: any(e.get("kind") == "signal_loss" for e in events))
    clock.now += 40.0
    seq0, first0 = (500, 3600 + 40 * 360) if how == "long gap" else (0, 0)
    if how == "restart":
        src.stream = "s2"
    for k in range(100):
        src.send("b1", seq0 + k, first0 + 36 * k, x[36 * k : 36 * k + 36])
    src.end("b1", seq0 + 100, first0 + 3600)
    t.join(30)
    src.close()
    loss = [e for e in events if e.get("type") == "alert" and e["kind"] == "signal_loss"]
    assert [e["state"] for e in loss] == ["onset", "end"]
    assert loss[1]["detail"] == {"onset_sample": loss[0]["sample"], "duration_s": 42.0}
    view = mon.beds["b1"]
    assert "signal_loss" not in view.active and view.rate is not None


def test_a_restarted_looping_source_maps_beats_to_its_own_record_samples(tmp_path):
    """Found by review: after a bridged restart the bed kept the first run's record offset
    and loop, so every beat of the new run named a wrong record sample."""
    x = ecg(20 * 360)

    def feed(src):
        run1 = {"record_offset": 0, "loop_samples": 7200}
        for k in range(100):  # 10 s from record sample 0, looping every 20 s
            src.send("b1", k, 36 * k, x[36 * k : 36 * k + 36], **run1)
        src.stream = "s2"  # restarted at record sample 5400, looping every 5 s
        run2 = {"record_offset": 5400, "loop_samples": 1800}
        for k in range(100):
            src.send("b1", k, 36 * k, x[36 * k : 36 * k + 36], **run2)
        src.end("b1", 100, 3600)

    _, events = _consume(tmp_path, feed)
    assert [e["detail"]["missing_samples"] for e in events if e.get("kind") == "data_gap"] == [1800]
    after = [e for e in events if e.get("type") == "beat" and e["sample"] >= 5400]
    assert len(after) >= 8
    for b in after:  # our sample 5400 + j is the new run's stream sample j
        assert b["record_sample"] == 5400 + (b["sample"] - 5400) % 1800


@pytest.mark.parametrize("gap_after", [324, 396])
def test_a_lead_off_around_an_outage_is_announced_once_and_never_for_the_fill(
    record, tmp_path, gap_after
):
    # found by review (stop 14): the consumer muted a lead off whose first second held the
    # gap's fill, a real one with an outage just after it too; left alone at stop 16 and
    # found again: a lead that stayed off after that outage was never announced at all
    fs, n = 360, 36
    y = np.array(record("mitdb", "100").signal[: 40 * fs], np.float32)
    at = 20 * fs  # the lead comes off and stays off
    y[at:] = y[at - 1]
    g0, g1 = at + gap_after, at + gap_after + 5 * fs  # messages lost: 5 s

    def feed(src):
        for k in range(len(y) // n):
            if not g0 <= k * n < g1:
                src.send("b1", k, k * n, y[k * n : (k + 1) * n])
        src.end("b1", len(y) // n, len(y))

    _, events = _consume(tmp_path, feed)
    lead = [(e["state"], e["sample"]) for e in events if e.get("kind") == "lead_off"]
    # gap within the lead off's first second: the flat second is the fill's, and the lead
    # off is raised a second after it, from the first 0.25-s block after the fill
    onset = at if gap_after >= fs else -(-g1 // 90) * 90
    assert lead == [("onset", onset), ("end", len(y))]
