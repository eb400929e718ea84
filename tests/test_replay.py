"""Replay publisher: wire format, handshake, pacing without drift, credit, loop, offsets."""

from __future__ import annotations

import json
import math
import re
import threading
import time

import numpy as np
import pytest
import zmq

from beatwise.protocol import (
    CreditLedger,
    ProtocolError,
    decode_json,
    decode_samples,
    encode_json,
    encode_samples,
    exact_topic,
    topic,
)
from replay import BedSource, ReplayPublisher, load_beds, parse_speed


def eps(tmp_path):
    return f"ipc://{tmp_path}/data.sock", f"ipc://{tmp_path}/ctl.sock"


class Client:
    """A raw protocol client: SUB + DEALER, ready on the first hello, optional acks."""

    def __init__(self, data, ctl, *, ack=True):
        ctx = zmq.Context.instance()
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(data)
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.connect(ctl)
        self.ack = ack
        self.n = 0
        self.ready = False

    def recv(self, timeout_ms=5000):
        while self.sub.poll(timeout_ms):
            frames = self.sub.recv_multipart()
            if frames[0] == b"ctl":
                if not self.ready:
                    self.dealer.send(encode_json({"v": 1, "type": "ready", "client": "t"}))
                    self.ready = True
                continue
            self.n += 1
            if self.ack:
                self.dealer.send(encode_json({"v": 1, "type": "ack", "received": self.n}))
            return frames, time.monotonic()
        return None

    def close(self):
        self.sub.close(0)
        self.dealer.close(0)


def bed(name="b1", seconds=2.0, offset=0):
    x = np.sin(np.arange(int(seconds * 360)) / 10).astype(np.float32)
    return BedSource(name, f"test/{name}", x, offset)


def start(pub):
    t = threading.Thread(target=pub.run, daemon=True)
    t.start()
    assert pub.ready.wait(5)
    return t


def test_wire_format_handshake_and_end(tmp_path):
    data, ctl = eps(tmp_path)
    b = bed(seconds=1.0, offset=720)
    pub = ReplayPublisher([b], endpoint=data, control=ctl, speed=math.inf)
    t = start(pub)
    c = Client(data, ctl)
    got = [c.recv() for _ in range(11)]
    t.join(10)
    c.close()
    frames = [g[0] for g in got]
    # nothing lost to the slow joiner: the very first chunk arrives first
    headers = [decode_samples(f)[0] for f in frames[:-1]]
    assert [h["seq"] for h in headers] == list(range(10))
    h = headers[0]
    assert frames[0][0] == b"ecg.b1" and h["v"] == 1 and h["bed"] == "b1"
    assert h["record"] == "test/b1" and h["fs"] == 360 and h["units"] == "mV"
    assert h["first_sample"] == 0 and h["record_offset"] == 720 and h["n"] == 36
    x = np.concatenate([decode_samples(f)[1] for f in frames[:-1]])
    assert np.array_equal(x, b.signal)  # float32 little-endian, bit for bit
    end = json.loads(frames[-1][1])
    assert end["type"] == "end" and end["total_samples"] == 360 and end["seq"] == 10
    assert pub.stats.samples == {"b1": 360}


class SteppingClock:
    """A deterministic clock: each reading is ``step`` seconds after the previous one."""

    def __init__(self, step: float):
        self.step = step
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            self.now += self.step
            return self.now


def test_pacing_follows_the_clock_without_drift(tmp_path):
    # The schedule is read off an injected clock, so the test times nothing: every chunk
    # goes out at its due time t0 + k * tick (never before it, never a step after it),
    # which is what "no drift" means -- errors cannot accumulate over the record.
    data, ctl = eps(tmp_path)
    step = 0.004
    clock = SteppingClock(step)
    pub = ReplayPublisher(
        [bed(seconds=3.0)], endpoint=data, control=ctl, speed=4.0, clock=clock, wall=clock
    )
    t = start(pub)
    c = Client(data, ctl)
    sent = []
    while (g := c.recv()) is not None and g[0][1].find(b'"end"') < 0:
        sent.append(decode_samples(g[0])[0]["sent_at"])
    t.join(10)
    c.close()
    tick = 36 / (360 * 4.0)
    assert len(sent) == 30
    rel = np.asarray(sent) - (sent[0] - step)  # t0 is the reading just before the first send
    due = np.arange(len(sent)) * tick
    assert np.all(rel >= due - 1e-9)
    assert np.all(rel - due <= 2 * step + 1e-9)


def test_credit_window_stops_a_publisher_that_outruns_its_client(tmp_path):
    data, ctl = eps(tmp_path)
    pub = ReplayPublisher([bed(seconds=10.0)], endpoint=data, control=ctl, speed=math.inf, window=8)
    t = start(pub)
    c = Client(data, ctl, ack=False)
    got = 0
    while c.recv(timeout_ms=300) is not None:
        got += 1
    assert got == 8  # no acks: exactly one window, then the publisher waits
    c.ack = True
    c.dealer.send(encode_json({"v": 1, "type": "ack", "received": got}))
    while c.recv(timeout_ms=2000) is not None:
        got += 1
    t.join(10)
    c.close()
    assert got == 101  # 100 chunks + end: all of it, none dropped


def test_loop_keeps_counting_samples(tmp_path):
    data, ctl = eps(tmp_path)
    stop = threading.Event()
    pub = ReplayPublisher([bed(seconds=0.5)], endpoint=data, control=ctl, speed=math.inf, loop=True)
    t = threading.Thread(target=pub.run, kwargs={"stop": stop}, daemon=True)
    t.start()
    c = Client(data, ctl)
    firsts = [decode_samples(c.recv()[0])[0]["first_sample"] for _ in range(12)]
    stop.set()
    while c.recv(timeout_ms=500) is not None:
        pass
    t.join(10)
    c.close()
    assert firsts == [36 * i for i in range(12)]  # past the 180-sample record, no reset


def test_load_beds_resamples_and_offsets(record):
    record("svdb", "800")
    beds = load_beds("mitdb", ["100", "svdb/800@10"], duration_s=5)
    assert [b.bed for b in beds] == ["100", "svdb-800"]
    assert all(len(b.signal) == 1800 and b.signal.dtype == np.float32 for b in beds)
    assert beds[1].offset == 3600 and beds[1].record == "svdb/800"
    with pytest.raises(ValueError, match="distinct"):
        load_beds("mitdb", ["100", "100"], duration_s=1)
    with pytest.raises(ValueError, match="after '@'"):
        load_beds("mitdb", ["100@x"])


def test_parse_speed():
    assert parse_speed("max") == math.inf and parse_speed("10") == 10.0
    for bad in ("0", "-1", "fast"):
        with pytest.raises(ValueError, match="positive number or 'max'"):
            parse_speed(bad)


def test_protocol_frames_and_errors():
    h, p = encode_samples(
        {"bed": "x", "seq": 3, "first_sample": 0, "fs": 360}, np.arange(4, dtype=np.float64)
    )
    header, x = decode_samples([b"ecg.x", h, p])
    assert header["n"] == 4 and x.dtype == np.dtype("<f4") and list(x) == [0, 1, 2, 3]
    with pytest.raises(ProtocolError, match="3 frames"):
        decode_samples([b"ecg.x", h])
    with pytest.raises(ProtocolError, match="n=4"):
        decode_samples([b"ecg.x", h, p[:8]])
    with pytest.raises(ProtocolError, match="version 2"):
        decode_json(b'{"v": 2}')
    with pytest.raises(ProtocolError, match="bed name"):
        topic("ecg", "a.b")
    # every other refusal (with its counted reason) is in tests/test_protocol.py
    assert exact_topic(b"ecg.208") == ("ecg", "208") and exact_topic(b"status") == ("status", None)


def test_credit_ledger_drops_a_silent_client():
    led = CreditLedger(window=4, stale_s=1.0)
    led.on_control(b"a", encode_json({"type": "ready"}), now=0.0)
    led.on_control(b"p", encode_json({"type": "ready", "flow": False}), now=0.0)
    assert led.n_ready == 2 and led.credit(0.0) == 4
    for _ in range(4):
        led.on_send(b"ecg.1")
    assert led.credit(0.5) == 0
    led.on_control(b"a", encode_json({"type": "ack", "received": 2}), now=0.6)
    assert led.credit(0.6) == 2
    led.on_send(b"ecg.1")
    led.on_send(b"ecg.1")
    assert led.credit(5.0) > 4 and led.dropped == [b"a"]  # silent and blocking: dropped


def test_credit_ledger_counts_only_the_topics_a_client_takes():
    led = CreditLedger(window=4)
    led.on_control(b"a", encode_json({"type": "ready", "topics": ["ecg.a"]}), now=0.0)
    led.on_control(b"b", encode_json({"type": "ready", "topics": ["ecg.b"]}), now=0.0)
    for _ in range(3):
        led.on_send(b"ecg.a1")
    led.on_send(b"ecg.b1")
    assert led.credit(0.0) == 1  # a has 3 outstanding, b 1
    led.on_control(b"a", encode_json({"type": "ack", "received": 3}), now=0.1)
    assert led.credit(0.1) == 3 and not led.all_acked()
    led.on_control(b"b", encode_json({"type": "ack", "received": 1}), now=0.1)
    assert led.all_acked()


def test_credit_ledger_restarted_client_starts_afresh():
    led = CreditLedger(window=4)
    led.on_control(b"a", encode_json({"type": "ready"}), now=0.0)
    for _ in range(4):
        led.on_send(b"ecg.1")
    assert led.credit(0.0) == 0
    # the same identity says ready again (it restarted): its old debt is forgotten
    led.on_control(b"a", encode_json({"type": "ready"}), now=1.0)
    assert led.credit(1.0) == 4


def test_credit_ledger_refuses_a_malformed_ack_and_changes_nothing():
    led = CreditLedger(window=4)
    led.on_control(b"a", encode_json({"type": "ready"}), now=0.0)
    led.on_send(b"ecg.1")
    for bad in ("many", None, -1, 2.5, True, [1]):
        with pytest.raises(ProtocolError, match=r"ack received .*expected an integer >= 0"):
            led.on_control(b"a", encode_json({"type": "ack", "received": bad}), now=0.1)
    assert led.credit(0.1) == 3 and not led.all_acked()


def test_credit_ledger_asks_a_dropped_client_that_lives_to_rejoin():
    led = CreditLedger(window=4, stale_s=1.0)
    led.on_control(b"a", encode_json({"type": "ready"}), now=0.0)
    led.on_send(b"ecg.1")
    assert led.credit(2.0) > 4 and led.dropped == [b"a"] and not led.hello_wanted
    # it was only slow: its next ack (or heartbeat) asks for a hello, on which it says ready
    led.on_control(b"a", encode_json({"type": "ack", "received": 1}), now=2.1)
    assert led.hello_wanted
    led.hello_wanted = False
    led.on_control(b"a", encode_json({"type": "ready"}), now=2.2)
    for _ in range(4):
        led.on_send(b"ecg.1")
    assert led.credit(2.3) == 0  # back in the credit, counting from its ready


def test_replay_refuses_chunks_beyond_the_protocol_cap():
    from beatwise.protocol import MAX_SAMPLES

    with pytest.raises(ValueError, match=rf"chunk_samples {MAX_SAMPLES + 1}: expected 1 to "):
        ReplayPublisher([bed()], chunk_samples=MAX_SAMPLES + 1)


def test_load_beds_names_the_start_that_is_past_the_end(record):
    record("mitdb", "208")
    with pytest.raises(ValueError, match=r"record 208@5000: start 5000 s is past the end"):
        load_beds("mitdb", ["208@5000"])


def test_a_failed_bind_leaves_no_socket_open():
    ctx = zmq.Context.instance()
    squatter = ctx.socket(zmq.ROUTER)  # tcp: a second bind of an ipc path would succeed
    squatter.bind("tcp://127.0.0.1:*")  # the control port is taken
    ctl = squatter.getsockopt_string(zmq.LAST_ENDPOINT)
    try:
        pub = ReplayPublisher([bed()], endpoint="tcp://127.0.0.1:*", control=ctl)
        with pytest.raises(zmq.ZMQError, match=re.escape(ctl)):  # the data bind went through
            pub.run()
        data = pub.endpoint  # the port the data socket was given
        assert not data.endswith(":*")
        # ZeroMQ closes a socket on its I/O thread: the port comes free soon after close().
        deadline = time.monotonic() + 10.0
        while True:
            probe = ctx.socket(zmq.PUB)
            try:
                probe.bind(data)  # free again: the replay closed its data socket
                break
            except zmq.ZMQError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                probe.close(0)
    finally:
        squatter.close(0)


def test_cli_names_a_taken_endpoint(record, capsys):
    from beatwise.cli import main

    record("mitdb", "100")
    squatter = zmq.Context.instance().socket(zmq.PUB)
    squatter.bind("tcp://127.0.0.1:*")
    taken = squatter.getsockopt_string(zmq.LAST_ENDPOINT)
    try:
        argv = ["replay", "--records", "100", "--duration-s", "1", "--endpoint", taken]
        assert main(argv) == 2
    finally:
        squatter.close(0)
    assert f"ZeroMQ endpoint: Address already in use (addr='{taken}')" in capsys.readouterr().err
