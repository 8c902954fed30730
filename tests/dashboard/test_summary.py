"""The alert's story in plain French: the escalation summary and the timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from alert_server.alerts.schemas import TimelineEntry
from alert_server.dashboard.summary import escalation_summary, plain_timeline

NOW = datetime(2026, 12, 2, 7, 31, 30, tzinfo=UTC)  # 08:31:30 in Paris


def entry(
    seconds: float, origin: str, type_: str, actor: str | None = None, **detail: Any
) -> TimelineEntry:
    return TimelineEntry(
        at=NOW + timedelta(seconds=seconds),
        source=origin,
        type=type_,
        label=type_,
        actor=actor,
        detail=detail,
    )


REF = "Référent santé DDSP 13"
STORY = [
    entry(-40, "alert_event", "received", "nurse-1", flags=["delayed"], acc_m=12, source="gps"),
    entry(
        -39,
        "alert_event",
        "dispatched",
        chains=[{"departement": "13", "force": "PN", "contacts": [REF, "CIC Marseille"]}],
    ),
    entry(
        -30,
        "dispatch",
        "alert_sms",
        REF,
        to="+33600000001",
        channel="sms",
        status="delivered",
        sid="SM0123",
    ),
    entry(-25, "dispatch", "delivery", REF, to="+33600000001", channel="sms", status="delivered"),
    entry(12, "dispatch", "alert_call", REF, channel="voice", status="planned"),
    entry(60, "dispatch", "alert_sms", "CIC Marseille", channel="sms", status="planned"),
    entry(90, "dispatch", "alert_sms", "Brigade de Cassis", channel="sms", status="cancelled"),
]


def test_summary_says_who_how_when_and_what_comes_next() -> None:
    assert escalation_summary(STORY, NOW) == [
        "SMS au Référent santé DDSP 13 à 08:31, délivré ; appel dans 12 s ; puis CIC Marseille."
    ]


def test_summary_after_a_console_acknowledgement_and_when_nobody_was_told() -> None:
    acked = [
        *STORY,
        entry(5, "alert_event", "acknowledged", "regulation", via="dashboard"),
        entry(
            5,
            "dispatch",
            "acknowledged",
            "regulation",
            channel="dashboard",
            detail="3 notification(s) annulée(s)",
        ),
    ]
    summary = escalation_summary(acked, NOW)
    assert summary[0] == "Prise en charge par regulation à 08:31 depuis la console."
    assert not any("dans" in s for s in summary)  # nothing is coming any more
    assert escalation_summary([], NOW) == ["Aucun référent n'a encore été prévenu par Vigie."]


def test_timeline_is_plain_french_and_only_what_happened() -> None:
    story = [
        *STORY,
        entry(5, "alert_event", "acknowledged", "regulation", via="dashboard"),
        entry(
            5,
            "dispatch",
            "acknowledged",
            "regulation",
            channel="dashboard",
            detail="3 notification(s) annulée(s)",
        ),
    ]
    lines = plain_timeline(story)
    texts = [line.text for line in lines]
    assert texts == [
        "Alerte reçue du boîtier — source : GPS ; précision : ± 12 m ; "
        "signalements : transmise en retard",
        "Escalade lancée : département 13 police (Référent santé DDSP 13, CIC Marseille)",
        "SMS d'alerte au Référent santé DDSP 13 : délivré",
        "Réseau de l'opérateur : SMS au Référent santé DDSP 13 délivré",
        "Prise en charge depuis la console",  # once, not twice
    ]
    everything = " ".join(texts)
    for raw in ("planned", "status", "channel", "sid", "SM0123", "{", "'departement'", "Accusé"):
        assert raw not in everything, raw
    assert all(line.at <= NOW + timedelta(seconds=5) for line in lines)  # no future rows
    assert [line.tone for line in lines][2:] == ["ok", "ok", "ok"]
