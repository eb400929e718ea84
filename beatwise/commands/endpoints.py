"""Free loopback TCP endpoints for the processes a benchmark starts.

A port found by binding port 0 comes from the kernel's ephemeral range, where the kernel
also picks the local port of every outgoing connection and of every wildcard bind
(``tcp://127.0.0.1:*``). Between the pick and the child's bind, the consumer's own sockets
-- its wildcard-bound publishers, and its connects to the child, retried every 0.1 s while
the child starts -- can take that very port ("Address already in use": seen in
``beatwise bench stream``). Ports below the ephemeral range are never handed out that way.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_tcp_endpoints"]

#: Lowest port we hand out (above the registered services most machines run).
_LOWEST = 20000
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_start() -> int:
    """First port of the kernel's ephemeral range (Linux's file; 32768, its default,
    elsewhere)."""
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_tcp_endpoints(n: int, *, host: str = "127.0.0.1") -> list[str]:
    """``n`` distinct ``tcp://host:port`` endpoints that nothing listens on now, with ports
    below the ephemeral range (above it, or from port 0, where that range leaves no room).

    Raises:
        ValueError: ``n < 1``.
    """
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"free_tcp_endpoints: n={n!r}; expected an int >= 1.")
    top = _ephemeral_start()
    held: list[socket.socket] = []
    try:
        candidates = list(range(_LOWEST, top)) if top - _LOWEST >= 100 * n else []
        random.SystemRandom().shuffle(candidates)
        for port in candidates + [0] * n:
            if len(held) == n:
                break
            s = socket.socket()
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            held.append(s)  # held until all are found: the n ports differ
        return [f"tcp://{host}:{s.getsockname()[1]}" for s in held]
    finally:
        for s in held:
            s.close()
