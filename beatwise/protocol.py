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
import re
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
    """A frame that does not follow the protocol (wrong part count, version, dtype, size).

    Attributes:
        reason: Short code of the refusal, counted per code by receivers (see
            :data:`REASONS`).
    """

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


#: Refusal codes a receiver counts (``ProtocolError.reason``).
REASONS = (
    "frames",  # wrong number of frames
    "json",  # header not JSON, or not an object
    "version",  # another protocol version
    "header",  # a field missing or of the wrong type / range
    "bed",  # malformed bed name, or topic and header disagree
    "fs",  # sampling rate other than the protocol's
    "size",  # payload length does not match the header, or beyond the per-message cap
    "non_finite",  # NaN or Inf samples
    "seq",  # sequence number going backwards or repeating
    "unknown_bed",  # a bed the source did not announce
    "too_many_beds",  # beyond the receiver's bed cap
)

#: Sampling rate of every samples message, Hz.
FS = 360
#: Most samples in one message (60 s at 360 Hz); receivers also cap the raw message size.
MAX_SAMPLES = 60 * FS
#: Bed names: letters, digits, ``_`` and ``-``, 1 to 64 characters.
BED_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def topic(kind: str, bed: str | None = None) -> bytes:
    """Topic frame: ``b"<kind>.<bed>"``, or ``b"<kind>"`` without a bed."""
    if bed is not None and not BED_NAME.fullmatch(bed):
        raise ProtocolError(
            f"bed name {bed!r}: expected 1-64 letters, digits, '_' or '-'.", "bed"
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
        raise ProtocolError(
            f"JSON frame {frame[:60]!r}...: not valid JSON ({exc}).", "json"
        ) from exc
    if not isinstance(obj, dict):
        raise ProtocolError(f"JSON frame: expected an object, got {type(obj).__name__}.", "json")
    v = obj.get("v", PROTOCOL_VERSION)
    if v != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {v!r}; this build speaks {PROTOCOL_VERSION}.", "version"
        )
    return obj


def encode_samples(header: dict, samples: np.ndarray) -> tuple[bytes, bytes]:
    """Header and payload frames of one chunk: ``header["n"]`` is set to the sample count."""
    payload = np.ascontiguousarray(samples, dtype="<f4")
    header = {"v": PROTOCOL_VERSION, **header, "n": int(payload.size)}
    return encode_json(header), payload.tobytes()


def decode_samples(frames: list[bytes]) -> tuple[dict, np.ndarray]:
    """``[topic, header, payload]`` -> ``(header, float32 samples)``, every field checked.

    A samples header needs ``bed`` (equal to the topic's), ``seq``, ``first_sample``,
    ``fs`` = 360, ``n`` = the payload's sample count (1 to :data:`MAX_SAMPLES`); an end
    header needs ``bed``, ``seq``, ``total_samples`` and an empty payload. Samples must be
    finite. Optional fields, when present: ``stream`` (the sender's run id) and ``record``
    are strings, ``record_offset`` an integer >= 0, ``loop_samples`` an integer >= 1,
    ``sent_at`` and ``speed`` finite numbers >= 0 or null.

    Raises:
        ProtocolError: with ``reason`` one of :data:`REASONS`.
    """
    if len(frames) != 3:
        raise ProtocolError(f"samples message: expected 3 frames, got {len(frames)}.", "frames")
    kind, bed = exact_topic(frames[0])
    if kind != SAMPLES or bed is None or not BED_NAME.fullmatch(bed):
        raise ProtocolError(
            f"topic {frames[0][:70]!r}: expected 'ecg.<bed>', bed of 1-64 letters, digits, "
            "'_' or '-'.",
            "bed",
        )
    header = decode_json(frames[1])
    if header.get("bed") != bed:
        raise ProtocolError(
            f"header bed {header.get('bed')!r} on topic {frames[0][:70]!r}: expected {bed!r}.",
            "bed",
        )
    kind = header.get("type", "samples")
    _check_int(header, "seq")
    for key in ("stream", "record"):
        if not isinstance(header.get(key, ""), str):
            raise ProtocolError(f"header {key} {header.get(key)!r}: expected a string.", "header")
    if "record_offset" in header:
        _check_int(header, "record_offset")
    if "loop_samples" in header:
        _check_int(header, "loop_samples")
        if header["loop_samples"] < 1:
            raise ProtocolError(
                f"header loop_samples {header['loop_samples']!r}: expected an integer >= 1.",
                "header",
            )
    for key in ("sent_at", "speed"):  # null or absent: not known
        v = header.get(key)
        if v is not None and (
            not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < float("inf")
        ):
            raise ProtocolError(
                f"header {key} {v!r}: expected a finite number >= 0, or null.", "header"
            )
    payload = frames[2]
    if kind == "end":
        _check_int(header, "total_samples")
        if payload:
            raise ProtocolError(
                f"end message of bed {bed}: expected an empty payload, got {len(payload)} bytes.",
                "size",
            )
        return header, np.zeros(0, np.float32)
    if kind != "samples":
        raise ProtocolError(f"message type {kind!r}: expected 'samples' or 'end'.", "header")
    _check_int(header, "first_sample")
    fs = header.get("fs")
    if fs != FS:
        raise ProtocolError(f"fs {fs!r} Hz on bed {bed}: this protocol carries {FS} Hz.", "fs")
    n = header.get("n")
    if len(payload) % 4 or not 1 <= len(payload) // 4 <= MAX_SAMPLES or n != len(payload) // 4:
        raise ProtocolError(
            f"samples payload of {len(payload)} bytes with n={n!r} on bed {bed}: expected "
            f"4 * n bytes (float32), 1 <= n <= {MAX_SAMPLES}.",
            "size",
        )
    x = np.frombuffer(payload, dtype="<f4")
    if not np.isfinite(x).all():
        raise ProtocolError(
            f"bed {bed} seq {header['seq']}: {int((~np.isfinite(x)).sum())} NaN/Inf samples; "
            "expected finite mV.",
            "non_finite",
        )
    return header, x


def _check_int(header: dict, key: str) -> None:
    v = header.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 53:
        raise ProtocolError(f"header {key} {v!r}: expected an integer >= 0.", "header")


@dataclass
class CreditLedger:
    """Server-side bookkeeping of the handshake and of credit-based flow control.

    A client says ``ready`` once it has received a hello (its subscription works), then
    acknowledges the data messages it has processed. A client that takes only some topics
    names their prefixes in its ``ready`` (``"topics"``), and only messages on those topics
    count against it. The server may send at most ``window`` messages beyond the slowest
    ready client's acknowledgement, so with high-water marks above ``window`` a PUB socket
    never drops a message for a ready client.

    Args:
        window: Most unacknowledged data messages per client. Default 4096.
        stale_s: A client silent this long (seconds) is dropped from the credit, so a crashed
            or stalled client cannot stall the stream; live clients ack at least once a
            second (a heartbeat). Default 3.0.

    A client that acks but is not in the credit (dropped while stalled, or talking to a
    server that restarted) sets :attr:`hello_wanted`: the server then says hello, and the
    client, as on every hello, says ready again and counts its credit from zero.
    """

    window: int = 4096
    stale_s: float = 3.0
    sent: int = 0
    clients: dict[bytes, dict] = field(default_factory=dict)
    passive: set[bytes] = field(default_factory=set)
    dropped: list[bytes] = field(default_factory=list)
    hello_wanted: bool = False

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"credit window {self.window!r}: expected >= 1 message.")
        if not self.stale_s > 0:
            raise ValueError(f"stale_s {self.stale_s!r}: expected > 0 s.")

    def on_control(self, identity: bytes, frame: bytes, now: float) -> None:
        """Apply one control message from client ``identity`` at time ``now`` (seconds)."""
        msg = decode_json(frame)
        kind = msg.get("type")
        if kind == "ready" and not msg.get("flow", True):
            # A client that does not ack joins the handshake but not the credit (its loss
            # shows in the per-topic sequence numbers).
            self.passive.add(identity)
        elif kind == "ready":
            topics = msg.get("topics")
            if topics is not None and (
                not isinstance(topics, list) or not all(isinstance(t, str) for t in topics)
            ):
                raise ProtocolError(f"ready topics {topics!r}: expected a list of strings.")
            # Credit counts from the first message sent after the client became ready; a
            # client that comes back under the same identity (restarted) starts afresh.
            self.clients[identity] = {
                "topics": None if topics is None else tuple(t.encode() for t in topics),
                "sent": 0,
                "acked": 0,
                "seen": now,
            }
        elif kind == "ack":
            received = msg.get("received", 0)
            if not isinstance(received, int) or isinstance(received, bool) or received < 0:
                raise ProtocolError(
                    f"ack received {received!r}: expected an integer >= 0 (messages taken).",
                    "header",
                )
            if identity in self.clients:
                c = self.clients[identity]
                c["acked"] = max(c["acked"], received)
                c["seen"] = now
            else:  # alive, but not (or no longer) in the credit: ask it to say ready again
                self.hello_wanted = True
        elif kind == "bye":
            self.clients.pop(identity, None)
            self.passive.discard(identity)
        elif kind not in ("ready", "ack", "bye"):
            raise ProtocolError(f"control message type {kind!r}: expected ready, ack or bye.")

    def on_send(self, topic_frame: bytes) -> None:
        """Count one data message sent on ``topic_frame`` against the clients that take it."""
        self.sent += 1
        for c in self.clients.values():
            t = c["topics"]
            if t is None or topic_frame.startswith(t):
                c["sent"] += 1

    @property
    def n_ready(self) -> int:
        """Clients that completed the handshake (credit-taking and passive)."""
        return len(self.clients) + len(self.passive)

    def credit(self, now: float) -> int:
        """Messages that may be sent now (a large number when no client is registered)."""
        for ident, c in list(self.clients.items()):
            if now - c["seen"] > self.stale_s:
                self.clients.pop(ident)
                self.dropped.append(ident)
        if not self.clients:
            return 1 << 30
        return min(self.window - (c["sent"] - c["acked"]) for c in self.clients.values())

    def all_acked(self) -> bool:
        """Every ready client has acknowledged every message sent to it."""
        return all(c["sent"] <= c["acked"] for c in self.clients.values())
