"""The streaming consumer: one :class:`~beatwise.bedside.Bedside` per bed, beats of all beds
batched into one ``predict`` call, beats and alerts published on a second PUB socket.

Sockets (``docs/protocol.md``):

* SUB ``connect`` (the replay's samples) + DEALER ``control`` (handshake and credit),
* PUB ``publish`` (``beat.<bed>``, ``alert.<bed>``, ``status``, hellos) + ROUTER
  ``publish_control`` (its own subscribers' handshake and credit).

A subscriber that takes credit slows the consumer down, which in turn slows the replay:
back-pressure instead of loss, end to end.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
import zmq
import zmq.utils.monitor

from beatwise.bedside import Bedside, Classifier, takes_template, warm_up
from beatwise.classes import CLASSES
from beatwise.dsp.beats import Beats
from beatwise.keys import CurveKeys, secure_client, secure_server
from beatwise.pipeline import bridge
from beatwise.protocol import (
    ALERT,
    BEAT,
    HELLO,
    MAX_SAMPLES,
    SAMPLES,
    STATUS,
    CreditLedger,
    ProtocolError,
    decode_json,
    decode_samples,
    encode_json,
    exact_topic,
    topic,
)
from beatwise.quality import NOISE_PHASES
from beatwise.rhythm import NAMES, SEVERITY, Alert
from stream.session_log import SessionLog
from stream.stats import TRIM_EVERY_S, ConsumerStats, release_memory

__all__ = [
    "DEFAULT_OUT",
    "DEFAULT_OUT_CONTROL",
    "STRIP_KINDS",
    "ConsumerStats",
    "StreamConsumer",
]

DEFAULT_IN = "tcp://127.0.0.1:5555"
DEFAULT_IN_CONTROL = "tcp://127.0.0.1:5556"
DEFAULT_OUT = "tcp://127.0.0.1:5557"
DEFAULT_OUT_CONTROL = "tcp://127.0.0.1:5558"

FS = 360
#: Alert kinds whose onset gets an ECG strip (4 s before to 4 s after) in the session log.
STRIP_KINDS = frozenset({"vtach", "vrun", "asystole", "svt", "couplet", "pause"})
_STRIP_BEFORE = _STRIP_AFTER = 4 * FS
# Raw samples kept per bed (trace and strips): more than one processing round can bring
# (max_batch messages of one bed), so a strip is still whole when its alert comes.
_RING = 256 * FS
# Strips per bed and kind: every critical event, the first few of the others.
_MAX_STRIPS = {"vtach": 200, "asystole": 200}
_MAX_STRIPS_OTHER = 5
#: Beats whose latencies the status message summarises (the most recent).
_STATUS_WINDOW = 2000
#: Episodes that a data gap (its flat fill) can fake: muted when their silence overlaps a
#: fill. (A fill raises no lead_off: the bed's signal quality knows the gaps it bridged.)
_GAP_KINDS = frozenset({"asystole", "pause"})
#: Alert detail fields that hold a sample index (shifted to the published clock).
_DETAIL_SAMPLES = frozenset({"onset_sample", "since_sample"})

log = logging.getLogger(__name__)


class _Bed:
    """Per-bed state of the consumer.

    Three sample clocks meet here: ours (``n``: samples pushed into the bed's pipeline,
    gap fills included), the source's stream index (``first_sample`` in headers: ours +
    ``stream_off``, which changes when the source restarts), and the record's (ours +
    ``record_off``, wrapped when the source loops the record). Published ``sample`` fields
    are ours + ``base``: continuous for the whole session of the bed, whatever the source
    did.
    """

    def __init__(
        self, name: str, header: dict, *, template: bool = False, noise_phase: int = 0
    ) -> None:
        self.name = name
        self.record = header.get("record")
        first = int(header.get("first_sample", 0))
        self.base = first
        self.stream_off = first
        self.record_offset = int(header.get("record_offset", 0))
        self.record_off = first + self.record_offset
        self.loop = header.get("loop_samples")  # the source loops the record every this many
        self.stream = header.get("stream", "")
        self.side = Bedside(fs=FS, template=template, noise_phase=noise_phase)
        self.next_seq = int(header["seq"])
        self.n = 0
        self.chunks: list[np.ndarray] = []
        self.last_rx = 0.0
        self.ended = False
        self.total: int | None = None
        self.in_loss = False
        self.loss_onset = 0  # sample of the open signal_loss onset
        self.ring = np.zeros(_RING, np.float32)
        self.ring_end = 0  # our sample index one past the ring's last sample
        self.sent: deque[tuple[int, int, float, float]] = deque(
            maxlen=512
        )  # our first sample, n, sent_at, speed
        self.filled: deque[tuple[int, int]] = deque(maxlen=64)  # our [a, b) filled flat
        self.muted: set[str] = set()  # episodes whose onset fell in a gap: mute their end
        self.strips: list[tuple[int, str, int]] = []  # (start, kind, event sample) awaiting
        self.n_strips: dict[str, int] = {}  # per kind
        self.seq = {BEAT: 0, ALERT: 0}

    def remember(self, x: np.ndarray) -> None:
        """Append samples to the circular buffer (sample ``i`` lives at ``i % _RING``)."""
        n = len(x)
        x = x[-_RING:]
        start = (self.ring_end + n - len(x)) % _RING
        first = min(len(x), _RING - start)
        self.ring[start : start + first] = x[:first]
        self.ring[: len(x) - first] = x[first:]
        self.ring_end += n

    def recall(self, a: int, b: int) -> np.ndarray:
        """Samples ``a..b-1`` (must lie within the last ``_RING``)."""
        return self.ring[np.arange(a, b) % _RING]

    def fill(self, missing: int, toward: float | None = None) -> None:
        """Bridge ``missing`` samples that never came (:func:`beatwise.pipeline.bridge`) and
        mark them as a gap: no RR interval is measured across them."""
        if missing <= 0:
            return
        self.side.mark_gap(self.n, self.n + missing)
        last = self.chunks[-1][-1] if self.chunks else self.ring[(self.ring_end - 1) % _RING]
        x = bridge(missing, float(last), toward)
        self.chunks.append(x)
        self.filled.append((self.n, self.n + missing))
        self.n += missing

    def record_sample(self, n: int) -> int:
        """The record sample of our sample ``n`` (wrapped when the source loops the record:
        its stream sample ``s`` is record sample ``record_offset + s % loop_samples``)."""
        if not self.loop:
            return n + self.record_off
        return self.record_offset + (n + self.stream_off) % self.loop

    def in_gap(self, a: int, b: int) -> bool:
        """Whether our samples ``[a, b]`` overlap a stretch filled for missing data."""
        return any(fa <= b and a < fb for fa, fb in self.filled)

    def acquired_at(self, sample: int) -> float | None:
        """Wall time at which our sample ``sample`` was acquired (paced streams), s."""
        # R peaks are recent: scan back from the newest chunk (a few steps)
        for first, n, sent_at, speed in reversed(self.sent):
            if first <= sample:
                if not speed or sample >= first + n:
                    return None
                return sent_at - (first + n - 1 - sample) / (FS * speed)
        return None


class StreamConsumer:
    """Subscribes to a replay (or any source speaking the protocol), classifies, publishes.

    Args:
        classifier: Anything with ``predict(beats) -> (n, 6)`` probabilities.
        connect: The source's PUB endpoint. Default ``tcp://127.0.0.1:5555``.
        control: The source's control endpoint. Default ``tcp://127.0.0.1:5556``.
        publish: Endpoint to bind for beats and alerts; ``">endpoint"`` connects to it
            instead (the XSUB side of a proxy, :mod:`stream.proxy`); None: publish nothing
            (the monitor still sees everything through ``listeners``). Default
            ``tcp://127.0.0.1:5557``.
        publish_control: Control endpoint of ``publish``. Default ``tcp://127.0.0.1:5558``.
        beds: Only these beds, by exact name (default: every bed of the source).
        shards: Only beds whose names start with one of these prefixes: one consumer per
            prefix shares a ward between processes (default: every bed). With ``beds``,
            a bed matching either is taken.
        wait_subscribers: Subscribers of ``publish`` that must be ready before we tell the
            source we are. Default 0.
        listeners: Callables given every published message as a dict (and, in-process only,
            ``{"type": "samples", "bed", "x"}`` and ``{"type": "strip", ...}``).
        window: Credit window towards our own subscribers, messages. Default 4096.
        max_batch: Most source messages taken per processing round. Default 2048.
        signal_loss_s: No samples from a started bed for this long (wall s) -> alarm.
            Default 1.5.
        status_every_s: Publish a status message this often (s). Default 1.0.
        model_name: Shown in the status messages. Default "".
        session_log: Where every beat, alert and strip is appended (and flushed) *before* it
            is published (:class:`stream.session_log.SessionLog`). Default None.
        max_beds: Most beds served; messages of further beds are refused. Default 1024.
        max_fill_s: Longest data gap (s) bridged on a bed's sample clock; after a longer one
            (or a source that restarts elsewhere) the bed starts a new session. Default 30.
        subscriber_timeout_s: A credit-taking subscriber silent this long (s) is dropped
            from the credit, so it cannot stall the consumer. Default 3.
        curve: CURVE keys towards the source: connect only to the server ``curve.server_key``,
            encrypted (:mod:`beatwise.keys`). Default None (no CURVE).
        publish_curve: CURVE keys of ``publish`` and ``publish_control``: encrypted, only
            ``publish_curve.allowed`` subscribers accepted. Default None (no CURVE).
        context: ZeroMQ context. Default: the process's shared instance.
        clock: Monotonic clock, s. Default ``time.monotonic``.
        wall: Wall clock, s (compared with the source's ``sent_at``). Default ``time.time``.
    """

    def __init__(
        self,
        classifier: Classifier,
        *,
        connect: str = DEFAULT_IN,
        control: str = DEFAULT_IN_CONTROL,
        publish: str | None = DEFAULT_OUT,
        publish_control: str = DEFAULT_OUT_CONTROL,
        beds: Sequence[str] | None = None,
        wait_subscribers: int = 0,
        listeners: Sequence[Callable[[dict], None]] = (),
        window: int = 4096,
        max_batch: int = 2048,
        signal_loss_s: float = 1.5,
        status_every_s: float = 1.0,
        model_name: str = "",
        shards: Sequence[str] | None = None,
        session_log: SessionLog | None = None,
        max_beds: int = 1024,
        max_fill_s: float = 30.0,
        subscriber_timeout_s: float = 3.0,
        curve: CurveKeys | None = None,
        publish_curve: CurveKeys | None = None,
        context: zmq.Context | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if signal_loss_s <= 0 or max_batch < 1 or wait_subscribers < 0:
            raise ValueError(
                f"signal_loss_s={signal_loss_s!r}, max_batch={max_batch!r}, "
                f"wait_subscribers={wait_subscribers!r}: expected > 0 s, >= 1, >= 0."
            )
        if max_beds < 1 or not 0 <= max_fill_s <= 3600 or not subscriber_timeout_s > 0:
            raise ValueError(
                f"max_beds={max_beds!r}, max_fill_s={max_fill_s!r}, subscriber_timeout_s="
                f"{subscriber_timeout_s!r}: expected >= 1, 0-3600 s, > 0 s."
            )
        if publish and publish.startswith(">") and (publish_curve or wait_subscribers):
            raise ValueError(
                f"publish={publish!r} (into a proxy) with publish_curve or wait_subscribers: "
                "expected neither (secure the proxy's subscriber side; proxy subscribers take "
                "no handshake)."
            )
        for b in [*(beds or ()), *(shards or ())]:
            topic(SAMPLES, b)  # checks the name (a shard prefix is a bed-name prefix)
        self.classifier = classifier
        self.connect = connect
        self.control = control
        self.publish = publish
        self.publish_control = publish_control
        self.only = None if beds is None else set(beds)
        self.shards = None if shards is None else tuple(shards)
        self.session_log = session_log
        self.max_beds = max_beds
        self.max_fill = int(round(max_fill_s * FS))
        self.subscriber_timeout_s = subscriber_timeout_s
        self.wait_subscribers = wait_subscribers
        self.listeners = list(listeners)
        self.window = window
        self.max_batch = max_batch
        self.signal_loss_s = signal_loss_s
        self.status_every_s = status_every_s
        self.model_name = model_name
        self.curve = curve
        self.publish_curve = publish_curve
        self.context = context or zmq.Context.instance()
        self.clock = clock
        self.wall = wall
        self.identity = f"consumer-{uuid.uuid4().hex[:8]}".encode()
        self.beds: dict[str, _Bed] = {}
        self._n_beds = 0  # beds (sessions) opened so far
        self.stats = ConsumerStats()
        self.bound = threading.Event()  # set once the output sockets are bound
        self._beat_marks: deque[tuple[float, int]] = deque()  # (time, beats) per status
        self._trimmed_at = time.monotonic()

    # -- sockets -------------------------------------------------------------------------

    def _open(self) -> None:
        ctx = self.context
        # opened one by one: a bind that fails leaves the ones before it for _close
        self._sub = self._sub_events = self._dealer = self._pub = self._octl = None
        self._sub = ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.RCVHWM, 4 * self.window + 1024)
        self._sub.setsockopt(zmq.LINGER, 0)
        # a peer that sends a frame beyond this is disconnected by ZeroMQ (and reconnects):
        # the sequence numbers then show what was lost
        self._sub.setsockopt(zmq.MAXMSGSIZE, 4 * MAX_SAMPLES + 4096)
        if self.only is None and self.shards is None:
            self._sub.setsockopt(zmq.SUBSCRIBE, f"{SAMPLES}.".encode())
        for b in sorted(self.only or ()):
            self._sub.setsockopt(zmq.SUBSCRIBE, topic(SAMPLES, b))
        for p in sorted(self.shards or ()):
            self._sub.setsockopt(zmq.SUBSCRIBE, f"{SAMPLES}.{p}".encode())
        self._sub.setsockopt(zmq.SUBSCRIBE, topic(HELLO))
        secure_client(self._sub, self.curve)
        # ZeroMQ does not reconnect after it cut a peer for a frame beyond MAXMSGSIZE (a
        # protocol error): we watch for disconnects and reconnect ourselves
        self._sub_events = self._sub.get_monitor_socket(
            zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECTED
        )
        self._cut_at: float | None = None  # a disconnect ZeroMQ has not followed with a retry
        self._sub.connect(self.connect)
        self._dealer = ctx.socket(zmq.DEALER)
        self._dealer.setsockopt(zmq.IDENTITY, self.identity)
        self._dealer.setsockopt(zmq.LINGER, 1000)
        secure_client(self._dealer, self.curve)
        self._dealer.connect(self.control)
        if self.publish:
            self._pub = ctx.socket(zmq.PUB)
            self._pub.setsockopt(zmq.SNDHWM, 4 * self.window + 1024)
            self._pub.setsockopt(zmq.LINGER, 2000)
            if self.publish.startswith(">"):
                # into a proxy (one stream for a sharded ward): its subscribers cannot reach
                # our control socket, so they take no credit and never slow us down
                self._pub.connect(self.publish[1:])
            else:
                secure_server(self._pub, self.publish_curve)
                self._pub.bind(self.publish)
                self._octl = ctx.socket(zmq.ROUTER)
                self._octl.setsockopt(zmq.LINGER, 0)
                secure_server(self._octl, self.publish_curve)
                self._octl.bind(self.publish_control)
                self.publish = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
                self.publish_control = self._octl.getsockopt_string(zmq.LAST_ENDPOINT)
        self.ledger = CreditLedger(window=self.window, stale_s=self.subscriber_timeout_s)
        self.bound.set()

    def _close(self) -> None:
        if self._dealer is not None:
            self._control({"v": 1, "type": "bye", "client": self.identity.decode()})
        if self._sub_events is not None:
            self._sub.disable_monitor()
        for s in (self._sub_events, self._sub, self._dealer, self._pub, self._octl):
            if s is not None:
                s.close()

    def _drain_out_control(self, timeout_ms: int = 0) -> None:
        if self._octl is None or not self._octl.poll(timeout_ms):
            return
        while True:
            try:
                ident, frame = self._octl.recv_multipart(zmq.NOBLOCK)[:2]
            except zmq.Again:
                break
            except ValueError:
                continue
            try:
                self.ledger.on_control(ident, frame, self.clock())
            except ProtocolError as exc:
                log.warning("control message from a subscriber refused: %s", exc)
        if self.ledger.hello_wanted:
            # a live subscriber we dropped (or that outlived our restart): let it rejoin
            self.ledger.hello_wanted = False
            self._say_hello()

    def _say_hello(self) -> None:
        """A hello to our subscribers: each says ready (again) and counts credit from zero."""
        if self._pub is not None:
            self._pub.send_multipart(
                [topic(HELLO), encode_json({"v": 1, "type": "hello", "role": "consumer"})]
            )

    def _emit(self, kind: str, bed: str | None, body: dict) -> None:
        """Log one message, publish it (waiting for credit if a subscriber takes it), tell
        the listeners."""
        if self.session_log is not None and kind != STATUS:
            self.session_log.write(body)
        if self._pub is not None:
            while self.ledger.credit(self.clock()) <= 0:
                self._drain_out_control(50)
                self._ack()  # the heartbeat: the source must not drop us while we wait
            frame = topic(kind, bed)
            self._pub.send_multipart([frame, encode_json(body)])
            self.ledger.on_send(frame)
        for fn in self.listeners:
            fn(body)

    def _tell(self, body: dict) -> None:
        """Log and hand on a message that is not published (session, bed, end, strip)."""
        if self.session_log is not None:
            self.session_log.write(body)
        for fn in self.listeners:
            fn(body)

    # -- run -----------------------------------------------------------------------------

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        max_duration_s: float | None = None,
        until_end: bool = True,
    ) -> ConsumerStats:
        """Consume until every bed ended (``until_end``), ``stop`` is set, or
        ``max_duration_s`` (wall s) passed."""
        stop = stop or threading.Event()
        warm_up(self.classifier)  # load every compiled function before the first message
        cpu0, t0 = time.process_time(), self.clock()
        try:
            self._open()
            while self.ledger.n_ready < self.wait_subscribers and not stop.is_set():
                self._say_hello()
                self._drain_out_control(50)
            self._tell(
                {
                    "type": "session",
                    "v": 1,
                    "fs": FS,
                    "model": self.model_name,
                    "started_at": self.wall(),
                    "classes": list(CLASSES),
                }
            )
            self._loop(stop, max_duration_s, until_end, t0)
            for b in self.beds.values():
                if not b.ended:  # stopped early: close what is open
                    self._finish_bed(b)
            self._status(force=True)
            t = self.clock()
            while self._pub is not None and not self.ledger.all_acked() and self.clock() - t < 10:
                self._drain_out_control(20)
                self.ledger.credit(self.clock())
        finally:
            self.stats.cpu_s = time.process_time() - cpu0
            self.stats.wall_s = self.clock() - t0
            self._close()
        return self.stats

    def _loop(self, stop, max_duration_s, until_end, t0) -> None:
        poller = zmq.Poller()
        poller.register(self._sub, zmq.POLLIN)
        self._ready_sent = False
        self._expected: set[str] = set()
        self._received = self._acked = 0
        self._acked_at = self._last_status = self.clock()
        while not stop.is_set():
            if max_duration_s is not None and self.clock() - t0 >= max_duration_s:
                break
            if (
                until_end
                and self.beds
                and self._expected <= self.beds.keys()
                and all(b.ended for b in self.beds.values())
            ):
                break
            self._drain_out_control(0)
            self._watch_source()
            if not poller.poll(50):
                self._ack()
                self._check_loss()
                self._status()
                continue
            touched: dict[str, float] = {}
            n = 0
            while n < self.max_batch:
                try:
                    frames = self._sub.recv_multipart(zmq.NOBLOCK, copy=True)
                except zmq.Again:
                    break
                self.stats.received += 1
                kind, bed = exact_topic(frames[0])
                if kind == HELLO:
                    self._hello(frames)
                    continue
                n += 1
                if not self._ready_sent:  # joined a running stream: data proves the subscription
                    self._send_ready()
                if bed is not None and not self._takes(bed):
                    self.stats.ignored += 1  # a prefix subscription matched a longer name
                    continue
                try:
                    header, x = decode_samples(frames)
                    self._take(bed, header, x)
                except ProtocolError as exc:
                    self._refuse(exc, frames)
                    continue
                touched[bed] = self.clock()
            self._received += n
            if touched:
                self._process(touched)
            self._ack()
            self._check_loss()
            self._status()
        self._ack(force=True)

    def _watch_source(self) -> None:
        """Reconnect when ZeroMQ will not: after a normal disconnect (the source went away)
        it retries by itself, but after cutting a peer for a frame over the size cap (a
        protocol error) it gives the endpoint up. Reconnecting in the first case would race
        ZeroMQ's own retry (and can trip a libzmq assertion), so we wait half a second for
        its retry event first. What was lost meanwhile shows as sequence gaps."""
        while self._sub_events.poll(0):
            event = zmq.utils.monitor.parse_monitor_message(self._sub_events.recv_multipart())
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self.stats.disconnects += 1
                self._cut_at = time.monotonic()
            else:
                self._cut_at = None
        if self._cut_at is not None and time.monotonic() - self._cut_at > 0.5:
            self._cut_at = None
            self.stats.reconnects += 1
            log.warning(
                "source %s cut off and not retried by ZeroMQ (%d so far): reconnecting",
                self.connect,
                self.stats.reconnects,
            )
            self._sub.disconnect(self.connect)
            self._sub.connect(self.connect)

    def _takes(self, bed: str) -> bool:
        """Whether ``bed`` is this consumer's (``beds`` exact, ``shards`` by prefix)."""
        if self.only is None and self.shards is None:
            return True
        return bool(
            (self.only and bed in self.only)
            or (self.shards and any(bed.startswith(p) for p in self.shards))
        )

    def _hello(self, frames: list[bytes]) -> None:
        """A source's hello: learn its bed list; (re)join its handshake.

        A hello after we joined means the source restarted: it has forgotten us, so we say
        ready again and count credit from zero."""
        try:
            beds = decode_json(frames[1]).get("beds") or []
        except (ProtocolError, IndexError) as exc:
            self._refuse(
                exc
                if isinstance(exc, ProtocolError)
                else ProtocolError("hello without a JSON frame.", "frames"),
                frames,
            )
            return
        self.stats.control += 1
        if not isinstance(beds, list):
            beds = []
        self._expected = {b for b in beds if isinstance(b, str) and self._takes(b)}
        self._send_ready()

    def _ack(self, *, force: bool = False) -> None:
        """Acknowledge what we processed: every 64 messages, when idle, and at least once a
        second (a heartbeat: the source drops clients silent for ``stale_s``)."""
        now = self.clock()
        if not self._ready_sent:
            return
        if (
            force
            or self._received - self._acked >= 64
            or (self._received > self._acked and not self._sub.poll(0))
            or now - self._acked_at >= 1.0
        ):
            self._control(
                {
                    "v": 1,
                    "type": "ack",
                    "client": self.identity.decode(),
                    "received": self._received,
                }
            )
            self._acked, self._acked_at = self._received, now

    def _control(self, body: dict) -> None:
        """Send a control message without ever blocking: a source that does not read its
        control socket must not stall us (acks are cumulative; a dropped one is harmless)."""
        try:
            self._dealer.send(encode_json(body), zmq.NOBLOCK)
        except zmq.Again:
            self.stats.control_dropped += 1

    def _send_ready(self) -> None:
        body = {"v": 1, "type": "ready", "client": self.identity.decode(), "flow": True}
        if self.only is not None or self.shards is not None:
            # only our beds' messages count against our credit
            body["topics"] = [topic(SAMPLES, b).decode() for b in sorted(self.only or ())] + [
                f"{SAMPLES}.{p}" for p in sorted(self.shards or ())
            ]
        self._control(body)
        self._ready_sent = True
        self._received = self._acked = 0

    def _take(self, name: str, header: dict, x: np.ndarray) -> None:
        """One checked message from the source: place it on the bed's sample clock.

        Raises:
            ProtocolError: the message is refused (``seq`` going backwards or repeating,
                a sample index that contradicts the sequence, an unknown bed, too many
                beds); nothing of it was taken.
        """
        bed = self.beds.get(name)
        seq, stream = header["seq"], header.get("stream", "")
        end = header.get("type") == "end"
        pos = header["total_samples"] if end else header["first_sample"]  # source stream index
        if bed is not None and stream != bed.stream and not bed.ended:
            # The source restarted (a new run id): bridge the outage if the new run carries
            # on later in the same record, else the bed starts a new session.
            at = pos + int(header.get("record_offset", 0)) - bed.record_off  # on our clock
            if header.get("record") == bed.record and 0 <= at - bed.n <= self.max_fill:
                self._gap(bed, at - bed.n, None, x, restarted=True)
                bed.stream, bed.stream_off, bed.next_seq = stream, pos - bed.n, seq
                # the new run's record mapping (its offset, its loop) from here on
                bed.record_offset = int(header.get("record_offset", 0))
                bed.record_off = bed.stream_off + bed.record_offset
                bed.loop = header.get("loop_samples")
            else:
                self._close_session(bed)
        elif bed is not None and not bed.ended:
            if seq < bed.next_seq:
                raise ProtocolError(
                    f"bed {name} seq {seq}: expected {bed.next_seq} or later (repeated or "
                    "going backwards).",
                    "seq",
                )
            missing = pos - bed.stream_off - bed.n
            if missing < 0 or (seq == bed.next_seq and missing and not end):
                raise ProtocolError(
                    f"bed {name} seq {seq}: first sample {pos} contradicts the "
                    f"{bed.n + bed.stream_off} expected after seq {bed.next_seq - 1}.",
                    "seq",
                )
            if missing > self.max_fill:  # too long to bridge: alerted, counted, a new session
                self._gap(bed, missing, seq - bed.next_seq, x, bridge=False)
                self._close_session(bed)
            elif seq != bed.next_seq:
                self._gap(bed, missing, seq - bed.next_seq, x)
        if bed is None or bed.ended:
            if bed is not None and stream == bed.stream and seq < bed.next_seq:
                raise ProtocolError(f"bed {name} seq {seq}: after the bed's end.", "seq")
            self._new_bed(name, header)
            bed = self.beds[name]
        bed.next_seq = seq + 1
        silent_s, bed.last_rx = self.clock() - bed.last_rx, self.clock()
        self.stats.last_data_at = bed.last_rx
        if self.stats.first_data_at is None:
            self.stats.first_data_at = bed.last_rx
        if bed.in_loss:
            bed.in_loss = False
            # The sample clock stands still while nothing comes: the duration is wall-clock.
            detail = {"onset_sample": bed.loss_onset, "duration_s": round(silent_s, 2)}
            self._alert(bed, Alert("signal_loss", "end", bed.n, None, detail))
        if end:
            self.stats.ends += 1
            bed.ended = True
            bed.total = pos - bed.stream_off + bed.base
            return
        bed.chunks.append(x)
        bed.sent.append(
            (bed.n, len(x), float(header.get("sent_at") or 0.0), float(header.get("speed") or 0.0))
        )
        bed.n += len(x)
        self.stats.messages += 1
        self.stats.samples[name] = self.stats.samples.get(name, 0) + len(x)

    def _close_session(self, bed: _Bed) -> None:
        """End a bed's session now: what is queued is processed, open episodes closed."""
        bed.ended = True
        self._process({bed.name: self.clock()})

    def _new_bed(self, name: str, header: dict) -> None:
        if name not in self.beds and len(self.beds) >= self.max_beds:
            raise ProtocolError(
                f"bed {name}: {len(self.beds)} beds already, the cap (max_beds).", "too_many_beds"
            )
        if self._expected and name not in self._expected:
            raise ProtocolError(
                f"bed {name}: not among the {len(self._expected)} beds the source announced.",
                "unknown_bed",
            )
        # Beds started together judge their noise windows in different rounds (every 2 s, a
        # tenth of a millisecond each: all 48 of bench stream in one round made its p99).
        self._n_beds += 1
        bed = self.beds[name] = _Bed(
            name,
            header,
            template=takes_template(self.classifier),
            noise_phase=self._n_beds % NOISE_PHASES,
        )
        self.stats.gaps.setdefault(name, 0)
        self.stats.lost_samples.setdefault(name, 0)
        self.stats.samples.setdefault(name, 0)
        self._tell(
            {
                "type": "bed",
                "bed": name,
                "record": bed.record,
                "record_offset": bed.record_off,
                "loop_samples": bed.loop,
                "first_sample": bed.base,
                "fs": FS,
            }
        )

    def _gap(
        self,
        bed: _Bed,
        missing: int,
        messages: int | None,
        x: np.ndarray,
        *,
        restarted: bool = False,
        bridge: bool = True,
    ) -> None:
        """Missing data: alert, count, and (``bridge``) fill it on the bed's sample clock up
        to ``x``, the samples that came after it (empty for an end message). Not bridged
        (longer than ``max_fill_s``): the caller closes the bed's session."""
        self.stats.gaps[bed.name] += 1
        self.stats.lost_samples[bed.name] += missing
        detail = {"missing_messages": messages, "missing_samples": missing}
        if restarted:
            detail["source_restarted"] = True
        if not bridge:
            detail["new_session"] = True
        self._alert(bed, Alert("data_gap", "event", bed.n, None, detail))
        if bridge:
            bed.fill(missing, float(x[0]) if len(x) else None)

    def _refuse(self, exc: ProtocolError, frames: list[bytes]) -> None:
        """Count and log a refused message; everything already accepted stays as it was."""
        n = self.stats.refused.get(exc.reason, 0) + 1
        self.stats.refused[exc.reason] = n
        if n <= 5 or n % 1000 == 0:
            log.warning(
                "refused message on %r (%s, %d so far): %s", frames[0][:40], exc.reason, n, exc
            )

    def _process(self, touched: dict[str, float]) -> None:
        """Push each touched bed's queued samples, classify every new beat in one batch,
        hand the results back per bed, publish."""
        parts: list[tuple[_Bed, Beats]] = []
        for name in touched:
            bed = self.beds[name]
            if bed.chunks:
                x = np.concatenate(bed.chunks) if len(bed.chunks) > 1 else bed.chunks[0]
                bed.chunks = []
                parts.append((bed, bed.side.push(x)))
                bed.remember(x)
                self._tell({"type": "samples", "bed": name, "x": x})
            if bed.ended:
                parts.append((bed, bed.side.flush()))
        beats = [b for _, b in parts]
        total = sum(len(b) for b in beats)
        probs = (
            np.asarray(self.classifier.predict(Beats.concat(beats, 280)), np.float32)
            if total
            else np.zeros((0, len(CLASSES)), np.float32)
        )
        i = 0
        for bed, b in parts:
            recs, alerts = bed.side.accept(b, probs[i : i + len(b)])
            i += len(b)
            self._publish(bed, recs, alerts, touched[bed.name])
        for name in touched:
            bed = self.beds[name]
            self._strips(bed)
            if bed.ended:
                self._finish_bed(bed)
        if self.session_log is not None:
            self.session_log.sync(self.clock())

    def _finish_bed(self, bed: _Bed) -> None:
        bed.ended = True
        if bed.in_loss:  # the session ends while nothing comes: the loss ends with it
            bed.in_loss = False
            silent_s = self.clock() - bed.last_rx
            detail = {"onset_sample": bed.loss_onset, "duration_s": round(silent_s, 2)}
            self._alert(bed, Alert("signal_loss", "end", bed.n, None, detail))
        self._publish(bed, [], bed.side.finish(), None)
        self._strips(bed, final=True)
        self._tell(
            {
                "type": "end",
                "bed": bed.name,
                "total_samples": bed.side.n_samples + bed.base,
                "counts": dict(bed.side.counts),
            }
        )

    @staticmethod
    def _envelope(bed: _Bed, kind: str) -> dict:
        """The fields every beat and alert message starts with; takes the topic's next
        sequence number."""
        seq = bed.seq[kind]
        bed.seq[kind] += 1
        return {"v": 1, "type": kind, "bed": bed.name, "record": bed.record, "seq": seq}

    def _publish(self, bed: _Bed, recs: list[dict], alerts: list[Alert], rx: float | None) -> None:
        paced = bool(bed.sent and bed.sent[-1][3])
        for rec in recs:
            body = {
                **self._envelope(bed, BEAT),
                **rec,
                "sample": rec["sample"] + bed.base,
                "time_s": round((rec["sample"] + bed.base) / FS, 4),  # on the same clock
                "record_sample": bed.record_sample(rec["sample"]),
            }
            self._emit(BEAT, bed.name, body)
            now = self.clock()
            self.stats.beats += 1
            if rx is not None:
                self.stats.compute_s.append(now - rx)
            if paced:
                acq = bed.acquired_at(rec["sample"])
                if acq is not None:
                    self.stats.label_latency_s.append(self.wall() - acq)
        for a in alerts:
            self._alert(bed, a)

    def _alert(self, bed: _Bed, a: Alert) -> None:
        if a.kind in _GAP_KINDS and self._in_gap(bed, a):
            self.stats.suppressed[a.kind] = self.stats.suppressed.get(a.kind, 0) + 1
            return
        body = {**self._envelope(bed, ALERT), **a.to_dict(), "name": NAMES[a.kind]}
        body["sample"] += bed.base
        # samples in the detail too, on the published clock (an end names its onset's sample)
        body["detail"] = {
            k: v + bed.base if k in _DETAIL_SAMPLES else v for k, v in body["detail"].items()
        }
        body["time_s"] = round(body["sample"] / FS, 3)
        if body["beat_sample"] is not None:
            body["beat_sample"] += bed.base
        self._emit(ALERT, bed.name, body)
        self.stats.alerts += 1
        if a.beat_sample is not None and bed.sent and bed.sent[-1][3]:
            acq = bed.acquired_at(a.beat_sample)
            if acq is not None:
                self.stats.alarm_delay_s.append((a.kind, a.state, self.wall() - acq))
        if (
            a.state in ("onset", "event")
            and a.kind in STRIP_KINDS
            and bed.n_strips.get(a.kind, 0) < _MAX_STRIPS.get(a.kind, _MAX_STRIPS_OTHER)
        ):
            bed.n_strips[a.kind] = bed.n_strips.get(a.kind, 0) + 1
            bed.strips.append((a.sample - _STRIP_BEFORE, a.kind, a.sample))

    @staticmethod
    def _in_gap(bed: _Bed, a: Alert) -> bool:
        """Whether a clock-declared condition (no beat for a while) lay over samples that
        never came: a data gap is not an asystole. Its ``end`` is muted with its onset."""
        if a.state == "end":
            muted = a.kind in bed.muted
            bed.muted.discard(a.kind)
            return muted
        since = (a.detail or {}).get("since_sample", a.sample)
        if bed.in_gap(min(since, a.sample), max(a.sample, a.beat_sample or a.sample)):
            if a.state == "onset":
                bed.muted.add(a.kind)
            return True
        return False

    def _strips(self, bed: _Bed, *, final: bool = False) -> None:
        """Hand the listeners the ECG strips whose samples are all in."""
        keep = []
        for start, kind, at in bed.strips:
            end = start + _STRIP_BEFORE + _STRIP_AFTER
            if end <= bed.ring_end or final:
                a = max(start, bed.ring_end - _RING, 0)
                b = min(end, bed.ring_end)
                x = bed.recall(a, b)
                if b - a < 2:
                    continue
                self._tell(
                    {
                        "type": "strip",
                        "bed": bed.name,
                        "kind": kind,
                        "start_sample": a + bed.base,
                        "sample": at + bed.base,
                        "fs": FS,
                        "mv": [round(float(v), 4) for v in x],
                    }
                )
            else:
                keep.append((start, kind, at))
        bed.strips = keep

    def _check_loss(self) -> None:
        now = self.clock()
        for bed in self.beds.values():
            if not bed.ended and not bed.in_loss and now - bed.last_rx > self.signal_loss_s:
                bed.in_loss, bed.loss_onset = True, bed.n
                self._alert(
                    bed,
                    Alert(
                        "signal_loss",
                        "onset",
                        bed.n,
                        None,
                        {"silent_s": round(now - bed.last_rx, 2)},
                    ),
                )

    def _status(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_status < self.status_every_s:
            return
        self._last_status = now
        if time.monotonic() - self._trimmed_at >= TRIM_EVERY_S:
            release_memory()
            self._trimmed_at = time.monotonic()
        # beats per second over the last 5 s, from the counter (no per-beat bookkeeping)
        self._beat_marks.append((now, self.stats.beats))
        while len(self._beat_marks) > 1 and now - self._beat_marks[0][0] > 5.0:
            self._beat_marks.popleft()
        t0, b0 = self._beat_marks[0]
        comp = self.stats.compute_s.last(_STATUS_WINDOW) * 1000.0
        lab = self.stats.label_latency_s.last(_STATUS_WINDOW)
        body = {
            "v": 1,
            "type": "status",
            "consumer": self.identity.decode(),
            "model": self.model_name,
            "beds": len(self.beds),
            "beats_per_s": round((self.stats.beats - b0) / (now - t0), 1) if now > t0 else 0.0,
            "beats": self.stats.beats,
            "alerts": self.stats.alerts,
            "compute_ms": {"p50": _pct(comp, 50), "p99": _pct(comp, 99)},
            "label_latency_s": {"p50": _pct(lab, 50), "p95": _pct(lab, 95)},
            "gaps": sum(self.stats.gaps.values()),
            "lost_samples": sum(self.stats.lost_samples.values()),
            "messages": self.stats.messages,
            "samples": sum(self.stats.samples.values()),
            "refused": dict(self.stats.refused),
            "suppressed": dict(self.stats.suppressed),
        }
        self._emit(STATUS, None, body)


def _pct(x: np.ndarray, q: float) -> float | None:
    return None if not len(x) else round(float(np.percentile(x, q)), 3)


def severity_rank(kind: str) -> int:
    """0 critical, 1 warning, 2 advisory (for sorting)."""
    return {"critical": 0, "warning": 1, "advisory": 2}[SEVERITY[kind]]
