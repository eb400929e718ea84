"""One alert stream for a ward served by several consumers: a ZeroMQ XSUB/XPUB proxy.

Beds are sharded across consumer processes (``beatwise monitor --shard PREFIX``); each
connects its PUB socket to the proxy's XSUB side (``--publish '>tcp://host:5559'``);
subscribers connect to the XPUB side and see every bed, whichever consumer serves it.
Subscriptions travel upstream through the proxy, so a consumer still sends only what some
subscriber wants. The proxy is ZeroMQ's own device (``zmq.proxy_steerable``), run until
stopped.

Proxy subscribers take no credit (they cannot reach a consumer's control socket): a slow one
never slows a consumer, and its loss shows in the per-topic sequence numbers.
"""

from __future__ import annotations

import threading
import uuid

import zmq

from beatwise.keys import CurveKeys, secure_server

__all__ = ["DEFAULT_BACKEND", "DEFAULT_FRONTEND", "Proxy"]

#: Where consumers connect their PUB sockets (loopback by default).
DEFAULT_FRONTEND = "tcp://127.0.0.1:5559"
#: Where subscribers connect.
DEFAULT_BACKEND = "tcp://127.0.0.1:5560"


class Proxy:
    """XSUB ``frontend`` (consumers connect) <-> XPUB ``backend`` (subscribers connect).

    Args:
        frontend: Endpoint to bind for the consumers. Default ``tcp://127.0.0.1:5559``.
        backend: Endpoint to bind for the subscribers. Default ``tcp://127.0.0.1:5560``.
        curve: CURVE keys of the subscriber side: encrypted, only ``curve.allowed``
            subscribers accepted. Default None.
        context: ZeroMQ context. Default: the process's shared instance.
    """

    def __init__(
        self,
        *,
        frontend: str = DEFAULT_FRONTEND,
        backend: str = DEFAULT_BACKEND,
        curve: CurveKeys | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.frontend = frontend
        self.backend = backend
        self.curve = curve
        self.context = context or zmq.Context.instance()
        self._control = f"inproc://proxy-{uuid.uuid4().hex[:8]}"
        self.ready = threading.Event()  # set once both sides are bound

    def run(self) -> None:
        """Bind both sides and forward until :meth:`stop`."""
        xsub = self.context.socket(zmq.XSUB)
        xpub = self.context.socket(zmq.XPUB)
        ctl = self.context.socket(zmq.PAIR)
        try:
            for s in (xsub, xpub):
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.RCVHWM, 100_000)
                s.setsockopt(zmq.SNDHWM, 100_000)
            xsub.bind(self.frontend)
            secure_server(xpub, self.curve)
            xpub.bind(self.backend)
            ctl.bind(self._control)
            self.frontend = xsub.getsockopt_string(zmq.LAST_ENDPOINT)
            self.backend = xpub.getsockopt_string(zmq.LAST_ENDPOINT)
            self.ready.set()
            zmq.proxy_steerable(xsub, xpub, None, ctl)
        finally:
            for s in (xsub, xpub, ctl):
                s.close(0)

    def stop(self) -> None:
        """Ask a running proxy (another thread) to return."""
        s = self.context.socket(zmq.PAIR)
        s.connect(self._control)
        s.send(b"TERMINATE")
        s.close(1000)
