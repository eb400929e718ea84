"""Replay publisher: streams records as beds over ZeroMQ, paced at 360 Hz x speed.

Wire format: ``docs/protocol.md`` (and :mod:`beatwise.protocol`). In short, a PUB socket
carries ``[b"ecg.<bed>", header JSON, float32 samples]``; a ROUTER control socket takes the
clients' ``ready`` (handshake) and ``ack`` (credit) messages, so the stream starts only once
the expected clients are subscribed and never runs more than a credit window ahead of the
slowest one: no sample is lost at any speed, ``max`` included.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import zmq

from beatwise.keys import CurveKeys, secure_server
from beatwise.protocol import (
    HELLO,
    MAX_SAMPLES,
    SAMPLES,
    CreditLedger,
    ProtocolError,
    encode_json,
    encode_samples,
    topic,
)
from beatwise.records import FS, load_record

__all__ = [
    "DEFAULT_CONTROL",
    "DEFAULT_ENDPOINT",
    "BedSource",
    "ReplayPublisher",
    "ReplayStats",
    "load_beds",
    "parse_speed",
]

#: Default endpoints: loopback only (nothing leaves the machine unless asked).
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_CONTROL = "tcp://127.0.0.1:5556"

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class BedSource:
    """One bed's signal.

    Attributes:
        bed: Bed name (topic suffix), e.g. ``"208"``.
        record: Record id, e.g. ``"mitdb/208"``.
        signal: Samples in mV at 360 Hz, float32.
        offset: Record sample of stream sample 0 (the start offset), samples.
    """

    bed: str
    record: str
    signal: np.ndarray
    offset: int = 0


def load_beds(
    db: str,
    records: Sequence[str],
    *,
    start_s: float = 0.0,
    duration_s: float | None = None,
    beds: Sequence[str] | None = None,
) -> list[BedSource]:
    """Load records as beds (one lead, mV, resampled to 360 Hz by :func:`load_record`).

    Args:
        db: Database (``"mitdb"``, ``"svdb"``); a record given as ``"db/name"`` overrides it.
        records: Record names; ``"name@s"`` starts that record at ``s`` seconds.
        start_s: Start offset into each record, seconds. Default 0.
        duration_s: Stream only this many seconds of each record. Default: to the end.
        beds: Bed names, one per record. Default: the record names.
    """
    if start_s < 0 or (duration_s is not None and duration_s <= 0):
        raise ValueError(
            f"start_s={start_s!r}, duration_s={duration_s!r}: "
            "expected start >= 0 s and duration > 0 s."
        )
    if beds is not None and len(beds) != len(records):
        raise ValueError(
            f"{len(beds)} bed names for {len(records)} records: expected one per record."
        )
    out = []
    for i, spec in enumerate(records):
        spec, _, at = spec.partition("@")
        rdb, _, name = spec.rpartition("/")
        rec = load_record(rdb or db, name)
        try:
            start = float(at) if at else start_s
        except ValueError:
            raise ValueError(
                f"record {spec}@{at}: expected a start offset in seconds after '@'."
            ) from None
        if start < 0:
            raise ValueError(f"record {spec}@{at}: expected a start offset >= 0 s.")
        a = int(round(start * FS))
        if a >= len(rec.signal):
            raise ValueError(
                f"record {spec}{'@' + at if at else ''}: start {start:g} s is past the end of "
                f"{rec.id} ({rec.duration_s:.0f} s)."
            )
        b = (
            len(rec.signal)
            if duration_s is None
            else min(len(rec.signal), a + int(round(duration_s * FS)))
        )
        bed = beds[i] if beds is not None else (name if not rdb else f"{rdb}-{name}")
        out.append(BedSource(bed, rec.id, rec.signal[a:b].astype(np.float32), a))
    names = [b.bed for b in out]
    if len(set(names)) != len(names):
        raise ValueError(f"bed names {names}: expected distinct names (give --beds).")
    return out


def parse_speed(text: str | float) -> float:
    """``"1"``, ``"10"``, ``"max"`` -> a factor (``math.inf`` for max)."""
    if isinstance(text, str) and text.strip().lower() == "max":
        return math.inf
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"speed {text!r}: expected a positive number or 'max'.") from None
    if not v > 0:
        raise ValueError(f"speed {text!r}: expected a positive number or 'max'.")
    return v


@dataclass
class ReplayStats:
    """What a replay sent: messages, samples per bed, wall time."""

    messages: int = 0
    samples: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    handshake_s: float = 0.0
    clients_dropped: int = 0
    bad_control: int = 0


class ReplayPublisher:
    """Publishes beds chunk by chunk, paced against a monotonic clock without drift.

    Chunk ``k`` of every bed is due at ``t0 + k * chunk_samples / (360 * speed)``: an absolute
    schedule, so sleep jitter never accumulates. At ``speed=inf`` nothing waits but credit.

    Args:
        beds: The beds (:func:`load_beds`).
        endpoint: PUB endpoint to bind. Default ``tcp://127.0.0.1:5555``.
        control: ROUTER endpoint to bind for handshake and credit. Default
            ``tcp://127.0.0.1:5556``.
        speed: Replay speed factor (1 = real time, ``math.inf`` = as fast as credit allows).
            Default 1.
        chunk_samples: Samples per message (36 = 0.1 s). Default 36.
        loop: Start again from the beginning when a record ends (the sample index keeps
            counting). Default False.
        wait_for: Clients that must say ``ready`` before the first sample. Default 1
            (0: start at once; late subscribers then miss the start, and see it from the
            sequence numbers).
        window: Credit window, messages (see :class:`CreditLedger`). Default 4096.
        handshake_timeout_s: Give up waiting for clients after this long (s). Default None
            (wait until stopped).
        client_timeout_s: A credit-taking client silent this long (s) -- crashed, killed,
            stalled -- is dropped from the credit, so the stream goes on without it (it
            rejoins by saying ready again). Default 3.
        curve: CURVE keys: both sockets encrypt and accept only ``curve.allowed`` clients
            (:mod:`beatwise.keys`). Default None (no CURVE; fine on loopback).
        context: ZeroMQ context. Default: the process's shared instance.
        clock: Monotonic clock, s. Default ``time.monotonic``.
        wall: Wall clock, s (``sent_at`` in headers). Default ``time.time``.
    """

    def __init__(
        self,
        beds: Sequence[BedSource],
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        control: str = DEFAULT_CONTROL,
        speed: float = 1.0,
        chunk_samples: int = 36,
        loop: bool = False,
        wait_for: int = 1,
        window: int = 4096,
        handshake_timeout_s: float | None = None,
        client_timeout_s: float = 3.0,
        curve: CurveKeys | None = None,
        context: zmq.Context | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not beds:
            raise ValueError("no beds to replay: expected at least one record.")
        if not speed > 0:
            raise ValueError(f"speed {speed!r}: expected > 0 (math.inf for max).")
        if not 1 <= chunk_samples <= MAX_SAMPLES:
            raise ValueError(
                f"chunk_samples {chunk_samples!r}: expected 1 to {MAX_SAMPLES} samples (the "
                f"protocol's most per message, {MAX_SAMPLES // FS} s; receivers refuse more)."
            )
        if wait_for < 0:
            raise ValueError(f"wait_for {wait_for!r}: expected >= 0 clients.")
        self.beds = list(beds)
        self.endpoint = endpoint
        self.control = control
        self.speed = speed
        self.chunk_samples = chunk_samples
        self.loop = loop
        self.wait_for = wait_for
        self.window = window
        self.handshake_timeout_s = handshake_timeout_s
        self.client_timeout_s = client_timeout_s
        self.curve = curve
        self.context = context or zmq.Context.instance()
        self.clock = clock
        self.wall = wall
        self.stats = ReplayStats()
        #: This run's id, sent as ``stream`` in every header: a receiver tells a restarted
        #: source from a repeated sequence number by it.
        self.stream_id = uuid.uuid4().hex[:12]
        self.ready = threading.Event()  # set once bound (tests connect after this)

    # -- sockets -------------------------------------------------------------------------

    def _bind(self) -> None:
        self._pub = self.context.socket(zmq.PUB)
        # HWM well above the credit window: a ready client can never push us into a drop.
        self._pub.setsockopt(zmq.SNDHWM, 4 * self.window + 1024)
        self._pub.setsockopt(zmq.LINGER, 2000)
        secure_server(self._pub, self.curve)
        self._pub.bind(self.endpoint)
        self.endpoint = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self._ctl = self.context.socket(zmq.ROUTER)
        self._ctl.setsockopt(zmq.LINGER, 0)
        secure_server(self._ctl, self.curve)
        self._ctl.bind(self.control)
        self.control = self._ctl.getsockopt_string(zmq.LAST_ENDPOINT)
        self.ready.set()

    def _close(self) -> None:
        for s in (self._pub, self._ctl):
            if s is not None:
                s.close()

    def _drain_control(self, timeout_ms: int = 0) -> None:
        if not self._ctl.poll(timeout_ms):
            return
        while True:
            try:
                ident, frame = self._ctl.recv_multipart(zmq.NOBLOCK)[:2]
            except zmq.Again:
                break
            except ValueError:
                self.stats.bad_control += 1
                continue
            try:
                self.ledger.on_control(ident, frame, self.clock())
            except ProtocolError as exc:  # a malformed control message: counted, ignored
                self.stats.bad_control += 1
                log.warning("replay: control message from %r refused: %s", ident[:32], exc)
        if self.ledger.hello_wanted:  # a live client we dropped: let it rejoin
            self.ledger.hello_wanted = False
            self._hello()

    def _hello(self) -> None:
        body = {
            "v": 1,
            "type": "hello",
            "role": "replay",
            "beds": [b.bed for b in self.beds],
            "fs": FS,
            "speed": None if math.isinf(self.speed) else self.speed,
        }
        self._pub.send_multipart([topic(HELLO), encode_json(body), b""])

    # -- run -----------------------------------------------------------------------------

    def run(
        self, *, stop: threading.Event | None = None, max_duration_s: float | None = None
    ) -> ReplayStats:
        """Bind, wait for the clients, stream every bed to its end (or until stopped).

        Args:
            stop: Set it to stop early (end-of-stream messages are still sent).
            max_duration_s: Stop after this many seconds of streaming (wall clock).
        """
        stop = stop or threading.Event()
        self._pub = self._ctl = None  # a bind that fails leaves the ones before it for _close
        self.ledger = CreditLedger(window=self.window, stale_s=self.client_timeout_s)
        try:
            self._bind()
            t = self.clock()
            while self.ledger.n_ready < self.wait_for and not stop.is_set():
                self._hello()
                self._drain_control(50)
                if (
                    self.handshake_timeout_s is not None
                    and self.clock() - t > self.handshake_timeout_s
                ):
                    raise TimeoutError(
                        f"replay: {self.ledger.n_ready} of {self.wait_for} clients ready after "
                        f"{self.handshake_timeout_s} s on {self.endpoint} / {self.control}."
                    )
            self.stats.handshake_s = self.clock() - t
            self._stream(stop, max_duration_s)
            # Let every ready client take the last messages before the socket goes.
            t = self.clock()
            while not self.ledger.all_acked() and self.clock() - t < 10.0:
                self._drain_control(20)
                self.ledger.credit(self.clock())  # drops stale clients
        finally:
            self.stats.clients_dropped = len(self.ledger.dropped)
            self._close()
        return self.stats

    def _send(self, parts: list[bytes]) -> None:
        while True:
            now = self.clock()
            if self.ledger.credit(now) > 0:
                break
            self._drain_control(100)
        self._pub.send_multipart(parts, copy=len(parts[-1]) > 4096)
        self.ledger.on_send(parts[0])
        self.stats.messages += 1

    def _stream(self, stop: threading.Event, max_duration_s: float | None) -> None:
        n = self.chunk_samples
        tick_s = n / (FS * self.speed)
        pos = dict.fromkeys((b.bed for b in self.beds), 0)
        seq = dict.fromkeys(pos, 0)
        live = list(self.beds)
        topics = {b.bed: topic(SAMPLES, b.bed) for b in self.beds}
        speed = None if math.isinf(self.speed) else self.speed
        t0 = self.clock()
        k = 0
        while live:
            if not math.isinf(self.speed):
                due = t0 + k * tick_s
                while (wait := due - self.clock()) > 0:
                    self._drain_control(max(1, int(wait * 1000)))
            elif k % 64 == 0:
                self._drain_control(0)
            stopping = stop.is_set() or (
                max_duration_s is not None and self.clock() - t0 >= max_duration_s
            )
            sent_at = self.wall()
            for b in list(live):
                p = pos[b.bed]
                total = len(b.signal)
                if not stopping and (self.loop or p < total):
                    i = p % total
                    x = (
                        b.signal[i : i + n]
                        if i + n <= total or not self.loop
                        else np.concatenate([b.signal[i:], b.signal[: i + n - total]])
                    )
                    header, payload = encode_samples(
                        {
                            "type": "samples",
                            "bed": b.bed,
                            "record": b.record,
                            "fs": FS,
                            "units": "mV",
                            "first_sample": p,
                            "record_offset": b.offset,
                            **({"loop_samples": total} if self.loop else {}),
                            "seq": seq[b.bed],
                            "stream": self.stream_id,
                            "speed": speed,
                            "sent_at": sent_at,
                        },
                        x,
                    )
                    self._send([topics[b.bed], header, payload])
                    seq[b.bed] += 1
                    pos[b.bed] = p + len(x)
                else:
                    end = {
                        "v": 1,
                        "type": "end",
                        "bed": b.bed,
                        "record": b.record,
                        "seq": seq[b.bed],
                        "stream": self.stream_id,
                        "total_samples": p,
                        "sent_at": sent_at,
                    }
                    self._send([topics[b.bed], encode_json(end), b""])
                    self.stats.samples[b.bed] = p
                    live.remove(b)
            k += 1
        self.stats.wall_s = self.clock() - t0
