"""The audit trail (operations.md 1.1, "Accounts and audit"): every read of personal data
(alert list, alert detail, ONVS export, statistics export), from the API and the console, and
every CLI change has a row with who, what, when and from where; ``GET /api/audit`` (admins)
returns them newest first, filtered by ``since`` and ``action``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from typer.testing import CliRunner

from alert_server.cli import app as vigie_app
from tests.api.conftest import ApiStack
from vigie.timeutil import utcnow


def test_every_read_of_personal_data_is_in_api_audit(api: ApiStack) -> None:
    api.add_user("chef", role="admin")
    api.add_user("regul", departements=("13",))
    api.add_device("nurse-001")
    alert_id = api.add_alert("13")
    token = api.token("regul")
    start = utcnow() - timedelta(seconds=1)
    with api.client(token) as c:
        c.headers["User-Agent"] = "poste-3"
        for path in (
            "/api/alerts",
            f"/api/alerts/{alert_id}",
            f"/api/alerts/{alert_id}/onvs",
            f"/api/alerts/{alert_id}/onvs.csv",
            "/api/stats/monthly.csv",
        ):
            assert c.get(path).status_code == 200, path
        assert c.get("/api/audit").status_code == 403  # admins only

    admin = api.token("chef")
    with api.client(admin) as c:
        rows = c.get("/api/audit", params={"since": start.isoformat()}).json()
        reads = [r for r in rows if r["username"] == "regul" and r["action"] != "token.issued"]
        assert [r["action"] for r in reads] == [
            "stats.export",
            "onvs.export",
            "onvs.export",
            "alert.view",
            "alert.list",
        ]  # fmt: skip  (newest first)
        assert set(rows[0]) == {"at", "username", "action", "target", "ip"}
        assert all(r["ip"] == "127.0.0.1" and r["at"].endswith("Z") for r in reads)
        assert reads[1]["target"] == alert_id and reads[3]["target"] == alert_id
        only = c.get("/api/audit", params={"action": "onvs.export"}).json()
        assert [r["action"] for r in only] == ["onvs.export", "onvs.export"]
        prefix = c.get("/api/audit", params={"action": "alert.*"}).json()
        assert {r["action"] for r in prefix} == {"alert.list", "alert.view"}
        future = (utcnow() + timedelta(hours=1)).isoformat()
        assert c.get("/api/audit", params={"since": future}).json() == []
        assert c.get("/api/audit", params={"since": "hier"}).status_code == 422
    # Reading the audit is itself recorded.
    assert api.audit()[-1].action == "audit.export"
    assert api.audit()[-1].actor == "chef"


def test_cli_changes_are_audited(tmp_path: Path) -> None:
    from sqlmodel import Session, select

    from alert_server.db import make_engine
    from alert_server.users.models import AuditRecord

    env = {"VIGIE_DATABASE_URL": f"sqlite:///{tmp_path / 'v.db'}"}
    run = CliRunner().invoke
    add = ["devices", "add", "nurse-7", "--worker", "Inès", "--role", "nurse",
           "--phone", "+33612345678", "--json"]  # fmt: skip
    assert run(vigie_app, add, env=env, input="2468\n1357\n").exit_code == 0
    # A device of the OsmAnd gateway too (it has no broker account, still a CLI change).
    osmand = [*add[:2], "traccar-7", *add[3:], "--gateway", "osmand"]
    assert run(vigie_app, osmand, env=env, input="2468\n1357\n").exit_code == 0
    # No broker configured here: revoked in the database (and audited), exit 1 for the broker.
    assert run(vigie_app, ["devices", "revoke", "nurse-7"], env=env).exit_code == 1
    assert run(vigie_app, ["purge", "--dry-run"], env=env).exit_code == 0
    assert run(vigie_app, ["purge"], env=env).exit_code == 0
    engine = make_engine(env["VIGIE_DATABASE_URL"])
    try:
        with Session(engine) as s:
            rows = list(s.exec(select(AuditRecord).order_by(AuditRecord.id)))  # type: ignore[arg-type]
    finally:
        engine.dispose()
    assert [(r.action, r.target) for r in rows] == [
        ("device.add", "nurse-7"),
        ("device.add", "traccar-7"),
        ("device.revoke", "nurse-7"),
        ("purge.dry_run", None),
        ("purge", None),
    ]
    assert all(r.actor and r.actor.startswith("cli:") for r in rows)
    assert rows[3].detail["dry_run"] is True
