"""Retention over the tables the first purge forgot: workers of long-revoked devices, inbound
SMS, the audit trail (its own period) and ended console sessions; ``vigie purge --dry-run``
counts them per table and changes nothing. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import select
from typer.testing import CliRunner

from alert_server.db import write_scope
from alert_server.devices.models import Device, Worker
from alert_server.retention import ERASED_NAME, RetentionPolicy, purge
from alert_server.users.models import Account, AuditRecord, WebSession
from dispatch.models import Inbound
from tests.sessions.helpers import add_device

NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
POLICY = RetentionPolicy(position_days=30, alert_months=12, audit_months=24)


def _dataset(engine: Engine) -> None:
    for device_id, revoked in (
        ("gone-1", NOW - timedelta(days=400)),
        ("gone-2", NOW - timedelta(days=100)),
        ("here-1", None),
    ):
        add_device(engine, device_id)
        with write_scope(engine) as s:
            d = s.get(Device, device_id)
            assert d is not None
            d.revoked_at = revoked
            s.add(d)
    with write_scope(engine) as s:
        for i, days in enumerate((400, 100)):
            s.add(Inbound(from_phone="+33491000013", body=f"OK {i}", outcome="ack",
                          received_at=NOW - timedelta(days=days)))  # fmt: skip
        for i, days in enumerate((800, 400)):
            s.add(AuditRecord(at=NOW - timedelta(days=days), actor="regul",
                              action="alert.view", target=f"a{i}", ip="10.0.0.1"))  # fmt: skip
        account = Account(username="regul", password_hash="x", role="admin", created_at=NOW)
        s.add(account)
        s.flush()
        for i, days in enumerate((60, 1)):
            at = NOW - timedelta(days=days)
            s.add(WebSession(token_sha256=f"{i:064d}", account_id=account.id or 0,
                             csrf_token="c", created_at=at - timedelta(hours=12),
                             expires_at=at, ip="10.0.0.1"))  # fmt: skip


def _state(engine: Engine) -> tuple[list[str], list[str], list[str], int]:
    with write_scope(engine) as s:
        return (
            sorted(w.name for w in s.exec(select(Worker))),
            sorted(i.body for i in s.exec(select(Inbound))),
            sorted(a.target or "" for a in s.exec(select(AuditRecord))),
            len(s.exec(select(WebSession)).all()),
        )


def test_purge_covers_every_table_with_personal_data(engine: Engine) -> None:
    _dataset(engine)
    before = _state(engine)
    dry = purge(engine, now=NOW, policy=POLICY, dry_run=True)
    assert (dry.workers_erased, dry.inbound_sms, dry.audit_rows, dry.web_sessions) == (1, 1, 1, 1)
    assert _state(engine) == before
    report = purge(engine, now=NOW, policy=POLICY)
    assert report.as_dict() == {**dry.as_dict(), "dry_run": False}
    workers, inbound, audit, sessions = _state(engine)
    assert workers == sorted([ERASED_NAME, "Camille gone-2", "Camille here-1"])
    assert inbound == ["OK 1"]
    assert audit == ["a1"]  # the audit keeps its own, longer period
    assert sessions == 1
    with write_scope(engine) as s:
        erased = s.exec(select(Worker).where(Worker.name == ERASED_NAME)).one()
        assert erased.phone == ""
    again = purge(engine, now=NOW, policy=POLICY)
    assert (again.workers_erased, again.inbound_sms, again.audit_rows, again.web_sessions) == (
        0, 0, 0, 0
    )  # fmt: skip


def test_dry_run_lists_counts_per_table(
    engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alert_server.cli import app

    _dataset(engine)
    monkeypatch.setenv("VIGIE_DATABASE_URL", db_url)
    result = CliRunner().invoke(app, ["purge", "--dry-run"])
    assert result.exit_code == 0, result.output
    for table in ("device", "alert", "worker", "dispatch_inbound", "audit", "web_session"):
        assert any(line.split()[0] == table for line in result.output.splitlines()[1:-1]), table
    assert "Simulation : rien n'a été modifié." in result.output
