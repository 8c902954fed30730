"""The console's pages over HTTP: login and its protections, cookie flags, CSRF on every form,
département scoping on pages, escaping, security headers, logout, resolution form."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from alert_server.dashboard.config import DashboardConfig
from alert_server.settings import Settings
from alert_server.users.throttle import POLICY
from tests.api.conftest import PASSWORD, ApiStack, close_stack, make_stack
from tests.dashboard.conftest import http_login


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m is not None, "no CSRF token in the page"
    return m.group(1)


def login_token_of(html: str) -> str:
    m = re.search(r'name="login_token" value="([^"]+)"', html)
    assert m is not None
    return m.group(1)


def test_pages_need_a_session(console_app: ApiStack) -> None:
    with httpx.Client(base_url=console_app.url) as c:
        for path in (
            "/dashboard/",
            "/dashboard/devices",
            "/dashboard/alerts/x",
            "/dashboard/audit",
        ):
            r = c.get(path)
            assert r.status_code == 303, path
            assert r.headers["location"].startswith("/dashboard/login?next=")
        assert c.get("/dashboard/stream").status_code == 401
        assert c.get("/dashboard/session").status_code == 401
        assert c.get("/").headers["location"] == "/dashboard/"


def test_login_form_protections_and_cookie_flags(console_app: ApiStack) -> None:
    console_app.add_user("regulation")
    with httpx.Client(base_url=console_app.url) as c:
        form = c.get("/dashboard/login")
        token = login_token_of(form.text)
        good = {"username": "regulation", "password": PASSWORD, "login_token": token}

        # Without the anti-forgery token of the form: refused, no session.
        r = c.post("/dashboard/login", data={**good, "login_token": "forged"})
        assert r.status_code == 403
        assert "vigie_session" not in r.headers.get("set-cookie", "")

        token = login_token_of(c.get("/dashboard/login").text)
        r = c.post(
            "/dashboard/login", data={**good, "login_token": token, "password": "bad bad bad"}
        )
        assert r.status_code == 401
        assert "Identifiant ou mot de passe incorrect" in r.text
        assert "vigie_session" not in r.headers.get("set-cookie", "")

        token = login_token_of(r.text)
        r = c.post(
            "/dashboard/login",
            data={**good, "login_token": token, "next": "https://evil.example/x"},
            follow_redirects=False,
        )
        assert r.status_code == 303
        assert r.headers["location"] == "/dashboard/"  # no open redirect
        cookie = next(v for v in r.headers.get_list("set-cookie") if v.startswith("vigie_session="))
        attrs = {a.strip().lower() for a in cookie.split(";")}
        assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
        assert "secure" not in attrs  # plain http public URL
        assert c.get("/dashboard/session").status_code == 204
    actions = [a.action for a in console_app.audit()]
    assert actions == ["login.failed", "login.ok"]


def test_secure_cookie_and_hsts_when_the_public_url_is_https(tmp_path: Path) -> None:
    stack, server = make_stack(
        f"sqlite:///{tmp_path / 'vigie.db'}", tmp_path, public_url="https://vigie.example"
    )
    try:
        stack.add_user("regulation")
        with httpx.Client(base_url=stack.url) as c:
            form = c.get("/dashboard/login")
            assert form.headers["strict-transport-security"].startswith("max-age=")
            login_cookie = form.headers["set-cookie"]
            assert login_cookie.startswith("__Host-vigie_login=") and "Secure" in login_cookie
            r = c.post(
                "/dashboard/login",
                data={
                    "username": "regulation",
                    "password": PASSWORD,
                    "login_token": login_token_of(form.text),
                },
                # httpx keeps Secure cookies for https only: send it by hand.
                headers={"Cookie": login_cookie.split(";")[0]},
                follow_redirects=False,
            )
            assert r.status_code == 303
            session = r.headers["set-cookie"]
            assert session.startswith("__Host-vigie_session=")
            assert "Secure" in session and "HttpOnly" in session and "SameSite=strict" in session
    finally:
        close_stack(stack, server)


def test_security_headers_and_no_inline_script(console_app: ApiStack) -> None:
    console_app.add_user("regulation")
    alert_id = console_app.add_alert("13")
    anonymous = httpx.Client(base_url=console_app.url)
    with anonymous, http_login(console_app.url, "regulation", PASSWORD) as c:
        for client, path in (
            (c, "/dashboard/"),
            (c, f"/dashboard/alerts/{alert_id}"),
            (anonymous, "/dashboard/login"),
        ):
            r = client.get(path)
            assert r.status_code == 200, path
            csp = r.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "script-src 'self'" in csp
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert "frame-ancestors 'none'" in csp and "img-src 'self' data:" in csp
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["referrer-policy"] == "no-referrer"
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["cache-control"] == "no-store"
            # Every script is a file; JSON data blocks are not scripts.
            for tag in re.findall(r"<script\b[^>]*>", r.text):
                assert "src=" in tag or 'type="application/json"' in tag, tag
            assert re.search(r"\son[a-z]+=", r.text) is None  # no inline event handler


def test_forms_need_the_csrf_token(console_app: ApiStack) -> None:
    console_app.add_user("regulation")
    alert_id = console_app.add_alert("13")
    with http_login(console_app.url, "regulation", PASSWORD) as c:
        board = c.get("/dashboard/")
        token = csrf_of(board.text)
        url = f"/dashboard/alerts/{alert_id}/ack"
        assert c.post(url).status_code == 403
        assert c.post(url, data={"csrf_token": "not-the-token"}).status_code == 403
        assert (
            c.post(f"/dashboard/alerts/{alert_id}/resolve", data={"outcome": "test"}).status_code
            == 403
        )
        assert c.post("/dashboard/logout").status_code == 403
        assert not console_app.published  # nothing happened
        r = c.post(url, data={"csrf_token": token}, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"] == f"/dashboard/alerts/{alert_id}?msg=ack_ok"
        detail = c.get(r.headers["location"]).text
        assert "Alerte prise en charge" in detail and "regulation" in detail
        # A second click: not an error page, the page says who has it.
        r = c.post(url, data={"csrf_token": token}, follow_redirects=False)
        assert r.headers["location"].endswith("msg=ack_conflict")
    assert [p["type"] for _, p in console_app.published] == ["alert.acknowledged"]


def test_pages_are_scoped_like_the_api(console_app: ApiStack) -> None:
    console_app.add_user("paris", departements=("75",))
    a75 = console_app.add_alert("75")
    a13 = console_app.add_alert("13")
    with http_login(console_app.url, "paris", PASSWORD) as c:
        board = c.get("/dashboard/").text
        assert a75 in board and a13 not in board
        rows = c.get("/dashboard/board/rows").json()
        assert rows["open_ids"] == [a75]
        assert all(a13 not in row for row in rows["rows"])
        # Even asking for the 13 by filter or by id.
        assert a13 not in c.get("/dashboard/", params={"departement": "13"}).text
        assert c.get(f"/dashboard/alerts/{a13}").status_code == 404
        assert c.get(f"/dashboard/alerts/{a13}/live").status_code == 404
        token = csrf_of(board)
        assert c.post(f"/dashboard/alerts/{a13}/ack", data={"csrf_token": token}).status_code == 404
        # The fleet is not tied to a département: only accounts without restriction see it.
        assert c.get("/dashboard/devices").status_code == 403
        assert c.get("/dashboard/audit").status_code == 403
    with console_app.client() as c:
        token = console_app.token("paris")
        r = c.get(f"/api/alerts/{a13}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 404


def test_untrusted_text_is_escaped(console_app: ApiStack) -> None:
    console_app.add_user("regulation")
    evil = "<img src=x onerror=alert(1)>"
    alert_id = console_app.add_alert(None, original_kind="<script>alert(1)</script>")
    console_app.add_alert(None, device_id="dev-2")
    with http_login(console_app.url, "regulation", PASSWORD) as c:
        board = c.get("/dashboard/").text
        assert "<script>alert(1)</script>" not in board
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in board
        detail = c.get(f"/dashboard/alerts/{alert_id}").text
        assert "<script>alert(1)</script>" not in detail
    # An alert id is device-chosen text: it is escaped too.
    weird = console_app.add_alert(None)
    with console_app.runtime.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alert SET alert_id = ? WHERE alert_id = ?", (evil, weird))
        conn.exec_driver_sql(
            "UPDATE alert_event SET alert_id = ? WHERE alert_id = ?", (evil, weird)
        )
    with http_login(console_app.url, "regulation", PASSWORD) as c:
        board = c.get("/dashboard/").text
        assert evil not in board
        assert "&lt;img src=x onerror=alert(1)&gt;" in board
        assert "/dashboard/alerts/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E" in board


def test_resolve_form_and_logout(console_app: ApiStack) -> None:
    console_app.add_user("regulation")
    alert_id = console_app.add_alert("13")
    with http_login(console_app.url, "regulation", PASSWORD) as c:
        token = csrf_of(c.get(f"/dashboard/alerts/{alert_id}").text)
        url = f"/dashboard/alerts/{alert_id}/resolve"
        r = c.post(url, data={"csrf_token": token, "outcome": ""})
        assert r.status_code == 422 and "Choisissez l&#39;issue" in r.text
        r = c.post(url, data={"csrf_token": token, "outcome": "other", "note": "  "})
        assert r.status_code == 422 and "Une note est obligatoire" in r.text
        r = c.post(
            url,
            data={"csrf_token": token, "outcome": "other", "note": "Voisin alerté <b>"},
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"].endswith("msg=resolved")
        page = c.get(r.headers["location"]).text
        assert "Alerte clôturée" in page and "Voisin alerté &lt;b&gt;" in page

        r = c.post("/dashboard/logout", data={"csrf_token": token}, follow_redirects=False)
        assert r.status_code == 303
        # The old cookie is dead server-side, even if a copy was kept.
        stale = c.cookies.get("vigie_session")
        assert stale is None
    with httpx.Client(base_url=console_app.url) as c2:
        assert c2.get("/dashboard/session").status_code == 401
    actions = [a.action for a in console_app.audit()]
    assert actions == ["login.ok", "alert.view", "alert.resolve", "alert.view", "logout"]


def test_logged_out_session_cannot_be_replayed(console_app: ApiStack) -> None:
    console_app.add_user("regulation")
    with http_login(console_app.url, "regulation", PASSWORD) as c:
        cookie = c.cookies["vigie_session"]
        token = csrf_of(c.get("/dashboard/").text)
        c.post("/dashboard/logout", data={"csrf_token": token})
    with httpx.Client(base_url=console_app.url, cookies={"vigie_session": cookie}) as replay:
        r = replay.get("/dashboard/")
        assert r.status_code == 303


def test_login_page_is_rate_limited(console_app: ApiStack) -> None:
    console_app.add_user("regulation")
    with httpx.Client(base_url=console_app.url) as c:
        for _ in range(POLICY.account_free):
            token = login_token_of(c.get("/dashboard/login").text)
            r = c.post(
                "/dashboard/login",
                data={"username": "regulation", "password": "wrong!", "login_token": token},
            )
            assert r.status_code == 401
        token = login_token_of(c.get("/dashboard/login").text)
        r = c.post(
            "/dashboard/login",
            data={"username": "regulation", "password": PASSWORD, "login_token": token},
        )
        assert r.status_code == 429 and "Trop de tentatives" in r.text


def test_devices_coverage_audit_and_outlines(console_app: ApiStack) -> None:
    console_app.add_user("chef", role="admin")
    console_app.add_device("nurse-0042", worker="Inès Durand")
    with http_login(console_app.url, "chef", PASSWORD) as c:
        devices = c.get("/dashboard/devices").text
        assert "nurse-0042" in devices and "Hors ligne" in devices
        assert "Durand" not in devices and "Inès" not in devices  # no name on the fleet list
        # Traccar Client's SOS is one request, never retried: the page says so.
        assert "sans nouvel essai en cas d'échec" in devices
        coverage = c.get("/dashboard/coverage").text
        assert "Répertoire non chargé" in coverage
        audit = c.get("/dashboard/audit").text
        assert "login.ok" in audit and "127.0.0.1" in audit
        r = c.get("/dashboard/geo/departements.geojson", params={"bbox": "5.2,43.2,5.5,43.4"})
        assert r.status_code == 200
        outlines = r.json()
        codes = {f["properties"]["code"] for f in outlines["features"]}
        assert "13" in codes and "75" not in codes
        assert outlines["attribution"] == "IGN – ADMIN EXPRESS COG 2018 / INSEE COG 2018"


def test_outlines_ignore_a_bad_bbox(console_app: ApiStack) -> None:
    console_app.add_user("chef", role="admin")
    with http_login(console_app.url, "chef", PASSWORD) as c:
        for bbox in ("", "a,b,c,d", "1,2,3", "10,10,0,0", "nan,0,1,1"):
            r = c.get("/dashboard/geo/departements.geojson", params={"bbox": bbox})
            assert r.status_code == 200
            assert len(r.json()["features"]) == 101, bbox  # the whole map


def test_plan_ign_by_default_and_the_tile_server_in_the_csp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 14: a street map in production, IGN's public Plan IGN (Géoplateforme) as the
    default; ``none`` turns tiles off; whatever is set enters the CSP, nothing else does."""
    from alert_server.dashboard.config import PLAN_IGN_ATTRIBUTION, PLAN_IGN_URL

    settings = Settings(database_url="sqlite://")
    monkeypatch.delenv("VIGIE_MAP_TILE_URL", raising=False)
    monkeypatch.delenv("VIGIE_MAP_TILE_ATTRIBUTION", raising=False)
    config = DashboardConfig.from_settings(settings)
    assert config.tile_url == PLAN_IGN_URL
    assert "LAYER=GEOGRAPHICALGRIDSYSTEMS.PLANIGNV2" in PLAN_IGN_URL
    assert "TILEMATRIX={z}&TILEROW={y}&TILECOL={x}" in PLAN_IGN_URL
    assert config.tile_attribution == PLAN_IGN_ATTRIBUTION
    assert "img-src 'self' data: https://data.geopf.fr;" in config.content_security_policy()
    for off in ("none", "", "  NONE "):
        monkeypatch.setenv("VIGIE_MAP_TILE_URL", off)
        config = DashboardConfig.from_settings(settings)
        assert config.tile_url is None, off
        assert "img-src 'self' data:;" in config.content_security_policy()
    monkeypatch.setenv("VIGIE_MAP_TILE_URL", "https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png")
    config = DashboardConfig.from_settings(settings)
    assert config.tile_url is not None and config.tile_attribution == ""
    assert (
        "img-src 'self' data: https://*.tile.openstreetmap.org;" in config.content_security_policy()
    )
    monkeypatch.setenv("VIGIE_MAP_TILE_URL", "javascript:alert(1)")
    with pytest.raises(ValueError, match="VIGIE_MAP_TILE_URL"):
        DashboardConfig.from_settings(settings)


def test_statistics_page_and_onvs_export_are_scoped(console_app: ApiStack) -> None:
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    a13 = console_app.add_alert(
        "13", created_at=t0, state="resolved", outcome="threat",
        acknowledged_at=t0 + timedelta(seconds=30), acknowledged_by="DDSP 13",
    )  # fmt: skip
    a75 = console_app.add_alert("75", created_at=t0, state="resolved", outcome="test")
    password = console_app.add_user("disp13", departements=("13",))
    with http_login(console_app.url, "disp13", password) as c:
        page = c.get("/dashboard/stats")
        assert page.status_code == 200
        assert "Statistiques mensuelles" in page.text and "2026-03" in page.text
        assert "<svg" in page.text  # the chart, drawn without any script
        assert '<td class="dep">75</td>' not in page.text
        csv_text = c.get("/dashboard/stats.csv").text
        assert "\n13;2026-03;1;" in csv_text.replace("\r\n", "\n") and ";75;" not in csv_text
        detail = c.get(f"/dashboard/alerts/{a13}")
        assert 'id="onvs-export"' in detail.text
        onvs = c.get(f"/dashboard/alerts/{a13}/onvs.csv")
        assert onvs.status_code == 200 and "Menace de mort" in onvs.text
        assert c.get(f"/dashboard/alerts/{a75}/onvs.csv").status_code == 404
