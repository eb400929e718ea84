"""A subscriber of the consumer's beats and alerts: the model for other tools.

It takes part in the handshake (so it misses nothing from the start) and, when it takes every
topic, in the credit (so the consumer never outruns it). Sequence numbers per topic show any
loss to a subscriber that does not take credit.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import zmq

from beatwise.keys import CurveKeys, secure_client
from beatwise.protocol import HELLO, decode_json, encode_json, exact_topic

__all__ = ["Subscriber"]


class Subscriber:
    """Iterate over the consumer's messages as dicts.

    Args:
        endpoint: The consumer's PUB endpoint (e.g. ``tcp://127.0.0.1:5557``).
        control: Its control endpoint (e.g. ``tcp://127.0.0.1:5558``); None: no handshake
            (a late joiner; the first messages may be missed).
        prefixes: Topic prefixes to take, e.g. ``("alert.",)``. Default: everything (and
            then the subscriber takes part in the credit).
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
        curve: CurveKeys | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.control = control
        self.prefixes = prefixes
        self.flow = prefixes == ("",)
        ctx = context or zmq.Context.instance()
        self.identity = f"sub-{uuid.uuid4().hex[:8]}"
        self._sub = ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.RCVHWM, 100_000)
        self._sub.setsockopt(zmq.LINGER, 0)
        for p in prefixes:
            self._sub.setsockopt(zmq.SUBSCRIBE, p.encode())
        if not self.flow:
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
        self.received = 0
        self._acked = 0
        #: Next expected sequence number per topic, and gaps seen.
        self.next_seq: dict[str, int] = {}
        self.gaps = 0

    def _control(self, kind: str, **extra) -> None:
        if self._dealer is not None:
            self._dealer.send(encode_json({"v": 1, "type": kind, "client": self.identity, **extra}))

    def recv(self, timeout_s: float | None = None) -> dict | None:
        """The next message (dict), or None after ``timeout_s`` seconds without one."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sub.poll(left):
                self._ack(force=True)
                return None
            frames = self._sub.recv_multipart()
            kind, bed = exact_topic(frames[0])
            if not self._ready:
                self._control("ready", flow=self.flow)
                self._ready = True
            if kind == HELLO:
                continue
            self.received += 1
            self._ack()
            msg = decode_json(frames[1])
            t = frames[0].decode()
            if "seq" in msg:
                exp = self.next_seq.get(t)
                if exp is not None and msg["seq"] != exp:
                    self.gaps += 1
                self.next_seq[t] = msg["seq"] + 1
            return msg

    def _ack(self, *, force: bool = False) -> None:
        if self.flow and (
            self.received - self._acked >= 64 or (force and self.received > self._acked)
        ):
            self._control("ack", received=self.received)
            self._acked = self.received

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
