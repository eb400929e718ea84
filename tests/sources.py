"""A hand-driven source speaking the wire protocol, to break it on purpose."""

from __future__ import annotations

import json

import numpy as np
import zmq

from beatwise.protocol import encode_json, encode_samples, topic


def endpoints(tmp_path) -> dict[str, str]:
    return {k: f"ipc://{tmp_path}/{k}.sock" for k in ("data", "ctl", "out", "octl")}


class FakeSource:
    """PUB + ROUTER bound like a replay's; every frame is the test's to choose."""

    def __init__(self, tmp_path, *, stream: str = "s1"):
        ctx = zmq.Context.instance()
        self.ep = endpoints(tmp_path)
        self.stream = stream
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, 0)  # never drop: every message must reach the consumer
        self.pub.bind(self.ep["data"])
        self.ctl = ctx.socket(zmq.ROUTER)
        self.ctl.bind(self.ep["ctl"])

    def handshake(self, beds: list[str] | None = None) -> None:
        """Hello until a client says ready (a bounded wait: fails rather than hangs)."""
        hello = {"v": 1, "type": "hello", **({"beds": beds} if beds else {})}
        for _ in range(1500):
            while self.ctl.poll(20):
                if json.loads(self.ctl.recv_multipart()[1]).get("type") == "ready":
                    return
            self.pub.send_multipart([b"ctl", encode_json(hello), b""])
        raise AssertionError("no client became ready")

    def frames(self, bed, seq, first, x, **extra) -> list[bytes]:
        h, p = encode_samples(
            {
                "type": "samples",
                "bed": bed,
                "record": "x",
                "fs": 360,
                "units": "mV",
                "first_sample": first,
                "seq": seq,
                "stream": self.stream,
                **extra,
            },
            x,
        )
        return [topic("ecg", bed), h, p]

    def send(self, bed, seq, first, x, **extra) -> None:
        self.pub.send_multipart(self.frames(bed, seq, first, x, **extra))

    def end(self, bed, seq, total) -> None:
        self.pub.send_multipart(
            [
                topic("ecg", bed),
                encode_json(
                    {
                        "v": 1,
                        "type": "end",
                        "bed": bed,
                        "seq": seq,
                        "total_samples": total,
                        "stream": self.stream,
                    }
                ),
                b"",
            ]
        )

    def raw(self, frames: list[bytes]) -> None:
        self.pub.send_multipart(frames)

    def close(self) -> None:
        self.pub.close(0)
        self.ctl.close(0)


def ecg(n: int) -> np.ndarray:
    """``n`` samples of a beat-like test signal (mV, 360 Hz, 75 bpm)."""
    t = np.arange(n) / 360.0
    return (1.2 * np.exp(-(((t % 0.8) - 0.3) ** 2) / (2 * 0.012**2))).astype(np.float32)
