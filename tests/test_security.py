"""CURVE on the wire: keys are made and checked; a server refuses clients whose key it was not
given (and clients without CURVE), a client refuses a publisher with the wrong secret key.

Refusals are observed, not assumed: each unauthorised socket carries a ZeroMQ monitor, and the
test waits (bounded) for its failed handshake before it counts what the socket received.
"""

from __future__ import annotations

import math
import shutil
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from beatwise.bedside import RuleClassifier
from beatwise.cli import build_parser, main
from beatwise.commands.keys import curve_from_args
from beatwise.keys import (
    CurveError,
    CurveKeys,
    read_allowed,
    read_keypair,
    read_public_key,
    secure_client,
    secure_server,
    stop_authenticator,
    write_keypair,
)
from beatwise.protocol import HELLO, SAMPLES, encode_json, encode_samples, topic
from replay import BedSource, ReplayPublisher, load_beds
from stream import StreamConsumer, Subscriber

pytestmark = pytest.mark.skipif(
    not zmq.has("curve"), reason="this libzmq has no CURVE support (zmq.has('curve') is False)"
)

_FAILED = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
}
WAIT_S = 20.0  # bound of every wait; a healthy run takes well under a second


@pytest.fixture
def ctx():
    """A context of its own, so its ZAP handler is stopped and the context closed after."""
    c = zmq.Context()
    yield c
    stop_authenticator(c)
    c.destroy(linger=0)


@pytest.fixture
def keys(tmp_path):
    """Key pairs ``name -> (public file, secret file)`` and ``allow(folder, *names)``."""
    pairs = {n: write_keypair(tmp_path / "keys", n) for n in ("replay", "consumer", "nurse", "x")}

    def allow(folder: str, *names: str) -> Path:
        d = tmp_path / folder
        d.mkdir()
        for n in names:
            shutil.copy(pairs[n][0], d)
        return d

    return pairs, allow


def watched(ctx, kind: int):
    """A socket and a monitor of its handshakes (attach before connect/bind)."""
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    return s, s.get_monitor_socket()


def wait_refused(mon, what: str, *, times: int = 1, meanwhile=None) -> None:
    """Wait (at most WAIT_S) until the monitored socket saw ``times`` failed handshakes,
    calling ``meanwhile()`` every 20 ms if given."""
    deadline = time.monotonic() + WAIT_S
    n = 0
    while n < times:
        left = deadline - time.monotonic()
        assert left > 0, f"{what}: {n} refused handshake(s) within {WAIT_S} s, expected {times}"
        if meanwhile is not None:
            meanwhile()
        if mon.poll(20 if meanwhile else int(left * 1000) + 1):
            event = recv_monitor_message(mon)["event"]
            assert event != zmq.EVENT_HANDSHAKE_SUCCEEDED, f"{what}: handshake accepted"
            n += event in _FAILED


def drain(sock, *, quiet_ms: int = 300) -> int:
    """Messages waiting on ``sock`` (reads until it stays quiet for ``quiet_ms``)."""
    n = 0
    while sock.poll(quiet_ms):
        sock.recv_multipart()
        n += 1
    return n


def run_thread(fn, errors: list) -> threading.Thread:
    def guarded():
        try:
            fn()
        except Exception as exc:  # surfaced by the test
            errors.append(exc)

    t = threading.Thread(target=guarded, daemon=True)
    t.start()
    return t


# -- keys ------------------------------------------------------------------------------------


def test_write_and_read_keys(tmp_path):
    public, secret = write_keypair(tmp_path, "replay")
    assert (public.name, secret.name) == ("replay.key", "replay.key_secret")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pk, sk = read_keypair(secret)
    assert read_public_key(public) == pk == zmq.curve_public(sk)
    assert b"secret-key" not in public.read_bytes()
    # pyzmq reads them as its own certificates
    assert zmq.auth.load_certificate(secret) == (pk, sk)
    assert zmq.auth.load_certificate(public) == (pk, None)
    k = CurveKeys.load(secret, server_key=public, allow=tmp_path)
    assert k.allowed == {pk} and k.server_key == pk


def test_bad_key_files_are_named_in_the_error(tmp_path):
    public, secret = write_keypair(tmp_path, "a")
    other_public, _ = write_keypair(tmp_path / "b", "b")
    with pytest.raises(CurveError, match=r"missing\.key_secret: not found"):
        read_keypair(tmp_path / "missing.key_secret")
    with pytest.raises(CurveError, match=r"a\.key: holds no secret key .*NAME\.key_secret"):
        read_keypair(public)
    with pytest.raises(CurveError, match="a folder"):
        read_public_key(tmp_path)
    short = tmp_path / "short.key"
    short.write_text('curve\n    public-key = "abc"\n')
    with pytest.raises(CurveError, match=r"short\.key: b'abc' is not a CURVE key .*40 Z85"):
        read_public_key(short)
    junk = tmp_path / "junk.key"
    junk.write_text("hello\n")
    with pytest.raises(CurveError, match=r"junk\.key: no 'public-key"):
        read_public_key(junk)
    mixed = tmp_path / "mixed.key_secret"
    mixed.write_text(
        secret.read_text().replace(
            read_public_key(public).decode(), read_public_key(other_public).decode()
        )
    )
    with pytest.raises(CurveError, match="does not belong to the secret key"):
        CurveKeys.load(mixed)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CurveError, match=r"empty: no \*\.key files"):
        read_allowed(empty)
    with pytest.raises(CurveError, match="allowed-clients folder .*not found"):
        read_allowed(tmp_path / "nowhere")
    with pytest.raises(CurveError, match="key name '../x'"):
        write_keypair(tmp_path, "../x")


def test_keys_command_refuses_to_overwrite(tmp_path, capsys):
    assert main(["keys", "monitor", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "monitor.key_secret" in out and "--curve-server-key" in out and "--curve-allow" in out
    first = read_public_key(tmp_path / "monitor.key")
    assert main(["keys", "monitor", "--dir", str(tmp_path)]) == 2
    assert "already exist; refusing to overwrite" in capsys.readouterr().err
    assert read_public_key(tmp_path / "monitor.key") == first
    assert main(["keys", "monitor", "--dir", str(tmp_path), "--force"]) == 0
    assert read_public_key(tmp_path / "monitor.key") != first
    assert stat.S_IMODE((tmp_path / "monitor.key_secret").stat().st_mode) == 0o600


def test_curve_options(ctx, keys, capsys):
    pairs, allow = keys
    parse = build_parser().parse_args
    secret = str(pairs["nurse"][1])
    with pytest.raises(CurveError, match="alone secures nothing"):
        curve_from_args(parse(["alerts", "--curve-secret", secret]))
    with pytest.raises(CurveError, match="without --curve-secret"):
        curve_from_args(parse(["alerts", "--curve-server-key", secret]))
    k = curve_from_args(
        parse(["alerts", "--curve-secret", secret, "--curve-server-key", str(pairs["consumer"][0])])
    )
    assert k.server_key == read_public_key(pairs["consumer"][0]) and k.allowed is None
    # binding beyond loopback without CURVE is allowed, and warned about
    args = parse(["replay", "--records", "100", "--endpoint", "tcp://0.0.0.0:5555"])
    assert curve_from_args(args, bound=(args.endpoint, args.control)) is None
    assert "tcp://0.0.0.0:5555 can be reached from other machines" in capsys.readouterr().err
    args = parse(
        ["replay", "--records", "100", "--curve-secret", str(pairs["replay"][1])]
        + ["--curve-allow", str(allow("ok", "consumer")), "--endpoint", "tcp://*:5555"]
    )
    assert curve_from_args(args, bound=(args.endpoint, args.control)).allowed
    assert capsys.readouterr().err == ""
    with pytest.raises(CurveError, match="no server public key"):
        secure_client(ctx.socket(zmq.SUB), CurveKeys.load(secret, allow=allow("x", "x")))


# -- the replay's sockets --------------------------------------------------------------------


def test_replay_serves_only_allowed_clients(ctx, keys, tmp_path):
    pairs, allow = keys
    server_pub = pairs["replay"][0]
    data, ctl = f"ipc://{tmp_path}/data.sock", f"ipc://{tmp_path}/ctl.sock"
    x = np.sin(np.arange(720) / 10).astype(np.float32)
    pub = ReplayPublisher(
        [BedSource("b1", "test/b1", x)],
        endpoint=data,
        control=ctl,
        speed=math.inf,
        handshake_timeout_s=WAIT_S,
        curve=CurveKeys.load(pairs["replay"][1], allow=allow("allowed", "consumer")),
        context=ctx,
    )
    errors: list = []
    t = run_thread(pub.run, errors)
    assert pub.ready.wait(WAIT_S)
    stranger, mon_stranger = watched(ctx, zmq.SUB)
    secure_client(stranger, CurveKeys.load(pairs["x"][1], server_key=server_pub))
    plain, mon_plain = watched(ctx, zmq.SUB)
    for s in (stranger, plain):
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect(data)
    wait_refused(mon_stranger, "client whose key is not allowed")
    wait_refused(mon_plain, "client without CURVE")

    got = []
    me = CurveKeys.load(pairs["consumer"][1], server_key=server_pub)
    with Subscriber(data, ctl, curve=me, context=ctx) as sub:
        while not got or got[-1]["type"] != "end":
            m = sub.recv(timeout_s=WAIT_S)
            assert m is not None, "the allowed client got no message"
            got.append(m)
    t.join(WAIT_S)
    assert not errors, errors
    assert sum(m.get("n", 0) for m in got) == len(x) == pub.stats.samples["b1"]
    assert drain(stranger) == 0
    assert drain(plain) == 0


# -- the consumer's sockets, end to end ------------------------------------------------------


def test_consumer_publishes_only_to_allowed_subscribers(ctx, keys, tmp_path, record):
    record("mitdb", "100")  # skips without the data
    pairs, allow = keys
    ep = {k: f"ipc://{tmp_path}/{k}.sock" for k in ("data", "ctl", "out", "octl")}
    replay_keys = CurveKeys.load(pairs["replay"][1], allow=allow("replay-allows", "consumer"))
    consumer_keys = CurveKeys.load(
        pairs["consumer"][1], server_key=pairs["replay"][0], allow=allow("monitor-allows", "nurse")
    )
    pub = ReplayPublisher(
        load_beds("mitdb", ["100"], duration_s=20),
        endpoint=ep["data"],
        control=ep["ctl"],
        speed=math.inf,
        handshake_timeout_s=WAIT_S,
        curve=replay_keys,
        context=ctx,
    )
    con = StreamConsumer(
        RuleClassifier(),
        connect=ep["data"],
        control=ep["ctl"],
        publish=ep["out"],
        publish_control=ep["octl"],
        wait_subscribers=1,
        curve=consumer_keys,
        publish_curve=consumer_keys,
        context=ctx,
    )
    errors: list = []
    threads = [run_thread(pub.run, errors), run_thread(con.run, errors)]
    assert con.bound.wait(WAIT_S)
    stranger, mon_stranger = watched(ctx, zmq.SUB)
    secure_client(stranger, CurveKeys.load(pairs["x"][1], server_key=pairs["consumer"][0]))
    plain, mon_plain = watched(ctx, zmq.SUB)
    for s in (stranger, plain):
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect(ep["out"])
    wait_refused(mon_stranger, "subscriber whose key is not allowed")
    wait_refused(mon_plain, "subscriber without CURVE")

    msgs = []
    nurse = CurveKeys.load(pairs["nurse"][1], server_key=pairs["consumer"][0])
    with Subscriber(ep["out"], ep["octl"], curve=nurse, context=ctx) as sub:
        deadline = time.monotonic() + 60
        while threads[1].is_alive():
            assert time.monotonic() < deadline, "the consumer did not finish within 60 s"
            if (m := sub.recv(timeout_s=0.2)) is not None:
                msgs.append(m)
        while (m := sub.recv(timeout_s=0.5)) is not None:
            msgs.append(m)
    for t in threads:
        t.join(WAIT_S)
    assert not errors, errors
    beats = [m for m in msgs if m["type"] == "beat"]
    assert len(beats) == con.stats.beats > 15  # 20 s of record 100
    assert con.stats.samples["100"] == 20 * 360 and sub.gaps == 0
    assert drain(stranger) == 0
    assert drain(plain) == 0


def test_consumer_refuses_a_forged_publisher(ctx, keys, tmp_path):
    pairs, allow = keys
    data, ctl = f"ipc://{tmp_path}/data.sock", f"ipc://{tmp_path}/ctl.sock"
    # The impostor has its own secret key and would even accept the consumer's key.
    impostor = CurveKeys.load(pairs["x"][1], allow=allow("impostor-allows", "consumer"))
    fake, mon = watched(ctx, zmq.PUB)
    secure_server(fake, impostor)
    fake.bind(data)
    fake_ctl = ctx.socket(zmq.ROUTER)
    secure_server(fake_ctl, impostor)
    fake_ctl.bind(ctl)
    con = StreamConsumer(
        RuleClassifier(),
        connect=data,
        control=ctl,
        publish=None,
        curve=CurveKeys.load(pairs["consumer"][1], server_key=pairs["replay"][0]),
        context=ctx,
    )
    stop = threading.Event()
    errors: list = []
    t = run_thread(lambda: con.run(stop=stop), errors)

    header, payload = encode_samples(
        {
            "type": "samples",
            "bed": "b1",
            "record": "test/b1",
            "fs": 360,
            "first_sample": 0,
            "seq": 0,
        },
        np.zeros(36, np.float32),
    )
    hello = encode_json({"v": 1, "type": "hello", "role": "replay", "beds": ["b1"]})

    def publish() -> None:
        fake.send_multipart([topic(HELLO), hello, b""])
        fake.send_multipart([topic(SAMPLES, "b1"), header, payload])

    # The protocol's hello and samples go out until the consumer was refused twice.
    wait_refused(mon, "consumer connecting to the impostor", times=2, meanwhile=publish)
    stop.set()
    t.join(WAIT_S)
    assert not errors, errors
    assert con.stats.messages == 0 and con.beds == {}
    assert not fake_ctl.poll(0), "the consumer's control socket reached the impostor"
