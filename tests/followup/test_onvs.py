from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from alert_server.followup import onvs
from vigie import outcomes


def _input(**kw: object) -> onvs.OnvsInput:
    base: dict[str, object] = {
        "alert_id": "a-1",
        "kind": "sos",
        "created_at": datetime(2026, 11, 22, 22, 30, tzinfo=UTC),  # 23:30 in Paris
        "worker_role": "nurse",
        "commune_nom": "Aubagne",
        "commune_code": "13005",
        "postal_code": "13400",
        "site_label": None,
        "session_memo": "Visite au domicile, 12 rue des Lilas",
        "outcome": "physical_assault",
        "note": "Patient agité",
        "acknowledged_by": "Référent santé DDSP 13",
    }
    base.update(kw)
    return onvs.OnvsInput(**base)  # type: ignore[arg-type]


def test_nurse_assaulted_at_a_patients_home() -> None:
    row = onvs.prefill(_input())
    assert row["date"] == "2026-11-22"
    assert row["hour"] == "Soirée (19h-00h)"
    assert row["job"] == "Infirmier"
    assert row["location"] == "Au domicile du patient"
    assert row["factPersons"] == ["Violence volontaire sans arme"]
    assert row["factPersonsLevel"] == 3 and row["factGoodsLevel"] is None
    assert row["thirdParty"] and "Forces de l'ordre" in row["thirdParty"][0]
    assert "12 rue des Lilas" in row["description"] and "Patient agité" in row["description"]


def test_pharmacy_armed_robbery_and_duress_levels() -> None:
    row = onvs.prefill(
        _input(
            worker_role="pharmacist",
            site_label="Pharmacie du Port",
            session_memo=None,
            outcome="armed_robbery",
            duress=True,
        )
    )
    assert row["job"] == "Pharmacien" and row["location"] == "Officine"
    assert row["factGoods"] == ["Vol à main armée"] and row["factGoodsLevel"] == 3
    assert row["factPersonsLevel"] == 2  # the duress adds the threat


def test_hour_buckets_follow_paris_time_across_dst() -> None:
    # 05:30 UTC is 06:30 in winter (night) and 07:30 in summer (morning).
    assert onvs.hour_bucket(datetime(2026, 1, 10, 5, 30, tzinfo=UTC)) == "Nuit (00h-7h)"
    assert onvs.hour_bucket(datetime(2026, 7, 10, 5, 30, tzinfo=UTC)) == "Matin (7h-12h)"


def test_false_alarm_has_no_facts_and_csv_round_trips() -> None:
    rows = [onvs.prefill(_input(outcome="false_alarm")), onvs.prefill(_input())]
    assert rows[0]["factPersons"] == [] and rows[0]["factPersonsLevel"] is None
    parsed = list(csv.DictReader(io.StringIO(onvs.to_csv(rows)), delimiter=";"))
    assert [r["vigieAlertId"] for r in parsed] == ["a-1", "a-1"]
    assert parsed[1]["factPersons"] == "Violence volontaire sans arme"
    assert tuple(parsed[0]) == onvs.FIELDS


def test_unknown_outcome_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="inconnu"):
        outcomes.get("alien_abduction")
    assert all(1 <= f.level <= 4 for o in outcomes.OUTCOMES for f in o.facts)
