from __future__ import annotations

import pytest
import zmq

from beatwise.commands import endpoints
from beatwise.commands.endpoints import free_tcp_endpoints


def _ports(eps: list[str]) -> list[int]:
    return [int(e.rsplit(":", 1)[1]) for e in eps]


def _bind_all(eps: list[str]) -> None:
    ctx = zmq.Context.instance()
    socks = []
    try:
        for e in eps:
            s = ctx.socket(zmq.PUB)
            s.setsockopt(zmq.LINGER, 0)
            socks.append(s)
            s.bind(e)
    finally:
        for s in socks:
            s.close()


def test_endpoints_are_distinct_free_and_outside_the_ephemeral_range():
    eps = free_tcp_endpoints(4)
    ports = _ports(eps)
    assert len(set(ports)) == 4
    assert all(e.startswith("tcp://127.0.0.1:") for e in eps)
    # Not where the kernel picks ports for connects and wildcard binds.
    assert all(endpoints._LOWEST <= p < endpoints._ephemeral_start() for p in ports)
    _bind_all(eps)


def test_without_room_below_the_ephemeral_range_the_kernel_picks(monkeypatch):
    monkeypatch.setattr(endpoints, "_ephemeral_start", lambda: endpoints._LOWEST + 10)
    eps = free_tcp_endpoints(3)
    assert len(set(_ports(eps))) == 3
    _bind_all(eps)


@pytest.mark.parametrize("n", [0, -1, 2.0])
def test_a_bad_count_is_refused(n):
    with pytest.raises(ValueError, match=f"n={n!r}; expected an int >= 1"):
        free_tcp_endpoints(n)
