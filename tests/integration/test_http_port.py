"""``vigie server`` whose HTTP port is taken: it stops before anything starts, with a French
error; and the tests' ``ServerProcess`` never takes another program's answer on that port for
its own server's (in a whole-suite run a server that could not bind its port was killed "for
good" by a chaos test whose readings all came from another worker's server)."""

from __future__ import annotations

import errno
import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alert_server.serving import PORT_UNAVAILABLE, bind_http, refusal
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


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 on this machine")


def _addresses(*hosts: str) -> Any:
    """A ``getaddrinfo`` naming ``hosts``' addresses, in that order, whatever it is asked."""
    real = socket.getaddrinfo

    def resolve(host: object, port: int | None, *args: object, **kw: object) -> list[Any]:
        found: list[Any] = []
        for name in hosts:
            found += real(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        return found

    return resolve


def _bind_on_one_drawn_port(host: str) -> list[socket.socket]:
    """``bind_http(host, 0)``: the port the system gives the first address may be held on
    the other family by another program; then another is drawn (a few times at most)."""
    for _ in range(5):
        try:
            return bind_http(host, 0)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    raise AssertionError("no port free on both families in five draws")


@needs_ipv6
def test_every_address_of_the_host_is_bound_on_one_port() -> None:
    """A name standing for several addresses (``localhost`` is 127.0.0.1 and ::1 on most
    machines; the empty host is every IPv4 and IPv6 address) is served on each of them, as
    uvicorn's own bind did: a browser trying ::1 first must not find nothing there."""
    sockets = _bind_on_one_drawn_port("")
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


@needs_ipv6
@pytest.mark.skipif(
    Path("/proc/sys/net/ipv6/bindv6only").read_text().strip() != "0",
    reason="this machine's IPv6 sockets do not take IPv4",
)
def test_the_ipv6_wildcard_alone_still_serves_ipv4() -> None:
    """``--host ::`` served IPv4 too before the sockets were made here (an IPv6 socket takes
    IPv4 unless told not to); it still does."""
    (sock,) = bind_http("::", 0)
    try:
        with socket.create_connection(("127.0.0.1", sock.getsockname()[1]), timeout=10):
            pass
    finally:
        sock.close()


@needs_ipv6
def test_a_half_taken_host_gives_back_what_it_had_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """IPv6's address bound first, IPv4's taken: the start is refused, and the socket already
    bound on ::1 is closed (the port is not held by a server that never started)."""
    (taken,) = bind_http("127.0.0.1", 0)
    port = taken.getsockname()[1]
    monkeypatch.setattr(socket, "getaddrinfo", _addresses("::1", "127.0.0.1"))
    try:
        with pytest.raises(OSError) as refused:
            bind_http("localhost", port)
        assert refused.value.errno == errno.EADDRINUSE
        # ``refused`` keeps the failed call's frames, and its list of sockets, alive: ::1's
        # side of the port is free only if that socket was closed, not just dropped.
        monkeypatch.undo()
        (v6,) = bind_http("::1", port)
        v6.close()
    finally:
        taken.close()


class _NoIpv6Loopback(socket.socket):
    """A socket on a machine with IPv6 turned off: ::1 is no address of it."""

    def bind(self, address: Any) -> None:
        if self.family == socket.AF_INET6 and address[0] == "::1":
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        super().bind(address)


def test_localhost_without_ipv6_is_served_on_127_0_0_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """``localhost`` naming ::1 on a machine with IPv6 turned off (many containers): the
    server is served on 127.0.0.1 rather than refusing to start."""
    monkeypatch.setattr(socket, "getaddrinfo", _addresses("::1", "127.0.0.1"))
    monkeypatch.setattr(socket, "socket", _NoIpv6Loopback)
    (sock,) = bind_http("localhost", 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


def test_an_address_that_is_not_the_machines_refuses_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any other address the machine does not have is a mistake in --host (a stale name, a
    typo): refused, with a French line saying so, never served on what is left."""
    monkeypatch.setattr(socket, "getaddrinfo", _addresses("127.0.0.1", "192.0.2.7"))
    with pytest.raises(OSError) as refused:
        bind_http("vigie.example", 0)
    message, status = refusal("vigie.example", 8000, refused.value)
    assert status == 2
    assert "n'est pas une adresse de cette machine" in message


@pytest.mark.parametrize(
    ("exc", "status", "said"),
    [
        (OSError(errno.EADDRINUSE, "Address already in use"), 4, "un autre programme l'utilise"),
        (OSError(errno.EACCES, "Permission denied"), 4, "choisissez un autre port"),
        (OSError(errno.EADDRNOTAVAIL, "Cannot assign"), 2, "pas une adresse de cette machine"),
        (socket.gaierror(socket.EAI_NONAME, "Name unknown"), 2, "ne correspond à aucune adresse"),
        (socket.gaierror(socket.EAI_AGAIN, "Try again"), 3, "pas pu être résolu pour l'instant"),
    ],
)
def test_each_refusal_says_what_to_do_in_french(exc: OSError, status: int, said: str) -> None:
    message, got = refusal("127.0.0.1", 8000, exc)
    assert got == status and said in message and "Rien n'a été démarré." in message
    if exc.errno != errno.EADDRINUSE:
        assert "un autre programme" not in message


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
    assert "l'adresse HTTP 'nulle-part.invalid' ne correspond à aucune adresse" in done.stderr
    assert not (tmp_path / "vigie.db").exists()
