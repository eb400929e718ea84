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

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import zmq

from beatwise.bedside import Bedside, Classifier
from beatwise.classes import CLASSES
from beatwise.dsp.beats import Beats
from beatwise.keys import CurveKeys, secure_client, secure_server
from beatwise.protocol import (
    ALERT,
    BEAT,
    HELLO,
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
from beatwise.rhythm import NAMES, SEVERITY, Alert

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


@dataclass
class ConsumerStats:
    """Counters and latency samples of a consumer run.

    Attributes:
        messages: Sample messages received.
        samples: Samples received per bed.
        lost_samples: Samples missing per bed (sequence gaps; filled flat).
        gaps: Sequence gaps per bed.
        beats: Beats published.
        alerts: Alerts published.
        compute_s: Per beat: receipt of the message that completed it -> published (s).
        label_latency_s: Per beat, paced streams only: R peak acquired -> label published (s).
        alarm_delay_s: Per alert completed by a beat, paced streams only: that beat's R peak
            acquired -> alert published, as ``(kind, state, seconds)``.
        cpu_s: Process CPU time spent in :meth:`StreamConsumer.run` (s).
        first_data_at: Clock time of the first source message (s); ``last_data_at``: of
            the last one.
        wall_s: Wall time of the run (s).
    """

    messages: int = 0
    samples: dict[str, int] = field(default_factory=dict)
    lost_samples: dict[str, int] = field(default_factory=dict)
    gaps: dict[str, int] = field(default_factory=dict)
    beats: int = 0
    alerts: int = 0
    compute_s: list[float] = field(default_factory=list)
    label_latency_s: list[float] = field(default_factory=list)
    alarm_delay_s: list[tuple[str, str, float]] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    first_data_at: float | None = None
    last_data_at: float | None = None


class _Bed:
    """Per-bed state of the consumer."""

    def __init__(self, name: str, header: dict) -> None:
        self.name = name
        self.record = header.get("record")
        self.base = int(header.get("first_sample", 0))  # stream sample of our sample 0
        self.record_offset = int(header.get("record_offset", 0))
        self.side = Bedside(fs=FS)
        self.next_seq = int(header.get("seq", 0))
        self.next_sample = self.base
        self.chunks: list[np.ndarray] = []
        self.last_rx = 0.0
        self.ended = False
        self.total: int | None = None
        self.in_loss = False
        self.ring = np.zeros(_RING, np.float32)
        self.ring_end = 0  # our sample index one past the ring's last sample
        self.sent: deque[tuple[int, int, float, float]] = deque(
            maxlen=512
        )  # first, n, sent_at, speed
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

    def acquired_at(self, sample: int) -> float | None:
        """Wall time at which our sample ``sample`` was acquired (paced streams), s."""
        g = sample + self.base
        # R peaks are recent: scan back from the newest chunk (a few steps)
        for first, n, sent_at, speed in reversed(self.sent):
            if first <= g:
                if not speed or g >= first + n:
                    return None
                return sent_at - (first + n - 1 - g) / (FS * speed)
        return None


class StreamConsumer:
    """Subscribes to a replay (or any source speaking the protocol), classifies, publishes.

    Args:
        classifier: Anything with ``predict(beats) -> (n, 6)`` probabilities.
        connect: The source's PUB endpoint. Default ``tcp://127.0.0.1:5555``.
        control: The source's control endpoint. Default ``tcp://127.0.0.1:5556``.
        publish: Endpoint to bind for beats and alerts; None: publish nothing (the monitor
            still sees everything through ``listeners``). Default ``tcp://127.0.0.1:5557``.
        publish_control: Control endpoint of ``publish``. Default ``tcp://127.0.0.1:5558``.
        beds: Only these beds (default: every bed of the source).
        wait_subscribers: Subscribers of ``publish`` that must be ready before we tell the
            source we are. Default 0.
        listeners: Callables given every published message as a dict (and, in-process only,
            ``{"type": "samples", "bed", "x"}`` and ``{"type": "strip", ...}``).
        window: Credit window towards our own subscribers, messages. Default 4096.
        max_batch: Most source messages taken per processing round. Default 2048.
        signal_loss_s: No samples from a started bed for this long (wall s) -> alarm.
            Default 2.0.
        status_every_s: Publish a status message this often (s). Default 1.0.
        model_name: Shown in the status messages. Default "".
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
        signal_loss_s: float = 2.0,
        status_every_s: float = 1.0,
        model_name: str = "",
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
        self.classifier = classifier
        self.connect = connect
        self.control = control
        self.publish = publish
        self.publish_control = publish_control
        self.only = None if beds is None else set(beds)
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
        self.stats = ConsumerStats()
        self.bound = threading.Event()  # set once the output sockets are bound
        self._recent_compute: deque[float] = deque(maxlen=2000)
        self._recent_beats: deque[float] = deque(maxlen=4000)

    # -- sockets -------------------------------------------------------------------------

    def _open(self) -> None:
        ctx = self.context
        self._sub = ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.RCVHWM, 4 * self.window + 1024)
        self._sub.setsockopt(zmq.LINGER, 0)
        for b in sorted(self.only) if self.only else [""]:
            self._sub.setsockopt(zmq.SUBSCRIBE, topic(SAMPLES, b) if b else f"{SAMPLES}.".encode())
        self._sub.setsockopt(zmq.SUBSCRIBE, topic(HELLO))
        secure_client(self._sub, self.curve)
        self._sub.connect(self.connect)
        self._dealer = ctx.socket(zmq.DEALER)
        self._dealer.setsockopt(zmq.IDENTITY, self.identity)
        self._dealer.setsockopt(zmq.LINGER, 1000)
        secure_client(self._dealer, self.curve)
        self._dealer.connect(self.control)
        self._pub = self._octl = None
        if self.publish:
            self._pub = ctx.socket(zmq.PUB)
            self._pub.setsockopt(zmq.SNDHWM, 4 * self.window + 1024)
            self._pub.setsockopt(zmq.LINGER, 2000)
            secure_server(self._pub, self.publish_curve)
            self._pub.bind(self.publish)
            self._octl = ctx.socket(zmq.ROUTER)
            self._octl.setsockopt(zmq.LINGER, 0)
            secure_server(self._octl, self.publish_curve)
            self._octl.bind(self.publish_control)
            self.publish = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
            self.publish_control = self._octl.getsockopt_string(zmq.LAST_ENDPOINT)
        self.ledger = CreditLedger(window=self.window)
        self.bound.set()

    def _close(self) -> None:
        try:
            self._dealer.send(
                encode_json({"v": 1, "type": "bye", "client": self.identity.decode()})
            )
        except zmq.ZMQError:
            pass
        for s in (self._sub, self._dealer, self._pub, self._octl):
            if s is not None:
                s.close()

    def _drain_out_control(self, timeout_ms: int = 0) -> None:
        if self._octl is None or not self._octl.poll(timeout_ms):
            return
        while True:
            try:
                ident, frame = self._octl.recv_multipart(zmq.NOBLOCK)[:2]
            except zmq.Again:
                return
            except ValueError:
                continue
            try:
                self.ledger.on_control(ident, frame, self.clock())
            except ProtocolError:
                continue

    def _emit(self, kind: str, bed: str | None, body: dict) -> None:
        """Publish one message (waiting for credit if a subscriber takes it) and tell the
        listeners."""
        if self._pub is not None:
            while self.ledger.credit(self.clock()) <= 0:
                self._drain_out_control(50)
            self._pub.send_multipart([topic(kind, bed), encode_json(body)])
            self.ledger.sent += 1
        for fn in self.listeners:
            fn(body)

    def _tell(self, body: dict) -> None:
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
        self._open()
        cpu0, t0 = time.process_time(), self.clock()
        try:
            while self.ledger.n_ready < self.wait_subscribers and not stop.is_set():
                if self._pub is not None:
                    self._pub.send_multipart(
                        [topic(HELLO), encode_json({"v": 1, "type": "hello", "role": "consumer"})]
                    )
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
        ready_sent = False
        self._expected: set[str] = set()
        received = 0
        acked = 0
        self._last_status = self.clock()
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
            if not poller.poll(50):
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
                kind, bed = exact_topic(frames[0])
                if kind == HELLO:
                    try:  # the source's bed list: wait for all of them to end
                        beds = decode_json(frames[1]).get("beds") or []
                    except ProtocolError:
                        beds = []
                    self._expected |= {b for b in beds if not self.only or b in self.only}
                    if not ready_sent:
                        self._send_ready()
                        ready_sent = True
                    continue
                if kind != SAMPLES or bed is None or (self.only and bed not in self.only):
                    continue
                n += 1
                if not ready_sent:  # joined a running stream: data proves the subscription
                    self._send_ready()
                    ready_sent = True
                try:
                    header, x = decode_samples(frames)
                except ProtocolError:
                    continue
                self._take(bed, header, x)
                touched[bed] = self.clock()
            received += n
            if touched:
                self._process(touched)
            if received - acked >= 64 or (received > acked and not self._sub.poll(0)):
                self._dealer.send(
                    encode_json(
                        {
                            "v": 1,
                            "type": "ack",
                            "client": self.identity.decode(),
                            "received": received,
                        }
                    )
                )
                acked = received
            self._check_loss()
            self._status()
        if received > acked:
            self._dealer.send(
                encode_json(
                    {"v": 1, "type": "ack", "client": self.identity.decode(), "received": received}
                )
            )

    def _send_ready(self) -> None:
        self._dealer.send(
            encode_json({"v": 1, "type": "ready", "client": self.identity.decode(), "flow": True})
        )

    def _take(self, name: str, header: dict, x: np.ndarray) -> None:
        """One message from the source: check its sequence number, queue its samples."""
        bed = self.beds.get(name)
        seq = int(header.get("seq", 0))
        if bed is None or (seq == 0 and bed.ended):
            bed = self.beds[name] = _Bed(name, header)
            self.stats.gaps.setdefault(name, 0)
            self.stats.lost_samples.setdefault(name, 0)
            self.stats.samples.setdefault(name, 0)
            self._tell(
                {
                    "type": "bed",
                    "bed": name,
                    "record": bed.record,
                    "record_offset": bed.record_offset + bed.base,
                    "fs": FS,
                }
            )
        if bed.ended:
            return
        bed.last_rx = self.stats.last_data_at = self.clock()
        if self.stats.first_data_at is None:
            self.stats.first_data_at = bed.last_rx
        if bed.in_loss:
            bed.in_loss = False
            self._alert(bed, Alert("signal_loss", "end", bed.next_sample - bed.base))
        if seq != bed.next_seq:
            first = int(header.get("first_sample", bed.next_sample))
            missing = max(first - bed.next_sample, 0)
            self.stats.gaps[name] += 1
            self.stats.lost_samples[name] += missing
            self._alert(
                bed,
                Alert(
                    "data_gap",
                    "event",
                    bed.next_sample - bed.base,
                    None,
                    {"missing_messages": seq - bed.next_seq, "missing_samples": missing},
                ),
            )
            if missing:  # keep the sample clock true: fill flat with the last value
                last = bed.chunks[-1][-1] if bed.chunks else bed.ring[(bed.ring_end - 1) % _RING]
                bed.chunks.append(np.full(missing, last, np.float32))
                bed.next_sample += missing
        bed.next_seq = seq + 1
        if header.get("type") == "end":
            bed.ended = True
            bed.total = int(header.get("total_samples", bed.next_sample))
            return
        bed.chunks.append(x)
        bed.sent.append(
            (
                int(header["first_sample"]),
                len(x),
                float(header.get("sent_at", 0.0)),
                float(header.get("speed") or 0.0),
            )
        )
        bed.next_sample += len(x)
        self.stats.messages += 1
        self.stats.samples[name] += len(x)

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

    def _finish_bed(self, bed: _Bed) -> None:
        bed.ended = True
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

    def _publish(self, bed: _Bed, recs: list[dict], alerts: list[Alert], rx: float | None) -> None:
        paced = bool(bed.sent and bed.sent[-1][3])
        for rec in recs:
            body = {
                "v": 1,
                "type": "beat",
                "bed": bed.name,
                "record": bed.record,
                "seq": bed.seq[BEAT],
                **rec,
                "sample": rec["sample"] + bed.base,
                "record_sample": rec["sample"] + bed.base + bed.record_offset,
            }
            bed.seq[BEAT] += 1
            self._emit(BEAT, bed.name, body)
            now = self.clock()
            self._recent_beats.append(now)
            self.stats.beats += 1
            if rx is not None:
                self.stats.compute_s.append(now - rx)
                self._recent_compute.append(now - rx)
            if paced:
                acq = bed.acquired_at(rec["sample"])
                if acq is not None:
                    self.stats.label_latency_s.append(self.wall() - acq)
        for a in alerts:
            self._alert(bed, a)

    def _alert(self, bed: _Bed, a: Alert) -> None:
        body = {
            "v": 1,
            "type": "alert",
            "bed": bed.name,
            "record": bed.record,
            "seq": bed.seq[ALERT],
            **a.to_dict(),
            "name": NAMES[a.kind],
        }
        body["sample"] += bed.base
        body["time_s"] = round(body["sample"] / FS, 3)
        if body["beat_sample"] is not None:
            body["beat_sample"] += bed.base
        bed.seq[ALERT] += 1
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
                bed.in_loss = True
                self._alert(
                    bed,
                    Alert(
                        "signal_loss",
                        "onset",
                        bed.next_sample - bed.base,
                        None,
                        {"silent_s": round(now - bed.last_rx, 2)},
                    ),
                )

    def _status(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_status < self.status_every_s:
            return
        self._last_status = now
        recent = [t for t in self._recent_beats if now - t <= 5.0]
        comp = np.asarray(self._recent_compute) * 1000.0
        lab = np.asarray(self.stats.label_latency_s[-2000:])
        body = {
            "v": 1,
            "type": "status",
            "model": self.model_name,
            "beds": len(self.beds),
            "beats_per_s": round(len(recent) / 5.0, 1),
            "beats": self.stats.beats,
            "alerts": self.stats.alerts,
            "compute_ms": {"p50": _pct(comp, 50), "p99": _pct(comp, 99)},
            "label_latency_s": {"p50": _pct(lab, 50), "p95": _pct(lab, 95)},
            "gaps": sum(self.stats.gaps.values()),
            "lost_samples": sum(self.stats.lost_samples.values()),
            "messages": self.stats.messages,
        }
        self._emit(STATUS, None, body)


def _pct(x: np.ndarray, q: float) -> float | None:
    return None if not len(x) else round(float(np.percentile(x, q)), 3)


def severity_rank(kind: str) -> int:
    """0 critical, 1 warning, 2 advisory (for sorting)."""
    return {"critical": 0, "warning": 1, "advisory": 2}[SEVERITY[kind]]
