"""Free TCP ports on 127.0.0.1 for what the tests start (daemons' listeners,
registries, environments' front ports, replicas).

A port taken from the kernel with ``bind(("127.0.0.1", 0))`` comes from the
ephemeral range, where the next outgoing connection of any process (the
tests make many: gRPC, health probes, HTTP polls) may take it before the
server the test starts binds it: seen as "bind: Address already in use" in
a Swarm task seconds later. These come from below that range instead, each
xdist worker from its own slice, never the same one twice in a session.
"""

from __future__ import annotations

import itertools
import os
import random
import socket

#: Below Linux's default ephemeral range (32768-60999).
_LOW, _HIGH = 20000, 32000


def _slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    width = (_HIGH - _LOW) // max(count, 1)
    start = _LOW + (index % max(count, 1)) * width
    return range(start, start + width)


def _candidates() -> itertools.cycle[int]:
    ports = list(_slice())
    random.Random(os.getpid()).shuffle(ports)
    return itertools.cycle(ports)


_next = _candidates()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on or is connected from
    right now, outside the ephemeral range, not handed out before by this
    process (until its slice is used up)."""
    for _ in range(_HIGH - _LOW):
        port = next(_next)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free TCP port on 127.0.0.1 in {_LOW}-{_HIGH}")
