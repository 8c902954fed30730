"""How ``vigie server`` runs uvicorn: which proxies are believed, and its logging.

Kept apart from the CLI so that the options the server really runs with are tested.
"""

from __future__ import annotations

from typing import Any

from alert_server.settings import Settings


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
