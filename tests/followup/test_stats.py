"""Statistics on a known data set give known figures."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from alert_server.followup.stats import AlertFacts, monthly, nearest_rank, to_csv

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _a(dept: str | None, kind: str, outcome: str | None, notif_s: float | None,
       ack_s: float | None, at: datetime = T0) -> AlertFacts:  # fmt: skip
    return AlertFacts(
        dept,
        kind,
        outcome,
        at,
        at + timedelta(seconds=notif_s) if notif_s is not None else None,
        at + timedelta(seconds=ack_s) if ack_s is not None else None,
    )


def test_known_month() -> None:
    rows = [
        _a("13", "sos", "physical_assault", 1, 30),
        _a("13", "sos", "false_alarm", 2, 50),
        _a("13", "fall", "false_alarm", 3, 120),
        _a("13", "sos_silent", "test", 4, 200),
        _a("13", "sos", None, 5, None),  # never acknowledged
        _a("84", "sos", "threat", 1, 10),
        # 31 March 23:30 UTC is 1 April 01:30 in Paris: April's figures.
        _a("13", "sos", "theft", 1, 5, at=datetime(2026, 3, 31, 23, 30, tzinfo=UTC)),
        _a(None, "sos", None, None, None),
    ]
    stats = {(s.departement, s.month): s for s in monthly(rows)}
    assert set(stats) == {("13", "2026-03"), ("13", "2026-04"), ("84", "2026-03"),
                          ("inconnu", "2026-03")}  # fmt: skip
    m = stats[("13", "2026-03")]
    assert m.alerts == 5
    assert m.by_kind == {"sos": 3, "fall": 1, "sos_silent": 1}
    assert m.by_outcome["false_alarm"] == 2 and m.by_outcome["non_clos"] == 1
    assert m.first_notification_p50_s == 3 and m.first_notification_p90_s == 5
    assert m.first_notification_within_60s == 1.0
    assert m.ack_p50_s == 50 and m.ack_p90_s == 200  # ranks 2 and 4 of [30, 50, 120, 200]
    assert m.ack_within_60s == 2 / 5 and m.ack_within_180s == 3 / 5
    assert m.unacknowledged == 1
    assert m.false_alarm_rate == 2 / 3  # test and unclosed left out
    unknown = stats[("inconnu", "2026-03")]
    assert unknown.ack_within_60s == 0 and unknown.ack_p50_s is None
    parsed = list(csv.DictReader(io.StringIO(to_csv(monthly(rows))), delimiter=";"))
    first = next(r for r in parsed if r["departement"] == "13" and r["mois"] == "2026-03")
    assert first["prise_en_charge_sous_60s"] == "0.4" and first["taux_fausses_alertes"] == "0.667"


def test_nearest_rank() -> None:
    assert nearest_rank([], 0.5) is None
    assert nearest_rank([5], 0.9) == 5
    assert nearest_rank(list(range(1, 11)), 0.9) == 9
    assert nearest_rank(list(range(1, 11)), 0.5) == 5
