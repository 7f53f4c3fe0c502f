"""Replica ports come from the ``replica_ports`` range (below the range
outgoing connections take ports from), never from ``bind(0)``."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from conveyor.daemon.config import check_port_range, port_range
from conveyor.daemon.delivery.rolling import RolloutFailed, free_port, port_block
from tests.support.ports import free_port as some_free_port


@contextmanager
def listening(ports: list[int]) -> Iterator[None]:
    with ExitStack() as stack:
        for port in ports:
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", port))
            sock.listen()
        yield


def _block_of_ten() -> range:
    """Ten ports from one ending in 0, each free now."""
    for _ in range(100):
        base = some_free_port() // 10 * 10
        ports = range(base, base + 10)
        try:
            with listening(list(ports)):
                pass
        except OSError:
            continue
        return ports
    raise AssertionError("no ten free ports in a row")


def test_a_replica_port_is_a_free_one_of_the_range() -> None:
    ports = _block_of_ten()
    with listening([p for p in ports if p != ports[7]]):
        assert free_port(ports) == ports[7]
    with listening(list(ports)), pytest.raises(RolloutFailed, match="no free port in"):
        free_port(ports)


def test_a_block_of_ports_starts_at_one_and_stays_in_the_range() -> None:
    ports = _block_of_ten()
    assert port_block(3, ports) == (ports[1], ports[2], ports[3])
    with listening([ports[2]]), pytest.raises(RolloutFailed, match="consecutive"):
        port_block(3, ports)


@pytest.mark.parametrize("text", ["12000", "a-b", "80-2000", "12000-12005", "60000-70000"])
def test_a_bad_range_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        check_port_range(text)


def test_a_range_includes_both_ends() -> None:
    assert port_range(check_port_range("12000-19999")) == range(12000, 20000)
