"""How ``vigie server`` runs uvicorn: which proxies are believed, and its logging.

Kept apart from the CLI so that the options the server really runs with are tested.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from alert_server.settings import Settings

# ``vigie server``'s exit statuses: a refused configuration (a --host that is not this
# machine's among them), a start that failed (uvicorn's, or a name not resolved yet), and the
# HTTP port that cannot be had (taken by another program). Nothing was started in any case.
REFUSED = 2
START_FAILED = 3
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
    answered; ::1 is left out when the machine has IPv6 turned off. Raises ``OSError``
    (``socket.gaierror`` for a name that resolves to nothing; ``refusal`` says it in French),
    with every socket already made closed."""
    infos = list(
        dict.fromkeys(
            socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        )
    )
    # An IPv6 socket also takes IPv4 unless told not to (``--host ::`` serves both): only
    # when the host names an IPv4 address too, which has its own socket, is it told so.
    both = {socket.AF_INET, socket.AF_INET6} <= {info[0] for info in infos}
    # ``localhost`` naming ::1 on a machine with IPv6 turned off (many containers) is served
    # on its other addresses; any other address the machine does not have is a mistake in
    # --host, and refuses the start.
    may_skip_loopback6 = any(info[4][0] != "::1" for info in infos)
    sockets: list[socket.socket] = []
    try:
        for family, type_, proto, _name, address in infos:
            if port == 0 and sockets:
                # Port 0: the system's choice for the first address, the same for the rest.
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock = socket.socket(family, type_, proto)
            try:
                # As uvicorn binds its own: a restart finds its port in TIME_WAIT usable.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and both:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(LISTEN_BACKLOG)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRNOTAVAIL and address[0] == "::1" and may_skip_loopback6:
                    continue
                raise
            sockets.append(sock)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def refusal(host: str, port: int, exc: OSError) -> tuple[str, int]:
    """The French line and the exit status of a start refused at ``bind_http``."""
    reason = exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror):
        if exc.errno == socket.EAI_AGAIN:
            # The resolver did not answer (a DNS server still starting at boot): a start that
            # failed, to try again, not a wrong setting.
            return (
                f"le nom {host!r} n'a pas pu être résolu pour l'instant ({reason}) : réessayez, "
                "ou donnez une adresse IP (--host). Rien n'a été démarré.",
                START_FAILED,
            )
        return (
            f"l'adresse HTTP {host!r} ne correspond à aucune adresse ({reason}) : donnez une "
            "adresse IP ou un nom connu (--host). Rien n'a été démarré.",
            REFUSED,
        )
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EINVAL, errno.EAFNOSUPPORT):
        return (
            f"l'adresse HTTP {host!r} n'est pas une adresse de cette machine ({reason}) : donnez "
            "l'adresse d'une de ses interfaces (--host), par exemple 127.0.0.1 ou 0.0.0.0. "
            "Rien n'a été démarré.",
            REFUSED,
        )
    if exc.errno == errno.EADDRINUSE:
        return (
            f"le port HTTP {host}:{port} n'est pas disponible ({reason}) : un autre programme "
            "l'utilise déjà ; arrêtez-le ou choisissez un autre port (--port). Rien n'a été "
            "démarré.",
            PORT_UNAVAILABLE,
        )
    return (
        f"le port HTTP {host}:{port} n'est pas disponible ({reason}) : choisissez un autre port "
        "(--port ; sous 1024, il faut des droits que le serveur n'a pas à avoir). Rien n'a été "
        "démarré.",
        PORT_UNAVAILABLE,
    )


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
