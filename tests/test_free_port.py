"""The ports the tests (and the demo) give to servers they may stop and start again.

A server restarted on its port must find it free. A port from the kernel's range for outgoing
connections (what ``bind(0)`` returns) can be taken in between by any client of the machine:
a restarted server of tests/integration/test_ingest.py was refused with EADDRINUSE (uvicorn's
exit code 3) in a whole-suite run. ``free_port`` draws outside that range.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import pytest

from vigie.brokers import mosquitto
from vigie.brokers.mosquitto import ephemeral_range, free_port

RANGE = (32768, 60999)


def test_ports_are_drawn_outside_the_range_for_outgoing_connections() -> None:
    ports = [free_port(ephemeral=RANGE) for _ in range(300)]
    assert all(10_000 <= p < RANGE[0] or RANGE[1] < p <= 65535 for p in ports), ports
    # Drawn at random (two test workers do not walk the same sequence).
    assert len(set(ports)) > 250


def test_the_systems_range_is_read_and_avoided() -> None:
    found = ephemeral_range()
    if sys.platform == "linux":
        assert found is not None
    low, high = found or RANGE
    for _ in range(100):
        assert not low <= free_port() <= high


def test_outgoing_connections_take_ports_only_inside_that_range() -> None:
    """The premise: the local ports the kernel gives to clients are all in the range, so none
    can ever be one that ``free_port`` gives to a server."""
    low, high = ephemeral_range() or RANGE
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen(256)
        clients = [socket.create_connection(listener.getsockname(), timeout=5) for _ in range(200)]
        try:
            local_ports = {c.getsockname()[1] for c in clients}
        finally:
            for c in clients:
                c.close()
    assert all(low <= p <= high for p in local_ports), sorted(local_ports)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
        s.listen(1)
        yield s.getsockname()[1]


def test_a_port_someone_listens_on_is_never_handed_out(
    busy_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[int] = []

    def choice(candidates: list[int]) -> int:
        # The busy port twice, then the candidates in order.
        drawn.append(busy_port if len(drawn) < 2 else candidates[len(drawn)])
        return drawn[-1]

    monkeypatch.setattr(mosquitto._random, "choice", choice)
    port = free_port(ephemeral=RANGE)
    assert drawn[:2] == [busy_port, busy_port] and port == drawn[-1] != busy_port
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free indeed
