"""Follow-up from the database: statistics on a known data set, the ONVS pre-fill of an
alert, and the retention purge (and its dry run). SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert
from sqlmodel import select
from typer.testing import CliRunner

from alert_server import reports as followup
from alert_server.alerts import service as alerts
from alert_server.alerts.models import Alert, AlertEvent
from alert_server.db import write_scope
from alert_server.devices.models import Device
from alert_server.followup.models import WorkerMessage
from alert_server.geo.models import GeoZone
from alert_server.retention import RetentionPolicy, months_before, purge
from alert_server.sessions.models import VisitSession
from dispatch.models import Escalation, Notification
from tests.sessions.helpers import MEMO, T0, add_device, send, session_msg, set_presence

NOTIF = Notification.__table__  # type: ignore[attr-defined]
M0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _alert(engine: Engine, alert_id: str, created_at: datetime, **values: Any) -> None:
    row = {
        "alert_id": alert_id,
        "device_id": "nurse-1",
        "kind": "sos",
        "state": "open",
        "duress": False,
        "flags": [],
        "created_at": created_at,
        "raw": '{"v": 1}',
        **values,
    }
    with write_scope(engine) as s:
        assert alerts.insert_alert(s, values=row)


def _sent(engine: Engine, alert_id: str, at: datetime, step: int = 0) -> None:
    with write_scope(engine) as s:
        s.execute(
            insert(NOTIF).values(
                alert_id=alert_id,
                kind="alert",
                chain_index=0,
                step_no=step,
                round_no=0,
                contact_id=1,
                contact_name="Référent",
                phone="+33465710013",
                channel="sms",
                status="sent",
                due_at=at,
                next_action_at=at,
                attempts=0,
                provider_rank=3,
                created_at=at,
                sent_at=at,
                updated_at=at,
            )
        )


# --- statistics ------------------------------------------------------------------------------


def test_monthly_statistics_from_the_database(engine: Engine) -> None:
    def a(i: int, dep: str | None, kind: str, outcome: str | None, notif_s: float | None,
          ack_s: float | None, at: datetime = M0) -> None:  # fmt: skip
        acked = at + timedelta(seconds=ack_s) if ack_s is not None else None
        state = "resolved" if outcome else ("acknowledged" if acked else "open")
        _alert(engine, f"a{i}", at, departement=dep, kind=kind, outcome=outcome,
               acknowledged_at=acked, state=state)  # fmt: skip
        if notif_s is not None:
            _sent(engine, f"a{i}", at + timedelta(seconds=notif_s))
            _sent(engine, f"a{i}", at + timedelta(seconds=notif_s + 30), step=1)  # later: ignored

    a(1, "13", "sos", "physical_assault", 1, 30)
    a(2, "13", "sos", "false_alarm", 2, 50)
    a(3, "13", "fall", "false_alarm", 3, 120)
    a(4, "13", "sos_silent", "test", 4, 200)
    a(5, "13", "sos", None, 5, None)
    a(6, "84", "sos", "threat", 1, 10)
    a(7, "13", "sos", "theft", 1, 5, at=datetime(2026, 3, 31, 23, 30, tzinfo=UTC))  # April, Paris
    a(8, None, "sos", None, None, None)
    with write_scope(engine) as s:
        facts = followup.alert_facts(s)
        stats = {(m.departement, m.month): m for m in followup.monthly_stats(s)}
        text = followup.monthly_stats_csv(s)
        march = followup.alert_facts(
            s, since=datetime(2026, 3, 1, tzinfo=UTC), until=datetime(2026, 3, 31, tzinfo=UTC)
        )
    assert len(facts) == 8 and len(march) == 7
    assert set(stats) == {("13", "2026-03"), ("13", "2026-04"), ("84", "2026-03"),
                          ("inconnu", "2026-03")}  # fmt: skip
    m = stats[("13", "2026-03")]
    assert m.alerts == 5
    assert m.by_kind == {"sos": 3, "fall": 1, "sos_silent": 1}
    assert m.first_notification_p50_s == 3 and m.first_notification_p90_s == 5
    assert m.ack_p50_s == 50 and m.ack_p90_s == 200
    assert m.ack_within_60s == 2 / 5 and m.unacknowledged == 1
    assert m.false_alarm_rate == 2 / 3
    assert stats[("inconnu", "2026-03")].first_notification_within_60s == 0
    rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    assert rows[0][:3] == ["departement", "mois", "alertes"]
    assert rows[1][:3] == ["13", "2026-03", "5"]


# --- ONVS ------------------------------------------------------------------------------------


def test_onvs_prefill_from_an_alert(engine: Engine) -> None:
    add_device(engine)
    send(engine, session_msg("start", expected_end=T0 + timedelta(hours=1), memo=MEMO), T0)
    with write_scope(engine) as s:
        s.add(GeoZone(code_commune="13005", libelle_commune="Aubagne", institution="PN",
                      departement="13", code_postal="13400"))  # fmt: skip
    _alert(engine, "onvs-1", T0 + timedelta(minutes=10), departement="13",
           commune_code="13005", commune_nom="Aubagne", outcome="physical_assault",
           state="resolved", acknowledged_by="Référent santé DDSP 13",
           acknowledged_at=T0 + timedelta(minutes=11))  # fmt: skip
    with write_scope(engine) as s:
        data = followup.onvs_prefill(s, alert_id="onvs-1")
        text = followup.onvs_prefill_csv(s, alert_ids=["onvs-1", "unknown"])
        assert followup.onvs_prefill(s, alert_id="unknown") is None
    assert data is not None
    assert data["postalCode"] == "13400" and data["town"] == "Aubagne"
    assert data["job"] == "Infirmier" and data["location"] == "Au domicile du patient"
    assert data["factPersons"] == ["Violence volontaire sans arme"]
    assert data["factPersonsLevel"] == 3 and MEMO in data["description"]
    assert data["hour"] == "Après-midi (12h-19h)" and data["date"] == "2026-11-22"
    assert data["thirdParty"]
    json.dumps(data)  # JSON-ready
    lines = text.strip().split("\r\n")
    assert len(lines) == 2 and "13400" in lines[1]


# --- retention -------------------------------------------------------------------------------

NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=40)
RECENT = NOW - timedelta(days=5)
POLICY = RetentionPolicy(position_days=30, alert_months=12)


def _dataset(engine: Engine) -> None:
    pos = {"last_lat": 43.3, "last_lon": 5.4, "last_acc_m": 10.0, "last_pos_src": "gps"}
    for device_id, at in (("old-1", OLD), ("recent-1", RECENT), ("busy-1", OLD), ("alert-1", OLD)):
        add_device(engine, device_id)
        set_presence(engine, device_id, last_pos_at=at, **pos)
    # busy-1 is on a visit (started long ago, still running): its position stays.
    send(engine, session_msg("start", "run", ts=OLD, expected_end=NOW), OLD, "busy-1")
    # Ended visits: an old one (deleted), a recent one (kept).
    send(engine, session_msg("start", "v-old", ts=OLD, memo=MEMO), OLD, "old-1")
    send(engine, session_msg("end", "v-old", ts=OLD), OLD + timedelta(hours=1), "old-1")
    send(engine, session_msg("start", "v-new", ts=RECENT, memo=MEMO), RECENT, "recent-1")
    send(engine, session_msg("end", "v-new", ts=RECENT), RECENT, "recent-1")
    # alert-1 has an open alert: its position stays.
    _alert(engine, "open-old", NOW - timedelta(days=400), device_id="alert-1")
    closed = {"state": "resolved", "outcome": "physical_assault", "departement": "13",
              "commune_nom": "Aubagne", "pos_lat": 43.29, "pos_lon": 5.57, "note": "nom du patient",
              "acknowledged_by": "Référent"}  # fmt: skip
    _alert(engine, "closed-13m", NOW - timedelta(days=400), device_id="old-1",
           resolved_at=months_before(NOW, 13), **closed)  # fmt: skip
    _alert(engine, "closed-11m", NOW - timedelta(days=340), device_id="old-1",
           resolved_at=months_before(NOW, 11), **closed)  # fmt: skip
    with write_scope(engine) as s:
        alerts.add_event(s, alert_id="closed-13m", at=OLD, type_="position", actor="old-1",
                         lat=43.29, lon=5.57)  # fmt: skip
        s.add(Escalation(alert_id="closed-13m", status="closed", alert_created_at=OLD,
                         started_at=OLD, exhausts_at=OLD, ack_code="123",
                         brief=json.dumps({"worker_phone": "+33612345678"}), policy="{}",
                         updated_at=OLD))  # fmt: skip
        for i, at in enumerate((OLD, RECENT)):
            s.add(WorkerMessage(dedupe_key=f"m{i}", kind="low_battery", phone="+33612345678",
                                status="sent", next_action_at=at, created_at=at,
                                updated_at=at))  # fmt: skip


def _snapshot(engine: Engine) -> dict[str, Any]:
    with write_scope(engine) as s:
        return {
            "devices": {d.device_id: d.last_lat for d in s.exec(select(Device))},
            "sessions": sorted(v.session_id for v in s.exec(select(VisitSession))),
            "alerts": {a.alert_id: (a.device_id, a.note) for a in s.exec(select(Alert))},
            "messages": sorted(m.dedupe_key for m in s.exec(select(WorkerMessage))),
        }


def test_purge_removes_exactly_what_it_should(engine: Engine) -> None:
    _dataset(engine)
    before = _snapshot(engine)
    dry = purge(engine, now=NOW, policy=POLICY, dry_run=True)
    assert (dry.device_positions, dry.ended_sessions, dry.alerts_pseudonymised,
            dry.worker_messages, dry.alerts_expired) == (2, 1, 2, 1, 1)  # fmt: skip
    assert _snapshot(engine) == before  # the dry run changed nothing

    report = purge(engine, now=NOW, policy=POLICY)
    assert report.as_dict() == {**dry.as_dict(), "dry_run": False}
    after = _snapshot(engine)
    # alert-1's open alert is 400 days old: forgotten, it protects nothing any more.
    assert after["devices"] == {"old-1": None, "recent-1": 43.3, "busy-1": 43.3, "alert-1": None}
    assert after["sessions"] == ["run", "v-new"]
    assert after["messages"] == ["m1"]
    pseudo, note = after["alerts"]["closed-13m"]
    assert pseudo.startswith("anon-") and note is None
    assert after["alerts"]["closed-11m"] == ("old-1", "nom du patient")
    # An alert left open past the period: closed as expired and pseudonymised.
    assert after["alerts"]["open-old"][0].startswith("anon-")
    with write_scope(engine) as s:
        a = alerts.get_alert(s, alert_id="closed-13m")
        assert a is not None
        # Statistics fields kept; the person and the place gone.
        kept = ("13", "Aubagne", "physical_assault", "sos")
        assert (a.departement, a.commune_nom, a.outcome, a.kind) == kept
        assert a.resolved_at is not None and a.created_at is not None
        assert a.pos_lat is None and a.raw == '{"pseudonymised": true}'
        assert a.acknowledged_by is None
        [ev] = s.exec(select(AlertEvent).where(AlertEvent.alert_id == "closed-13m")).all()
        assert ev.actor is None and ev.detail == {} and ev.type == "position"
        esc = s.get(Escalation, "closed-13m")
        assert esc is not None and "+336" not in esc.brief
        expired = alerts.get_alert(s, alert_id="open-old")
        assert expired is not None and expired.state == "expired" and expired.pos_lat is None
    # Idempotent.
    again = purge(engine, now=NOW, policy=POLICY)
    assert (again.device_positions, again.ended_sessions, again.alerts_pseudonymised,
            again.worker_messages) == (0, 0, 0, 0)  # fmt: skip


@pytest.mark.parametrize("dry_run", [True, False])
def test_vigie_purge_command(
    engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch, dry_run: bool
) -> None:
    from alert_server.cli import app

    add_device(engine, "old-1")
    set_presence(engine, "old-1", last_lat=43.3, last_lon=5.4,
                 last_pos_at=datetime.now(UTC) - timedelta(days=31))  # fmt: skip
    monkeypatch.setenv("VIGIE_DATABASE_URL", db_url)
    args = ["purge", "--dry-run"] if dry_run else ["purge"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "positions de boîtiers effacées        : 1" in result.output
    assert ("Simulation" in result.output) is dry_run
    with write_scope(engine) as s:
        d = s.get(Device, "old-1")
        assert d is not None and (d.last_lat is None) is not dry_run
    help_text = CliRunner().invoke(app, ["purge", "--help"]).output
    assert "sans rien modifier" in help_text


def test_pseudonymised_alert_keeps_its_statistics(engine: Engine) -> None:
    _alert(engine, "x", NOW - timedelta(days=500), state="cancelled", departement="84",
           acknowledged_at=NOW - timedelta(days=500) + timedelta(seconds=40))  # fmt: skip
    _sent(engine, "x", NOW - timedelta(days=500) + timedelta(seconds=2))
    purge(engine, now=NOW, policy=POLICY)
    with write_scope(engine) as s:
        [fact] = followup.alert_facts(s)
    assert fact.departement == "84"
    assert fact.first_notification_at is not None and fact.acknowledged_at is not None
