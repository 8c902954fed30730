"""/metrics, /docs and /openapi.json are closed unless VIGIE_INTERNAL_ACCESS opens them: by
token (a scraper's, or an administrator's API token) or by network."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from tests.api.conftest import close_stack, make_stack

PATHS = ("/metrics", "/openapi.json", "/docs")


def test_token_mode(tmp_path: Path) -> None:
    stack, server = make_stack(
        f"sqlite:///{tmp_path / 'v.db'}",
        tmp_path,
        internal_access="token",
        metrics_token=SecretStr("jeton-du-collecteur-0123456789"),
    )
    try:
        stack.add_user("chef", role="admin")
        stack.add_user("regul", departements=("13",))
        admin, dispatcher = stack.token("chef"), stack.token("regul")
        for path in PATHS:
            assert httpx.get(stack.url + path).status_code == 401, path
            for token, expected in (
                ("jeton-du-collecteur-0123456789", 200),
                (admin, 200),
                (dispatcher, 401),
                ("faux", 401),
            ):
                r = httpx.get(stack.url + path, headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == expected, (path, expected)
        # Everything else is untouched.
        assert httpx.get(stack.url + "/healthz").status_code in (200, 503)
    finally:
        close_stack(stack, server)


@pytest.mark.parametrize(("networks", "expected"), [("10.0.0.0/8", 403), ("127.0.0.0/8", 200)])
def test_network_mode(tmp_path: Path, networks: str, expected: int) -> None:
    stack, server = make_stack(
        f"sqlite:///{tmp_path / 'v.db'}",
        tmp_path,
        internal_access="network",
        metrics_networks=networks,
    )
    try:
        for path in PATHS:
            assert httpx.get(stack.url + path).status_code == expected, path
    finally:
        close_stack(stack, server)


def test_unsafe_internal_access_settings_are_refused() -> None:
    from alert_server.safety import operations_problems
    from alert_server.settings import Settings

    assert operations_problems(Settings()) == []
    [bad] = operations_problems(Settings(metrics_networks="10.0.0.0/8, pas-un-reseau"))
    assert bad == "VIGIE_METRICS_NETWORKS: 'pas-un-reseau' n'est pas un réseau IP"
    assert "démonstration" in operations_problems(Settings(internal_access="open"))[0]
    assert operations_problems(Settings(internal_access="open", demo=True)) == []
    assert "trop court" in operations_problems(Settings(metrics_token=SecretStr("court")))[0]
