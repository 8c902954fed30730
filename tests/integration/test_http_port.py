"""``vigie server`` whose HTTP port is taken: it stops before anything starts, with a French
error; and the tests' ``ServerProcess`` never takes another program's answer on that port for
its own server's (in a whole-suite run a server that could not bind its port was killed "for
good" by a chaos test whose readings all came from another worker's server)."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alert_server.serving import PORT_UNAVAILABLE, bind_http
from tests import support
from tests.support import ServerProcess, server_env
from vigie import launch
from vigie.brokers.mosquitto import LocalMosquitto, free_port


class _Healthy(http.server.BaseHTTPRequestHandler):
    """Another program on the port, answering 200 to everything."""

    def do_GET(self) -> None:
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on which another program listens and answers 200."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Healthy)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_a_taken_port_stops_the_server_before_anything_starts(
    broker: LocalMosquitto, tmp_path: Path, taken_port: int
) -> None:
    server = ServerProcess(
        server_env(broker, f"sqlite:///{tmp_path / 'vigie.db'}"),
        tmp_path / "server.log",
        port=taken_port,
    )
    with pytest.raises(launch.LaunchFailed, match=f"code {PORT_UNAVAILABLE}"):
        server.start()
    log = server.log()
    assert f"le port HTTP 127.0.0.1:{taken_port} n'est pas disponible" in log
    # Nothing started: no migration, no broker connection (no alert taken, no step sent).
    assert "alembic" not in log and "connected to broker" not in log
    assert not (tmp_path / "vigie.db").exists()


def test_a_port_taken_between_the_draw_and_the_bind_is_drawn_again(
    broker: LocalMosquitto, tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The port a test's server draws is free when drawn; another worker's program may take it
    before the server binds it. Then that program's answers are not this server's, and the
    server starts on another port."""
    draws = iter([taken_port])
    monkeypatch.setattr(support, "free_port", lambda: next(draws, None) or free_port())
    server = ServerProcess(
        server_env(broker, f"sqlite:///{tmp_path / 'vigie.db'}"), tmp_path / "server.log"
    ).start()
    try:
        assert server.port != taken_port
        with socket.create_connection(("127.0.0.1", server.port), timeout=10):
            pass
        assert server.health()[0] == 200 and server.metric("vigie_gc_frozen_objects") > 0
    finally:
        server.stop()


def test_the_port_is_held_from_the_bind_on() -> None:
    """Two servers starting at once on one port: the second is refused at its bind, not a
    second later once both have started (two sockets with SO_REUSEADDR may both be bound to a
    port as long as neither listens)."""
    (first,) = bind_http("127.0.0.1", free_port())
    try:
        with pytest.raises(OSError):
            bind_http("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()


def test_every_address_of_the_host_is_bound_on_one_port() -> None:
    """A name standing for several addresses (``localhost`` is 127.0.0.1 and ::1 on most
    machines; the empty host is every IPv4 and IPv6 address) is served on each of them, as
    uvicorn's own bind did: a browser trying ::1 first must not find nothing there."""
    sockets = bind_http("", 0)
    try:
        families = sorted(s.family for s in sockets)
        assert families == [socket.AF_INET, socket.AF_INET6]
        (port,) = {s.getsockname()[1] for s in sockets}
        for address in ("127.0.0.1", "::1"):
            with socket.create_connection((address, port), timeout=10):
                pass
        # Both held: neither address can be taken by another server now.
        for address in ("0.0.0.0", "::"):
            with pytest.raises(OSError):
                bind_http(address, port)
    finally:
        for s in sockets:
            s.close()


def test_a_half_taken_host_gives_back_what_it_had_bound() -> None:
    """IPv6's address free, IPv4's taken: the start is refused, and the socket already bound
    on the free address is closed (the port is not held by a server that never started)."""
    (taken,) = bind_http("0.0.0.0", 0)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(OSError):
            bind_http("", port)
        # Nothing of the failed bind holds ::'s side of the port.
        (v6,) = bind_http("::", port)
        v6.close()
    finally:
        taken.close()


def test_an_address_the_machine_cannot_use_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """``localhost`` naming ::1 on a machine with IPv6 turned off (containers often are): the
    server is served on 127.0.0.1 rather than refusing to start. An address of the
    documentation range stands for it here (not this machine's: EADDRNOTAVAIL)."""
    real = socket.getaddrinfo

    def two_addresses(host: object, port: int | None, *args: object, **kw: object) -> list[Any]:
        v4 = real("127.0.0.1", port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        v6 = real("2001:db8::1", port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        return v6 + v4

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    (sock,) = bind_http("localhost", 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
    # Nothing usable at all: refused.
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, *a, **k: real(
            "2001:db8::1", port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ),
    )
    with pytest.raises(OSError):
        bind_http("localhost", 0)


def test_a_host_naming_no_address_is_refused_in_french(
    broker: LocalMosquitto, tmp_path: Path
) -> None:
    env = server_env(broker, f"sqlite:///{tmp_path / 'vigie.db'}")
    done = subprocess.run(
        [sys.executable, "-m", "alert_server.cli", "server", "--host", "nulle-part.invalid"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "l'adresse HTTP 'nulle-part.invalid' ne désigne aucune adresse" in done.stderr
    assert not (tmp_path / "vigie.db").exists()
