"""Faults and bad input over real sockets: every message accounted for, nothing accepted lost.

Loopback ZeroMQ (ipc endpoints in a temporary folder); the publisher and consumer restarts
use real child processes killed with SIGKILL. Nothing here is timed: waits are bounded only
so that a broken build fails instead of hanging.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import Counter

import numpy as np
import pytest

from beatwise.bedside import RuleClassifier
from beatwise.protocol import MAX_SAMPLES, REASONS
from beatwise.report import read_log
from replay import BedSource, ReplayPublisher, load_beds
from stream import StreamConsumer, Subscriber
from stream.proxy import Proxy
from tests.sources import FakeSource, ecg, endpoints

CHUNK = 360


def wait_until(cond, *, bound_s: float = 60.0) -> bool:
    """Poll ``cond`` (a safety bound only: the tests assert outcomes, not durations)."""
    ev = threading.Event()
    for _ in range(int(bound_s / 0.02)):
        if cond():
            return True
        ev.wait(0.02)
    return False


def start(target, **kw) -> threading.Thread:
    errors: list[BaseException] = []

    def run():
        try:
            target(**kw)
        except BaseException as exc:  # surfaced by the test through t.errors
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.errors = errors
    t.start()
    return t


def consumer(src_ep: dict, events: list, **kw) -> StreamConsumer:
    return StreamConsumer(
        RuleClassifier(),
        connect=src_ep["data"],
        control=src_ep["ctl"],
        publish=kw.pop("publish", None),
        listeners=[events.append],
        **kw,
    )


# -- bad input ---------------------------------------------------------------------------


def malformed(rng: np.random.Generator, src: FakeSource, bed: str, seq: int, first: int):
    """One malformed message aimed at ``bed`` (whose next good message is ``seq``): its
    frames and the reason the consumer must give. None of them may move the bed's state."""
    x = ecg(CHUNK)
    kind = REASONS_SENT[rng.integers(len(REASONS_SENT))]
    good = src.frames(bed, seq, first, x)
    h = json.loads(good[1])
    if kind == "frames":
        return [good[:2], [*good, b"x"], good[:1]][rng.integers(3)], kind
    if kind == "json":
        return [good[0], bytes(rng.integers(0, 256, 20, dtype=np.uint8)) + b"{", good[2]], kind
    if kind == "version":
        h["v"] = int(rng.integers(2, 9))
    elif kind == "header":  # the fields every message needs, and the optional ones read
        keys = ["seq", "first_sample", "record_offset", "loop_samples", "sent_at", "speed"]
        h[keys[rng.integers(len(keys))]] = [-1, "7", True, [1], {"x": 1}][rng.integers(5)]
    elif kind == "bed":
        topic = [b"ecg.", b"ecg.a b", b"ecg.x.y", b"ecg." + b"z" * 70, b"ecg.\xff"][rng.integers(5)]
        return [topic, good[1], good[2]], kind
    elif kind == "fs":
        h["fs"] = [0, -1, 1e9, 128, "360", None][rng.integers(6)]
    elif kind == "size":
        cut = int(rng.integers(1, 4 * CHUNK))
        return [good[0], good[1], good[2][:-cut]], kind
    elif kind == "non_finite":
        y = x.copy()
        y[rng.integers(CHUNK)] = [np.nan, np.inf, -np.inf][rng.integers(3)]
        return src.frames(bed, seq, first, y), kind
    elif kind == "seq":  # a repeat of an earlier good message
        return src.frames(bed, int(rng.integers(seq)), first - CHUNK, x), kind
    elif kind == "unknown_bed":
        return src.frames("intruder", seq, first, x), kind
    return [good[0], json.dumps(h).encode(), good[2]], kind


REASONS_SENT = (
    "frames",
    "json",
    "version",
    "header",
    "bed",
    "fs",
    "size",
    "non_finite",
    "seq",
    "unknown_bed",
)


def test_ten_thousand_malformed_messages_each_refused_and_counted(tmp_path):
    assert set(REASONS_SENT) <= set(REASONS)
    rng = np.random.default_rng(5)
    src = FakeSource(tmp_path)
    events: list[dict] = []
    con = consumer(src.ep, events)
    t = start(con.run, max_duration_s=300)
    beds = ["g1", "g2", "g3"]
    src.handshake(beds)
    seq = dict.fromkeys(beds, 0)
    n_good, n_bad, sent = 100, 10_000, Counter()
    sig = ecg(n_good * CHUNK)  # 75 bpm
    # the good messages of three beds, with the malformed ones scattered among them
    slots = rng.permutation(np.r_[np.zeros(n_good * len(beds), int), np.ones(n_bad, int)])
    order = iter(np.tile(np.arange(len(beds)), n_good))
    for bad in slots:
        if bad:
            bed = beds[rng.integers(len(beds))]
            if seq[bed] == 0:
                bed = next(b for b in beds if seq[b] > 0) if any(seq.values()) else bed
            frames, reason = malformed(rng, src, bed, seq[bed], seq[bed] * CHUNK)
            if reason == "seq" and seq[bed] == 0:
                continue  # nothing to repeat yet
            src.raw(frames)
            sent[reason] += 1
        else:
            bed = beds[next(order)]
            a = seq[bed] * CHUNK
            src.send(bed, seq[bed], a, sig[a : a + CHUNK])
            seq[bed] += 1
    for bed in beds:
        src.end(bed, seq[bed], seq[bed] * CHUNK)
    t.join(60)
    src.close()
    assert not t.is_alive() and not t.errors, (con.stats.summary(), t.errors)
    st = con.stats
    assert sum(sent.values()) >= n_bad - 5  # (a handful of early repeats had nothing to copy)
    assert st.refused == dict(sent)  # every malformed message refused, for its own reason
    assert st.messages == n_good * len(beds) and st.ends == len(beds)
    assert st.received == st.control + st.messages + st.ends + st.ignored + sum(st.refused.values())
    for bed in beds:  # the good beds were served whole, as if nothing had happened
        assert st.samples[bed] == n_good * CHUNK and st.gaps[bed] == 0
        assert con.beds[bed].side.n_samples == n_good * CHUNK
    assert "intruder" not in con.beds
    beats = Counter(e["bed"] for e in events if e.get("type") == "beat")
    assert min(beats[b] for b in beds) >= 0.95 * n_good * 75 / 60


def test_bed_cap_refuses_further_beds_and_keeps_serving_the_others(tmp_path):
    src = FakeSource(tmp_path)
    events: list[dict] = []
    con = consumer(src.ep, events, max_beds=2)
    t = start(con.run, max_duration_s=60)
    src.handshake()
    for i in range(5):
        for bed in ("a", "b", "c"):
            src.send(bed, i, i * CHUNK, ecg(CHUNK))
    for bed in ("a", "b"):
        src.end(bed, 5, 5 * CHUNK)
    t.join(60)
    src.close()
    assert con.stats.refused == {"too_many_beds": 5}
    assert con.stats.samples == {"a": 5 * CHUNK, "b": 5 * CHUNK}


def test_oversized_frame_is_cut_by_zeromq_and_shows_as_a_gap(tmp_path):
    src = FakeSource(tmp_path)
    events: list[dict] = []
    con = consumer(src.ep, events, max_fill_s=300)
    t = start(con.run, max_duration_s=60)
    src.handshake()
    for i in range(5):
        src.send("b1", i, i * CHUNK, ecg(CHUNK))
    assert wait_until(lambda: con.stats.messages == 5)
    # seq 5: a frame beyond the socket's ZMQ_MAXMSGSIZE: ZeroMQ cuts the connection
    big = 2 * MAX_SAMPLES
    src.send("b1", 5, 5 * CHUNK, np.zeros(big, np.float32))
    src.handshake()  # the consumer reconnected and says ready again
    for i in range(6, 10):
        src.send("b1", i, big + (i - 1) * CHUNK, ecg(CHUNK))
    src.end("b1", 10, big + 9 * CHUNK)
    t.join(60)
    src.close()
    assert not t.errors and not t.is_alive()
    assert con.stats.reconnects == 1 and con.stats.messages == 9
    gaps = [e for e in events if e.get("type") == "alert" and e["kind"] == "data_gap"]
    assert [g["detail"] for g in gaps] == [{"missing_messages": 1, "missing_samples": big}]
    assert con.beds["b1"].side.n_samples == big + 9 * CHUNK  # the clock stayed true


# -- restarts ----------------------------------------------------------------------------


def test_restarted_source_is_bridged_on_the_sample_clock(tmp_path):
    events: list[dict] = []
    src = FakeSource(tmp_path, stream="run1")
    con = consumer(src.ep, events)
    t = start(con.run, max_duration_s=60)
    src.handshake()
    x = ecg(40 * CHUNK)
    for i in range(20):
        src.send("b1", i, i * CHUNK, x[i * CHUNK : (i + 1) * CHUNK])
    assert wait_until(lambda: con.stats.messages == 20)
    src.close()
    # the source comes back as a new run, 5 s further into the same record
    src = FakeSource(tmp_path, stream="run2")
    src.handshake()
    for i in range(15):
        a = (25 + i) * CHUNK
        src.send(
            "b1",
            i,
            i * CHUNK,
            x[a : a + CHUNK] if a < len(x) else ecg(CHUNK),
            record_offset=25 * CHUNK,
        )
    src.end("b1", 15, 15 * CHUNK)
    t.join(60)
    src.close()
    assert not t.errors
    gaps = [e for e in events if e.get("type") == "alert" and e["kind"] == "data_gap"]
    assert len(gaps) == 1 and gaps[0]["detail"] == {
        "missing_messages": None,
        "missing_samples": 5 * CHUNK,
        "source_restarted": True,
    }
    assert con.stats.lost_samples["b1"] == 5 * CHUNK
    assert [e["bed"] for e in events if e.get("type") == "bed"] == ["b1"]  # one session
    after = [e for e in events if e.get("type") == "beat" and e["sample"] > 25 * CHUNK]
    assert len(after) >= 10  # classification resumed on the same clock
    assert all(e["record_sample"] == e["sample"] for e in after)
    assert not [e for e in events if e.get("type") == "alert" and e["kind"] == "asystole"]


def test_source_restarted_from_the_start_opens_a_new_session(tmp_path):
    events: list[dict] = []
    src = FakeSource(tmp_path, stream="run1")
    con = consumer(src.ep, events)
    t = start(con.run, max_duration_s=60)
    src.handshake()
    for i in range(10):
        src.send("b1", i, i * CHUNK, ecg(CHUNK))
    assert wait_until(lambda: con.stats.messages == 10)
    src.close()
    src = FakeSource(tmp_path, stream="run2")
    src.handshake()
    for i in range(10):
        src.send("b1", i, i * CHUNK, ecg(CHUNK))
    src.end("b1", 10, 10 * CHUNK)
    t.join(60)
    src.close()
    assert not t.errors
    assert [e["bed"] for e in events if e.get("type") == "bed"] == ["b1", "b1"]
    assert [e["type"] for e in events if e.get("type") in ("bed", "end")] == [
        "bed",
        "end",
        "bed",
        "end",
    ]


def cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "beatwise.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.mark.usefixtures("mitdb")
def test_publisher_killed_and_restarted_gap_reported_and_classification_resumes(tmp_path):
    ep = endpoints(tmp_path)
    events: list[dict] = []
    con = consumer(ep, events, signal_loss_s=0.5)
    t = start(con.run, max_duration_s=120)
    common = [
        "--db",
        "mitdb",
        "--records",
        "100",
        "--speed",
        "20",
        "--endpoint",
        ep["data"],
        "--control",
        ep["ctl"],
    ]
    first = cli("replay", *common)
    assert wait_until(lambda: sum(con.stats.samples.values()) >= 20 * 360)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert wait_until(lambda: any(e.get("kind") == "signal_loss" for e in events))
    got = sum(con.stats.samples.values())
    resume_s = got / 360 + 30  # the new run starts 30 s of record later
    second = cli("replay", *common, "--start-s", f"{resume_s}", "--duration-s", "20")
    assert second.wait(120) == 0, second.stderr.read()
    t.join(120)
    assert not t.errors and not t.is_alive()
    gaps = [e for e in events if e.get("type") == "alert" and e["kind"] == "data_gap"]
    assert len(gaps) == 1 and gaps[0]["detail"]["source_restarted"]
    assert gaps[0]["detail"]["missing_samples"] == round(resume_s * 360) - got
    loss = [e["state"] for e in events if e.get("kind") == "signal_loss"]
    assert loss == ["onset", "end"]
    after = [e for e in events if e.get("type") == "beat" and e["record_sample"] > resume_s * 360]
    assert len(after) >= 15  # 20 s of record after the restart, classified
    # no RR interval is measured across the 30-s gap: record 100 has none over 2 s, and
    # its heart rate stays about 75 bpm on both sides of the gap
    beats = [e for e in events if e.get("type") == "beat"]
    assert max(max(e["rr_s"]) for e in beats) < 2.0
    assert min(e["hr_bpm"] for e in beats) > 50
    assert [e["bed"] for e in events if e.get("type") == "bed"] == ["100"]  # one session


@pytest.mark.usefixtures("mitdb")
def test_consumer_killed_and_restarted_rejoins_and_the_log_survives(tmp_path):
    ep = endpoints(tmp_path)
    beds = load_beds("mitdb", ["100", "101"], duration_s=120)
    pub = ReplayPublisher(beds, endpoint=ep["data"], control=ep["ctl"], speed=10)
    tp = start(pub.run)
    log = tmp_path / "session.jsonl"
    args = [
        "monitor",
        "--headless",
        "--model",
        "rules",
        "--connect",
        ep["data"],
        "--control",
        ep["ctl"],
        "--publish",
        ep["out"],
        "--publish-control",
        ep["octl"],
        "--log",
        str(log),
    ]
    first = cli(*args)
    with Subscriber(ep["out"], ep["octl"]) as sub:
        seen = []
        while len(seen) < 20:
            m = sub.recv(timeout_s=60)
            assert m is not None, "no beats from the first consumer"
            if m["type"] == "beat":
                seen.append((m["bed"], m["seq"]))
    first.send_signal(signal.SIGKILL)
    first.wait()
    logged = read_log(log)
    # everything published was logged first
    assert set(seen) <= {(m["bed"], m["seq"]) for m in logged if m["type"] == "beat"}
    second = cli(*args)
    assert second.wait(120) == 0, second.stderr.read()
    tp.join(60)
    assert not tp.errors and not tp.is_alive()
    # the publisher went on: every sample sent, the dead consumer dropped from the credit
    assert pub.stats.samples == {"100": 120 * 360, "101": 120 * 360}
    assert pub.stats.clients_dropped >= 1
    msgs = read_log(log)
    later = [m for m in msgs if m["type"] == "beat" and m["sample"] > 100 * 360]
    assert later  # the second consumer rejoined and classified the rest
    out = tmp_path / "report"
    rc = subprocess.run(
        [sys.executable, "-m", "beatwise.cli", "report", str(log), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert rc.returncode == 0, rc.stderr
    assert (out / "100" / "doctor.md").is_file()


def test_report_reads_a_log_cut_short_by_a_crash(tmp_path):
    log = tmp_path / "s.jsonl"
    log.write_text('{"type":"bed","bed":"1","record":"mitdb/100"}\n{"type":"beat","be')
    assert read_log(log) == [{"type": "bed", "bed": "1", "record": "mitdb/100"}]
    log.write_text('{"type":"bed"\n{"type":"beat"}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_log(log)


def test_a_restarted_consumer_appends_after_a_line_cut_short_and_the_log_still_reads(tmp_path):
    from stream.session_log import SessionLog

    log = tmp_path / "s.jsonl"
    log.write_text('{"type":"bed","bed":"1","record":"mitdb/100"}\n{"type":"beat","be')
    restarted = SessionLog(log)
    restarted.write({"type": "session", "v": 1})
    restarted.write({"type": "bed", "bed": "1", "record": "mitdb/100"})
    restarted.close()
    assert [m["type"] for m in read_log(log)] == ["bed", "session", "bed"]


# -- subscribers -------------------------------------------------------------------------


@pytest.mark.usefixtures("mitdb")
def test_stalled_subscribers_never_stall_the_consumer(tmp_path):
    ep = endpoints(tmp_path)
    beds = load_beds("mitdb", ["100", "101"], duration_s=300)
    pub = ReplayPublisher(beds, endpoint=ep["data"], control=ep["ctl"], speed=float("inf"))
    con = consumer(
        ep, [], publish=ep["out"], publish_control=ep["octl"], wait_subscribers=3, window=64
    )
    stalled_passive = Subscriber(ep["out"], ep["octl"], rcvhwm=10)
    stalled_flow = Subscriber(ep["out"], ep["octl"], flow=True, rcvhwm=10)
    reader = Subscriber(ep["out"], ep["octl"], flow=True)
    tp, tc = start(pub.run), start(con.run)
    for s in (stalled_passive, stalled_flow):  # each says ready, then never reads again
        assert wait_until(lambda s=s: s.recv(timeout_s=0.05) is not None or s._ready)
    beats = Counter()
    while tc.is_alive() or reader._sub.poll(0):
        m = reader.recv(timeout_s=2)
        if m is not None and m["type"] == "beat":
            beats[m["bed"]] += 1
    gaps = reader.gaps
    reader.close()
    tc.join(10)
    tp.join(10)
    assert not tc.errors and not tp.errors
    assert gaps == 0 and sum(beats.values()) == con.stats.beats > 600  # the reader lost nothing
    # the stalled flow subscriber was dropped from the credit after its timeout (3 s)
    assert con.ledger.dropped == [stalled_flow.identity.encode()]
    stalled_passive.close()
    stalled_flow.close()


@pytest.mark.usefixtures("mitdb")
def test_a_consumer_held_back_by_its_subscriber_keeps_its_place_at_the_source(tmp_path):
    """Back-pressure chains without loss: while a slow recorder holds the consumer back
    (2.5 s, longer than the replay's 1.5-s client timeout), the consumer's heartbeat keeps
    it in the replay's credit, so the replay waits instead of dropping it and streaming on."""
    ep = endpoints(tmp_path)
    # 60 s of record: the recorder's credit paces the stream (about 10 s of wall time here,
    # several times that on a loaded machine: 300 s of record outran the bound under load)
    beds = load_beds("mitdb", ["100"], duration_s=60)
    pub = ReplayPublisher(
        beds, endpoint=ep["data"], control=ep["ctl"], speed=float("inf"), client_timeout_s=1.5
    )
    out = {"publish": ep["out"], "publish_control": ep["octl"], "wait_subscribers": 1}
    con = consumer(ep, [], **out, window=4, subscriber_timeout_s=10)  # slow, not gone
    recorder = Subscriber(ep["out"], ep["octl"], flow=True)
    tp, tc = start(pub.run), start(con.run, max_duration_s=600)  # a bound only
    n = 0
    while tc.is_alive() or recorder._sub.poll(0):
        m = recorder.recv(timeout_s=2)
        n += m is not None and m["type"] == "beat"
        if n == 5:
            threading.Event().wait(2.5)  # the recorder is busy: the consumer waits for it
            n += 1
    recorder.close()
    tc.join(10)
    tp.join(10)
    assert not tc.errors and not tp.errors
    assert pub.stats.clients_dropped == 0
    assert con.stats.samples["100"] == pub.stats.samples["100"] == 60 * 360
    assert sum(con.stats.gaps.values()) == 0 and recorder.gaps == 0


def test_a_subscriber_says_ready_again_on_every_hello(tmp_path):
    """A restarted consumer has forgotten its subscribers: its hello gets a ready again, and
    the subscriber's acks count from that ready, as the new consumer's credit does."""
    import zmq

    from beatwise.protocol import encode_json

    ep = endpoints(tmp_path)
    ctx = zmq.Context.instance()
    out, octl = ctx.socket(zmq.PUB), ctx.socket(zmq.ROUTER)
    out.bind(ep["out"])
    octl.bind(ep["octl"])
    sub = Subscriber(ep["out"], ep["octl"], flow=True)

    def control() -> list[dict]:
        got = []
        while octl.poll(0):
            got.append(json.loads(octl.recv_multipart()[1]))
        return got

    def hello_until_ready() -> None:
        for _ in range(500):  # a bound only
            out.send_multipart([b"ctl", encode_json({"v": 1, "type": "hello"})])
            sub.recv(timeout_s=0.02)
            if any(m["type"] == "ready" for m in control()):
                return
        raise AssertionError("no ready")

    try:
        hello_until_ready()
        for seq in range(3):
            out.send_multipart([b"beat.b1", encode_json({"v": 1, "type": "beat", "seq": seq})])
            assert sub.recv(timeout_s=5)["seq"] == seq
        hello_until_ready()  # the server restarted
        out.send_multipart([b"beat.b1", encode_json({"v": 1, "type": "beat", "seq": 3})])
        assert sub.recv(timeout_s=5)["seq"] == 3
        assert sub.recv(timeout_s=0.6) is None  # idle: it acks what it took
        acks = [m["received"] for m in control() if m["type"] == "ack"]
        assert acks and acks[-1] == 1 and sub.received == 4
    finally:
        sub.close()
        out.close(0)
        octl.close(0)


# -- scale-out ---------------------------------------------------------------------------


def test_two_sharded_consumers_one_stream_through_a_proxy(tmp_path):
    ep = endpoints(tmp_path)
    proxy = Proxy(frontend=f"ipc://{tmp_path}/front.sock", backend=f"ipc://{tmp_path}/back.sock")
    tx = start(proxy.run)
    assert proxy.ready.wait(10)
    sub = Subscriber(proxy.backend, None, prefixes=("beat.", "status"))
    signal_ = ecg(60 * 360)
    beds = [BedSource(name, f"test/{name}", signal_) for name in ("a1", "a2", "b1", "b2")]
    cons = [
        StreamConsumer(
            RuleClassifier(),
            connect=ep["data"],
            control=ep["ctl"],
            publish=">" + proxy.frontend,
            shards=[shard],
            status_every_s=0.2,
        )
        for shard in ("a", "b")
    ]
    threads = [start(c.run, max_duration_s=120) for c in cons]
    # both consumers reach the subscriber through the proxy before the replay starts
    heard = set()
    while len(heard) < 2:
        m = sub.recv(timeout_s=30)
        assert m is not None, "no status through the proxy"
        heard.add(m.get("consumer"))
    pub = ReplayPublisher(
        beds, endpoint=ep["data"], control=ep["ctl"], speed=float("inf"), wait_for=2
    )
    tp = start(pub.run)
    beats = Counter()
    while any(t.is_alive() for t in threads):
        m = sub.recv(timeout_s=1)
        if m is not None and m["type"] == "beat":
            beats[m["bed"]] += 1
    while (m := sub.recv(timeout_s=1)) is not None:
        if m["type"] == "beat":
            beats[m["bed"]] += 1
    tp.join(10)
    sub.close()
    proxy.stop()
    tx.join(10)
    assert not tp.errors and not any(t.errors for t in threads)
    assert set(cons[0].beds) == {"a1", "a2"} and set(cons[1].beds) == {"b1", "b2"}
    assert sum(c.stats.lost_samples[b] for c in cons for b in c.beds) == 0
    assert all(c.stats.samples[b] == 60 * 360 for c in cons for b in c.beds)
    # one stream: every bed's beats, from both consumers, each published beat received
    assert beats == Counter({b: n for c in cons for b, n in _beats_per_bed(c).items()})
    assert sub.gaps == 0


def _beats_per_bed(con: StreamConsumer) -> dict[str, int]:
    return {name: bed.seq["beat"] for name, bed in con.beds.items()}


def test_loopback_by_default():
    from replay.publisher import DEFAULT_CONTROL, DEFAULT_ENDPOINT
    from stream.consumer import DEFAULT_IN, DEFAULT_IN_CONTROL, DEFAULT_OUT, DEFAULT_OUT_CONTROL
    from stream.proxy import DEFAULT_BACKEND, DEFAULT_FRONTEND

    for ep in (
        DEFAULT_ENDPOINT,
        DEFAULT_CONTROL,
        DEFAULT_IN,
        DEFAULT_IN_CONTROL,
        DEFAULT_OUT,
        DEFAULT_OUT_CONTROL,
        DEFAULT_FRONTEND,
        DEFAULT_BACKEND,
    ):
        assert ep.startswith("tcp://127.0.0.1:"), ep
