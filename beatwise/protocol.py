"""The BeatWise wire protocol (version 1): frames, headers and the credit ledger.

Pure Python + numpy: no socket library is imported here, so the library stays free of
pyzmq; the publisher (``replay``) and the consumer (``stream``) do the socket I/O and call
these functions on the frames. ``docs/protocol.md`` is the prose version of this module.

Frames:
    samples  ``[b"ecg.<bed>", header JSON, float32 little-endian samples]``
    beats    ``[b"beat.<bed>", JSON]``
    alerts   ``[b"alert.<bed>", JSON]``
    status   ``[b"status", JSON]``
    hello    ``[b"ctl", JSON]`` -- repeated by a server until its clients said ``ready``.

Control (DEALER client -> ROUTER server), JSON:
    ``{"type": "ready", "client": id, "flow": true}`` -- my subscription works (I received
    a hello); ``"flow": false`` for a client that takes a subset of topics and so cannot
    take part in the credit.
    ``{"type": "ack", "client": id, "received": n}`` -- I have processed n data messages.
    ``{"type": "bye", "client": id}`` -- I am leaving; do not wait for me.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "PROTOCOL_VERSION",
    "CreditLedger",
    "ProtocolError",
    "decode_json",
    "decode_samples",
    "encode_json",
    "encode_samples",
    "exact_topic",
    "topic",
]

#: Version carried in every header as ``"v"``; a receiver rejects other major versions.
PROTOCOL_VERSION = 1

#: Prefixes of the topic frame.
SAMPLES, BEAT, ALERT, STATUS, HELLO = "ecg", "beat", "alert", "status", "ctl"


class ProtocolError(ValueError):
    """A frame that does not follow the protocol (wrong part count, version, dtype, size)."""


def topic(kind: str, bed: str | None = None) -> bytes:
    """Topic frame: ``b"<kind>.<bed>"``, or ``b"<kind>"`` without a bed."""
    if bed is not None and ("." in bed or not bed or not bed.isprintable() or " " in bed):
        raise ProtocolError(
            f"bed name {bed!r}: expected a non-empty printable name without '.' or spaces."
        )
    return (kind if bed is None else f"{kind}.{bed}").encode()


def exact_topic(frame: bytes) -> tuple[str, str | None]:
    """Split a topic frame into ``(kind, bed)``.

    ZeroMQ subscriptions are prefixes (``ecg.20`` also matches ``ecg.208``): receivers that
    want one bed compare the bed returned here, exactly.
    """
    text = frame.decode("utf-8", "replace")
    kind, _, bed = text.partition(".")
    return kind, (bed or None)


def encode_json(obj: dict) -> bytes:
    """A JSON frame (UTF-8, compact)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def decode_json(frame: bytes) -> dict:
    """Parse a JSON frame; check its protocol version when it carries one."""
    try:
        obj = json.loads(frame)
    except ValueError as exc:
        raise ProtocolError(f"JSON frame {frame[:60]!r}...: not valid JSON ({exc}).") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(f"JSON frame: expected an object, got {type(obj).__name__}.")
    v = obj.get("v", PROTOCOL_VERSION)
    if v != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {v!r}; this build speaks {PROTOCOL_VERSION}.")
    return obj


def encode_samples(header: dict, samples: np.ndarray) -> tuple[bytes, bytes]:
    """Header and payload frames of one chunk: ``header["n"]`` is set to the sample count."""
    payload = np.ascontiguousarray(samples, dtype="<f4")
    header = {"v": PROTOCOL_VERSION, **header, "n": int(payload.size)}
    return encode_json(header), payload.tobytes()


def decode_samples(frames: list[bytes]) -> tuple[dict, np.ndarray]:
    """``[topic, header, payload]`` -> ``(header, float32 samples)``; checks count and size."""
    if len(frames) != 3:
        raise ProtocolError(f"samples message: expected 3 frames, got {len(frames)}.")
    header = decode_json(frames[1])
    payload = frames[2]
    if len(payload) % 4:
        raise ProtocolError(f"samples payload of {len(payload)} bytes: not a float32 array.")
    x = np.frombuffer(payload, dtype="<f4")
    if header.get("type", "samples") == "samples" and x.size != header.get("n"):
        raise ProtocolError(
            f"samples payload holds {x.size} samples; header says n={header.get('n')!r}."
        )
    return header, x


@dataclass
class CreditLedger:
    """Server-side bookkeeping of the handshake and of credit-based flow control.

    A client says ``ready`` once it has received a hello (its subscription works), then
    acknowledges the data messages it has processed. The server may send at most
    ``window`` messages beyond the slowest ready client's acknowledgement, so with high-water
    marks above ``window`` a PUB socket never drops a message for a ready client.

    Args:
        window: Most unacknowledged data messages per client. Default 4096.
        stale_s: A client silent this long (seconds) while the server waits on it is dropped,
            so a crashed client cannot stall the stream. Default 10.0.
    """

    window: int = 4096
    stale_s: float = 10.0
    sent: int = 0
    clients: dict[bytes, dict] = field(default_factory=dict)
    passive: set[bytes] = field(default_factory=set)
    dropped: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"credit window {self.window!r}: expected >= 1 message.")

    def on_control(self, identity: bytes, frame: bytes, now: float) -> None:
        """Apply one control message from client ``identity`` at time ``now`` (seconds)."""
        msg = decode_json(frame)
        kind = msg.get("type")
        if kind == "ready" and not msg.get("flow", True):
            # A client that takes a subset of topics cannot ack every message: it joins the
            # handshake but not the credit (its loss shows in the per-topic sequence numbers).
            self.passive.add(identity)
        elif kind == "ready":
            # Credit counts from the first message sent after the client became ready.
            self.clients.setdefault(identity, {"base": self.sent, "acked": 0, "seen": now})
        elif kind == "ack" and identity in self.clients:
            c = self.clients[identity]
            c["acked"] = max(c["acked"], int(msg.get("received", 0)))
            c["seen"] = now
        elif kind == "bye":
            self.clients.pop(identity, None)
            self.passive.discard(identity)
        elif kind not in ("ready", "ack", "bye"):
            raise ProtocolError(f"control message type {kind!r}: expected ready, ack or bye.")

    @property
    def n_ready(self) -> int:
        """Clients that completed the handshake (credit-taking and passive)."""
        return len(self.clients) + len(self.passive)

    def credit(self, now: float) -> int:
        """Messages that may be sent now (a large number when no client is registered)."""
        if not self.clients:
            return 1 << 30
        for ident, c in list(self.clients.items()):
            if now - c["seen"] > self.stale_s and self._outstanding(c) >= self.window:
                self.clients.pop(ident)
                self.dropped.append(ident)
        if not self.clients:
            return 1 << 30
        return min(self.window - self._outstanding(c) for c in self.clients.values())

    def _outstanding(self, c: dict) -> int:
        return self.sent - c["base"] - c["acked"]

    def all_acked(self) -> bool:
        """Every ready client has acknowledged every message sent."""
        return all(self._outstanding(c) <= 0 for c in self.clients.values())
