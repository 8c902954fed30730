"""Who may read the server's internals: ``/metrics`` (counts, queue depths, provider state)
and the API's description (``/docs``, ``/redoc``, ``/openapi.json``).

None of them carries personal data, but they map the attack surface and the load; they are
closed by default. ``VIGIE_INTERNAL_ACCESS`` chooses how they open:

- ``token`` (default): ``Authorization: Bearer …`` with ``VIGIE_METRICS_TOKEN`` (for a
  Prometheus scraper) or the API token of an administrator;
- ``network``: only from the addresses in ``VIGIE_METRICS_NETWORKS`` (loopback by default; the
  client address is the proxy's unless ``VIGIE_TRUSTED_PROXIES`` names it);
- ``open``: anyone (a demo on one machine).

A pure ASGI middleware so that nothing else (the live stream) is slowed or buffered.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Callable

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from alert_server.settings import Settings

INTERNAL_PATHS = ("/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")


def parse_networks(
    text: str,
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``"10.0.0.0/8, ::1/128"`` → networks; ``ValueError`` naming the bad entry."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ValueError(f"VIGIE_METRICS_NETWORKS: {part!r} n'est pas un réseau IP") from exc
    return out


class InternalAccess:
    def __init__(
        self, app: ASGIApp, *, settings: Settings, is_admin_token: Callable[[str], bool]
    ) -> None:
        self.app = app
        self.mode = settings.internal_access
        self.token = settings.metrics_token.get_secret_value()
        self.networks = parse_networks(settings.metrics_networks)
        self.is_admin_token = is_admin_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in INTERNAL_PATHS:
            await self.app(scope, receive, send)
            return
        if await self._allowed(scope):
            await self.app(scope, receive, send)
            return
        status = 401 if self.mode == "token" else 403
        headers = [(b"content-type", b"application/json")]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        body = json.dumps(
            {"detail": "Accès réservé (VIGIE_INTERNAL_ACCESS)"}, ensure_ascii=False
        ).encode()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _allowed(self, scope: Scope) -> bool:
        if self.mode == "open":
            return True
        if self.mode == "network":
            client = scope.get("client")
            if not client:
                return False
            try:
                ip = ipaddress.ip_address(client[0])
            except ValueError:
                return False
            return any(ip in net for net in self.networks)
        auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        if self.token and hmac.compare_digest(token.encode(), self.token.encode()):
            return True
        return await anyio.to_thread.run_sync(self.is_admin_token, token)
