"""How ``vigie server`` runs uvicorn: which proxies are believed, and its logging.

Kept apart from the CLI so that the options the server really runs with are tested.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from alert_server.settings import Settings

# ``vigie server``'s exit status when its HTTP port cannot be had (taken by another program):
# nothing was started. 2 is a refused configuration, 3 a start that failed (uvicorn's).
PORT_UNAVAILABLE = 4
# Uvicorn's default backlog.
LISTEN_BACKLOG = 2048


def bind_http(host: str, port: int) -> list[socket.socket]:
    """The server's HTTP sockets, bound and listening before anything else starts, so that a
    port already taken stops the start at once: uvicorn binds only after the application has
    started, ingest and dispatch included, which then ran for a second before stopping.
    Listening, they hold the port (two sockets with SO_REUSEADDR may both be bound, not both
    listen); a request made during the start waits to be answered.

    One socket per address ``host`` names, as uvicorn's own bind did: ``localhost`` is
    127.0.0.1 and ::1 where the machine has both, so a browser that tries ::1 first is
    answered; an address the machine cannot use (::1 with IPv6 turned off) is left out when
    another one is served. Raises ``OSError`` (``socket.gaierror`` for a name that resolves
    to nothing), with every socket already made closed."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    unusable: OSError | None = None
    try:
        for family, type_, proto, _name, address in dict.fromkeys(infos):
            if port == 0 and sockets:
                # Port 0: the system's choice for the first address, the same for the rest.
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            try:
                sock = socket.socket(family, type_, proto)
            except OSError as exc:  # a family this machine lacks (no IPv6)
                unusable = exc
                continue
            try:
                # As uvicorn binds its own: a restart finds its port in TIME_WAIT usable.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    # The IPv4 address has its own socket: this one must not claim it too.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(LISTEN_BACKLOG)
            except OSError as exc:
                sock.close()
                if exc.errno != errno.EADDRNOTAVAIL:
                    raise
                # ``localhost`` naming ::1 on a machine with IPv6 turned off: served on the
                # addresses it has; a port taken on any of them still refuses the start.
                unusable = exc
                continue
            sockets.append(sock)
        if not sockets:
            raise unusable or OSError(errno.EADDRNOTAVAIL, f"no address for {host!r}")
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    proxies = settings.trusted_proxies.strip()
    return {
        # No proxy is trusted unless VIGIE_TRUSTED_PROXIES names it: otherwise any process
        # on the machine could choose the address written in the audit trail.
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": proxies or "",
        # Uvicorn's own loggers go through the server's handler (logging_setup), in its format.
        "log_config": None,
        # One line per request is noise at the server's scale; reads of personal data are in
        # the audit trail, errors in the application's own lines.
        "access_log": False,
    }
