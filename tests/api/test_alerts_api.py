"""The HTTP API of operations.md: tokens, département scoping (list AND id, in SQL), first
acknowledgement wins, resolution with a validated outcome, and an audit line for each action.
Run on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from alert_server.alerts import service as alerts_service
from alert_server.alerts.schemas import TimelineEntry
from alert_server.db import write_scope
from alert_server.users import service as users_service
from alert_server.users.schemas import Principal
from tests.api.conftest import SECRET, ApiStack, ago
from vigie.timeutil import utcnow


def test_token_flow_and_bad_tokens(api: ApiStack) -> None:
    api.add_user("regulation")
    with api.client() as c:
        r = c.post(
            "/api/token", data={"username": "regulation", "password": "mot de passe très long"}
        )
        assert r.status_code == 200
        body = r.json()
        assert body["token_type"] == "bearer" and body["expires_in"] > 0
        token = body["access_token"]

        assert c.get("/api/alerts").status_code == 401  # no token
        assert c.get("/api/alerts", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        # Case does not matter for the username.
        r = c.post(
            "/api/token", data={"username": "Regulation", "password": "mot de passe très long"}
        )
        assert r.status_code == 200

        bad = [
            "garbage",
            token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # signature tampered
            token.split(".")[0] + "." + token.split(".")[0],
            # Signed with another secret.
            users_service.issue_api_token(
                "another-secret", Principal(1, "regulation", "dispatcher"), now=utcnow()
            ),
            # Expired: issued 9 h ago with the default 8 h lifetime.
            users_service.issue_api_token(
                SECRET, Principal(1, "regulation", "dispatcher"), now=utcnow() - timedelta(hours=9)
            ),
            # Valid signature, but for an account that does not exist.
            users_service.issue_api_token(SECRET, Principal(999, "ghost", "admin"), now=utcnow()),
        ]
        for t in bad:
            r = c.get("/api/alerts", headers={"Authorization": f"Bearer {t}"})
            assert r.status_code == 401, t
            assert r.headers["www-authenticate"] == "Bearer"

        r = c.post("/api/token", data={"username": "regulation", "password": "wrong password!"})
        assert r.status_code == 401
        r = c.post("/api/token", data={"username": "nobody", "password": "wrong password!"})
        assert r.status_code == 401


def test_departement_scoping_by_list_and_by_id(api: ApiStack) -> None:
    api.add_user("paris", departements=("75",))
    api.add_user("national")
    api.add_user("chef", role="admin")
    a75 = api.add_alert("75", created_at=ago(minutes=3))
    a13 = api.add_alert("13", created_at=ago(minutes=2))
    anull = api.add_alert(None, created_at=ago(minutes=1))

    with api.client(api.token("paris")) as c:
        listed = [a["alert_id"] for a in c.get("/api/alerts").json()]
        assert listed == [a75]
        assert c.get(f"/api/alerts/{a75}").status_code == 200
        # Outside the scope, by id: the same answer as an alert that does not exist.
        for other in (a13, anull):
            assert c.get(f"/api/alerts/{other}").status_code == 404
            assert c.post(f"/api/alerts/{other}/ack").status_code == 404
            r = c.post(f"/api/alerts/{other}/resolve", json={"outcome": "test"})
            assert r.status_code == 404
        assert c.get("/api/alerts/does-not-exist").status_code == 404
        # A département filter cannot widen the scope.
        assert c.get("/api/alerts", params={"departement": "13"}).json() == []

    for user in ("national", "chef"):
        with api.client(api.token(user)) as c:
            listed = [a["alert_id"] for a in c.get("/api/alerts").json()]
            assert listed == [anull, a13, a75]  # newest first
            assert c.get(f"/api/alerts/{anull}").status_code == 200

    # The 13 alert was never touched by the 75 dispatcher's attempts.
    with api.client(api.token("chef")) as c:
        assert c.get(f"/api/alerts/{a13}").json()["state"] == "open"


def test_list_fields_and_state_filter(api: ApiStack) -> None:
    api.add_user("national")
    a1 = api.add_alert("13", created_at=ago(minutes=5), flags=["clock_skew"])
    a2 = api.add_alert("13", created_at=ago(minutes=4), state="resolved", outcome="test")
    with api.client(api.token("national")) as c:
        everything = c.get("/api/alerts").json()
        assert [a["alert_id"] for a in everything] == [a2, a1]
        first = everything[1]
        for key in (
            "alert_id",
            "device_id",
            "kind",
            "state",
            "departement",
            "position",
            "created_at",
            "acknowledged_at",
            "acknowledged_by",
            "flags",
        ):
            assert key in first
        assert first["position"]["lat"] == 43.2965 and first["position"]["acc_m"] == 25.0
        assert first["flags"] == ["clock_skew"]
        assert first["created_at"].endswith("Z")
        open_only = c.get("/api/alerts", params={"state": "open"}).json()
        assert [a["alert_id"] for a in open_only] == [a1]
        assert c.get("/api/alerts", params={"state": "bogus"}).status_code == 422


def test_ack_twice_second_gets_409_with_who(api: ApiStack) -> None:
    api.add_user("paris", departements=("75",))
    api.add_user("paris2", departements=("75", "92"))
    api.add_device("nurse-001")
    alert_id = api.add_alert("75")

    with api.client(api.token("paris")) as c:
        r = c.post(f"/api/alerts/{alert_id}/ack")
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "acknowledged"
        assert r.json()["acknowledged_by"] == "paris"
    # The device hears about it, once.
    acks = [p for t, p in api.published if p.get("type") == "alert.acknowledged"]
    assert [(t, p["alert_id"]) for t, p in api.published if p["type"] == "alert.acknowledged"] == [
        ("vigie/v1/dev/nurse-001/cmd", alert_id)
    ]
    assert len(acks) == 1

    for user in ("paris2", "paris"):
        with api.client(api.token(user)) as c:
            r = c.post(f"/api/alerts/{alert_id}/ack")
            assert r.status_code == 409
            body = r.json()
            assert body["acknowledged_by"] == "paris"
            assert body["state"] == "acknowledged"
            assert "paris" in body["detail"]
    assert len([p for _, p in api.published if p["type"] == "alert.acknowledged"]) == 1

    with api.client(api.token("paris2")) as c:
        detail = c.get(f"/api/alerts/{alert_id}").json()
    types = [e["type"] for e in detail["timeline"]]
    assert types == ["received", "acknowledged"]
    assert detail["timeline"][1]["actor"] == "paris"
    assert detail["timeline"][1]["detail"] == {"via": "dashboard"}
    # Only what the dispatcher needs of the worker: first name, role, call-back number.
    assert detail["worker"] == {
        "first_name": "Inès",
        "role": "nurse",
        "phone": "+33612345678",
        "site_label": None,
    }


def test_resolve_validation_and_conflict(api: ApiStack) -> None:
    api.add_user("marseille", departements=("13",))
    alert_id = api.add_alert("13")
    with api.client(api.token("marseille")) as c:
        url = f"/api/alerts/{alert_id}/resolve"
        for body in (
            {},
            {"outcome": "victory"},
            {"outcome": "other"},  # "other" needs a note
            {"outcome": "other", "note": "   "},
            {"outcome": "test", "note": "x" * 2001},
            {"outcome": "test", "extra": 1},
            {"outcome": 3},
        ):
            r = c.post(url, json=body)
            assert r.status_code == 422, body
        assert c.get(f"/api/alerts/{alert_id}").json()["state"] == "open"

        r = c.post(url, json={"outcome": "false_alarm", "note": "Appui involontaire, rappelée."})
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "resolved" and r.json()["outcome"] == "false_alarm"
        detail = c.get(f"/api/alerts/{alert_id}").json()
        assert detail["note"] == "Appui involontaire, rappelée."
        assert detail["timeline"][-1]["type"] == "resolved"
        assert c.post(url, json={"outcome": "test"}).status_code == 409
        # Acknowledging a closed alert is a conflict too.
        r = c.post(f"/api/alerts/{alert_id}/ack")
        assert r.status_code == 409 and r.json()["state"] == "resolved"
    resolved = [p for _, p in api.published if p["type"] == "alert.resolved"]
    assert len(resolved) == 1


def test_every_action_is_audited(api: ApiStack) -> None:
    api.add_user("paris", departements=("75",))
    alert_id = api.add_alert("75")
    with api.client() as c:
        c.post(
            "/api/token",
            data={"username": "paris", "password": "nope nope nope"},
            headers={"User-Agent": "poste-7"},
        )
    token = api.token("paris")
    with api.client(token) as c:
        c.get(f"/api/alerts/{alert_id}", headers={"User-Agent": "poste-7"})
        c.post(f"/api/alerts/{alert_id}/ack", headers={"User-Agent": "poste-7"})
        c.post(f"/api/alerts/{alert_id}/ack", headers={"User-Agent": "poste-7"})
        c.post(f"/api/alerts/{alert_id}/resolve", json={"outcome": "physical_assault"})
    records = api.audit()
    actions = [(r.action, r.actor, r.target) for r in records]
    assert actions == [
        ("login.failed", None, "paris"),
        ("token.issued", "paris", None),
        ("alert.view", "paris", alert_id),
        ("alert.ack", "paris", alert_id),
        ("alert.ack_refused", "paris", alert_id),
        ("alert.resolve", "paris", alert_id),
    ]
    for r in records:
        assert r.ip == "127.0.0.1"
        assert r.at is not None
    assert records[0].user_agent == "poste-7"
    assert records[3].user_agent == "poste-7"
    assert records[4].detail["acknowledged_by"] == "paris"
    assert records[5].detail["outcome"] == "physical_assault"


def test_login_rate_limit_holds_even_for_the_right_password(api: ApiStack) -> None:
    api.add_user("paris", departements=("75",))
    with api.client() as c:
        for _ in range(users_service.MAX_FAILURES_PER_IP):
            r = c.post("/api/token", data={"username": "paris", "password": "wrong wrong wrong"})
            assert r.status_code == 401
        r = c.post("/api/token", data={"username": "paris", "password": "mot de passe très long"})
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) > 0
    assert api.audit()[-1].action == "login.throttled"


def test_timeline_sources_plug_in(api: ApiStack) -> None:
    api.add_user("chef", role="admin")
    alert_id = api.add_alert("13", created_at=ago(minutes=1))

    def fake_notifications(session: object, alert: object) -> list[TimelineEntry]:
        return [
            TimelineEntry(
                at=utcnow(),
                source="dispatch",
                type="sms_sent",
                label="SMS envoyé",
                actor="Référent 13",
                detail={"to": "+33491000013"},
            )
        ]

    state = api.app.state
    built_with = state.timeline_sources
    state.timeline_sources = (*built_with, fake_notifications)
    try:
        with api.client(api.token("chef")) as c:
            timeline = c.get(f"/api/alerts/{alert_id}").json()["timeline"]
    finally:
        state.timeline_sources = built_with
    assert [(e["source"], e["type"]) for e in timeline] == [
        ("alert_event", "received"),
        ("dispatch", "sms_sent"),
    ]


def test_security_headers_on_the_api(api_sqlite: ApiStack) -> None:
    with api_sqlite.client() as c:
        r = c.get("/api/alerts")
    assert r.status_code == 401
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"
    assert "default-src 'self'" in r.headers["content-security-policy"]


def test_an_alert_on_a_border_is_seen_by_both_departements(api: ApiStack) -> None:
    api.add_user("vaucluse", departements=("84",))
    api.add_user("paris", departements=("75",))
    border = api.add_alert("13")
    with write_scope(api.runtime.engine) as s:
        for dep, reason in (("13", "position"), ("84", "ambiguous_border")):
            alerts_service.add_departement(
                s, alert_id=border, departement=dep, at=utcnow(), reason=reason
            )
    with api.client(api.token("vaucluse")) as c:
        assert [a["alert_id"] for a in c.get("/api/alerts").json()] == [border]
        assert c.post(f"/api/alerts/{border}/ack").status_code == 200
    with api.client(api.token("paris")) as c:
        assert c.get("/api/alerts").json() == []
        assert c.get(f"/api/alerts/{border}").status_code == 404
