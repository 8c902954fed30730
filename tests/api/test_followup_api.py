"""ONVS pre-fill and monthly statistics over HTTP, within the caller's départements."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from tests.api.conftest import ApiStack

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _seed(api: ApiStack) -> tuple[str, str]:
    a13 = api.add_alert(
        "13", created_at=T0, state="resolved", commune_nom="Aubagne", outcome="physical_assault",
        acknowledged_at=T0 + timedelta(seconds=40), acknowledged_by="DDSP 13",
    )  # fmt: skip
    a75 = api.add_alert("75", created_at=T0, state="resolved", outcome="false_alarm")
    api.add_user("disp13", departements=("13",))
    api.add_user("national")
    return a13, a75


def test_onvs_prefill_is_scoped(api: ApiStack) -> None:
    a13, a75 = _seed(api)
    with api.client(api.token("disp13")) as c:
        r = c.get(f"/api/alerts/{a13}/onvs")
        assert r.status_code == 200
        body = r.json()
        assert body["town"] == "Aubagne" and body["factPersonsLevel"] == 3
        assert body["thirdParty"]  # a responder took it in charge
        assert c.get(f"/api/alerts/{a75}/onvs").status_code == 404
        r = c.get(f"/api/alerts/{a13}/onvs.csv")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text.lstrip("\ufeff")), delimiter=";"))
        assert rows[0]["vigieAlertId"] == a13
    with api.client() as anonymous:
        assert anonymous.get(f"/api/alerts/{a13}/onvs").status_code == 401


def test_monthly_stats_are_scoped(api: ApiStack) -> None:
    _seed(api)
    with api.client(api.token("disp13")) as c:
        mine = c.get("/api/stats/monthly").json()
        r = c.get("/api/stats/monthly.csv")
    assert [(s["departement"], s["month"], s["alerts"]) for s in mine] == [("13", "2026-03", 1)]
    assert mine[0]["ack_within_60s"] == 1.0
    assert r.status_code == 200 and "prise_en_charge_sous_60s" in r.text
    with api.client(api.token("national")) as c:
        everyone = c.get("/api/stats/monthly").json()
    assert {s["departement"] for s in everyone} == {"13", "75"}
    assert next(s for s in everyone if s["departement"] == "75")["false_alarm_rate"] == 1.0
