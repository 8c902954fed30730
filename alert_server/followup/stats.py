"""Monthly statistics per département, for the yearly review committee of the regional pacts.

Pure functions over plain rows: percentiles use the nearest-rank method (the value at rank
⌈p·n⌉), which is what a spreadsheet user checking the figures by hand expects.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
UNKNOWN_DEPT = "inconnu"


@dataclass(frozen=True)
class AlertFacts:
    departement: str | None
    kind: str
    outcome: str | None
    created_at: datetime
    first_notification_at: datetime | None
    acknowledged_at: datetime | None


@dataclass
class MonthStats:
    departement: str
    month: str  # YYYY-MM, Paris time
    alerts: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_outcome: Counter[str] = field(default_factory=Counter)
    first_notification_p50_s: float | None = None
    first_notification_p90_s: float | None = None
    first_notification_within_60s: float | None = None  # share of alerts, 0..1
    ack_p50_s: float | None = None
    ack_p90_s: float | None = None
    ack_within_60s: float | None = None
    ack_within_180s: float | None = None
    unacknowledged: int = 0
    false_alarm_rate: float | None = None


def nearest_rank(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def _share(values: list[float], limit_s: float, total: int) -> float | None:
    return None if total == 0 else sum(1 for v in values if v <= limit_s) / total


def monthly(rows: list[AlertFacts]) -> list[MonthStats]:
    groups: dict[tuple[str, str], list[AlertFacts]] = defaultdict(list)
    for r in rows:
        month = r.created_at.astimezone(PARIS).strftime("%Y-%m")
        groups[(r.departement or UNKNOWN_DEPT, month)].append(r)
    out = []
    for (dept, month), items in sorted(groups.items()):
        s = MonthStats(dept, month, alerts=len(items))
        s.by_kind.update(r.kind for r in items)
        s.by_outcome.update(r.outcome or "non_clos" for r in items)
        notif = [
            (r.first_notification_at - r.created_at).total_seconds()
            for r in items
            if r.first_notification_at is not None
        ]
        acks = [
            (r.acknowledged_at - r.created_at).total_seconds()
            for r in items
            if r.acknowledged_at is not None
        ]
        # Shares are over ALL alerts of the month: an alert never notified or never
        # acknowledged counts as "not within", it does not vanish from the denominator.
        s.first_notification_p50_s = nearest_rank(notif, 0.5)
        s.first_notification_p90_s = nearest_rank(notif, 0.9)
        s.first_notification_within_60s = _share(notif, 60, len(items))
        s.ack_p50_s = nearest_rank(acks, 0.5)
        s.ack_p90_s = nearest_rank(acks, 0.9)
        s.ack_within_60s = _share(acks, 60, len(items))
        s.ack_within_180s = _share(acks, 180, len(items))
        s.unacknowledged = len(items) - len(acks)
        # Tests are exercises, not alarms: they are left out of the false-alarm rate.
        judged = [r for r in items if r.outcome is not None and r.outcome != "test"]
        if judged:
            s.false_alarm_rate = sum(r.outcome == "false_alarm" for r in judged) / len(judged)
        out.append(s)
    return out


CSV_FIELDS = (
    "departement",
    "mois",
    "alertes",
    "par_type",
    "par_issue",
    "premiere_notification_p50_s",
    "premiere_notification_p90_s",
    "premiere_notification_sous_60s",
    "prise_en_charge_p50_s",
    "prise_en_charge_p90_s",
    "prise_en_charge_sous_60s",
    "prise_en_charge_sous_180s",
    "non_prises_en_charge",
    "taux_fausses_alertes",
)


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}".rstrip("0").rstrip(".")


def to_csv(stats: list[MonthStats]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";", lineterminator="\r\n")
    w.writerow(CSV_FIELDS)
    for s in stats:
        w.writerow(
            [
                s.departement,
                s.month,
                s.alerts,
                " ".join(f"{k}={v}" for k, v in sorted(s.by_kind.items())),
                " ".join(f"{k}={v}" for k, v in sorted(s.by_outcome.items())),
                _fmt(s.first_notification_p50_s),
                _fmt(s.first_notification_p90_s),
                _fmt(s.first_notification_within_60s),
                _fmt(s.ack_p50_s),
                _fmt(s.ack_p90_s),
                _fmt(s.ack_within_60s),
                _fmt(s.ack_within_180s),
                s.unacknowledged,
                _fmt(s.false_alarm_rate),
            ]
        )
    return buf.getvalue()
