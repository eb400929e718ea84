"""A subscriber of the consumer's beats and alerts: the model for other tools.

It takes part in the handshake (so it misses nothing from the start). By default it does not
take part in the credit: the consumer never waits for it, and what a slow reader misses
shows in the per-topic sequence numbers (``gaps``). With ``flow=True`` it takes credit: the
consumer never outruns it (a recorder that must lose nothing), and a stalled one is dropped
from the credit after the consumer's ``subscriber_timeout_s``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import zmq

from beatwise.keys import CurveKeys, secure_client
from beatwise.protocol import HELLO, ProtocolError, decode_json, encode_json, exact_topic

__all__ = ["Subscriber"]


class Subscriber:
    """Iterate over the consumer's messages as dicts.

    Args:
        endpoint: The consumer's PUB endpoint (e.g. ``tcp://127.0.0.1:5557``).
        control: Its control endpoint (e.g. ``tcp://127.0.0.1:5558``); None: no handshake
            (a late joiner; the first messages may be missed).
        prefixes: Topic prefixes to take, e.g. ``("alert.",)``. Default: everything.
        flow: Take part in the credit: the consumer never runs more than its window ahead
            of this subscriber, so nothing is dropped for it -- and a slow reader slows the
            consumer down (up to the consumer's ``subscriber_timeout_s``, after which it is
            dropped from the credit). Default False: the consumer never waits for this
            subscriber; what a slow reader misses shows in ``gaps``.
        rcvhwm: Messages queued for a slow reader before ZeroMQ drops. Default 100,000.
        curve: CURVE keys: connect only to the server ``curve.server_key`` (the consumer's
            public key), encrypted (:mod:`beatwise.keys`). Default None (no CURVE).
        context: ZeroMQ context. Default: the process's shared instance.
    """

    def __init__(
        self,
        endpoint: str,
        control: str | None = None,
        *,
        prefixes: tuple[str, ...] = ("",),
        flow: bool = False,
        rcvhwm: int = 100_000,
        curve: CurveKeys | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.control = control
        self.prefixes = prefixes
        self.flow = flow
        ctx = context or zmq.Context.instance()
        self.identity = f"sub-{uuid.uuid4().hex[:8]}"
        self._sub = ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sub.setsockopt(zmq.LINGER, 0)
        for p in prefixes:
            self._sub.setsockopt(zmq.SUBSCRIBE, p.encode())
        if "" not in prefixes:
            self._sub.setsockopt(zmq.SUBSCRIBE, HELLO.encode())
        secure_client(self._sub, curve)
        self._sub.connect(endpoint)
        self._dealer = None
        if control:
            self._dealer = ctx.socket(zmq.DEALER)
            self._dealer.setsockopt(zmq.IDENTITY, self.identity.encode())
            self._dealer.setsockopt(zmq.LINGER, 500)
            secure_client(self._dealer, curve)
            self._dealer.connect(control)
        self._ready = False
        #: Messages taken (hellos aside).
        self.received = 0
        self._taken = 0  # messages taken since our last ready: what the acks count
        self._acked = 0
        #: Next expected sequence number per topic, and gaps seen.
        self.next_seq: dict[str, int] = {}
        self.gaps = 0
        #: Messages that were not valid protocol frames (skipped).
        self.refused = 0
        self._acked_at = time.monotonic()

    def _control(self, kind: str, **extra) -> None:
        if self._dealer is not None:
            try:  # never block on a consumer that does not read its control socket
                self._dealer.send(
                    encode_json({"v": 1, "type": kind, "client": self.identity, **extra}),
                    zmq.NOBLOCK,
                )
            except zmq.Again:
                pass

    def recv(self, timeout_s: float | None = None) -> dict | None:
        """The next message (dict), or None after ``timeout_s`` seconds without one."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = 500 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sub.poll(min(left, 500)):  # wake at least twice a second to ack
                self._ack(force=True)
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            frames = self._sub.recv_multipart()
            kind, bed = exact_topic(frames[0])
            if kind == HELLO:  # on every hello: the server (re)started or dropped us
                self._ready_now()
                continue
            if not self._ready:  # joined a running stream: data proves the subscription
                self._ready_now()
            self.received += 1
            self._taken += 1
            self._ack()
            try:
                msg = decode_json(frames[1])
            except (ProtocolError, IndexError):
                self.refused += 1
                continue
            t = frames[0].decode("utf-8", "replace")
            if isinstance(msg.get("seq"), int):
                exp = self.next_seq.get(t)
                if exp is not None and msg["seq"] != exp:
                    self.gaps += 1
                self.next_seq[t] = msg["seq"] + 1
            return msg

    def _ready_now(self) -> None:
        extra = {"flow": self.flow}
        if self.flow and "" not in self.prefixes:
            extra["topics"] = list(self.prefixes)  # only these count against our credit
        self._control("ready", **extra)
        self._ready = True
        self._taken = self._acked = 0  # the server counts our credit from here

    def _ack(self, *, force: bool = False) -> None:
        """Acknowledge every 64 messages, and (``force``) whatever is left when idle; at
        least once a second as a heartbeat, so the consumer knows a flow subscriber lives."""
        if not self.flow:
            return
        now = time.monotonic()
        if (
            self._taken - self._acked >= 64
            or (force and self._taken > self._acked)
            or now - self._acked_at >= 1.0
        ):
            self._control("ack", received=self._taken)
            self._acked, self._acked_at = self._taken, now

    def __iter__(self) -> Iterator[dict]:
        while True:
            msg = self.recv()
            if msg is not None:
                yield msg

    def close(self) -> None:
        self._ack(force=True)
        self._control("bye")
        self._sub.close()
        if self._dealer is not None:
            self._dealer.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
