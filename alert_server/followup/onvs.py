"""ONVS pre-fill: one alert becomes one ONVS "fait", as JSON and CSV with the form's field
names, for the worker (or the Ordre, with consent) to complete and submit.

Vigie never submits anything itself: the declaration is voluntary and the worker's.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from vigie import outcomes

PARIS = ZoneInfo("Europe/Paris")

# ONVS "hour" buckets, in local time.
_HOUR_BUCKETS = (
    (0, 7, "Nuit (00h-7h)"),
    (7, 12, "Matin (7h-12h)"),
    (12, 19, "Après-midi (12h-19h)"),
    (19, 24, "Soirée (19h-00h)"),
)
_JOBS = {"nurse": "Infirmier", "pharmacist": "Pharmacien"}
_KIND_CONTEXT = {
    "sos": "Bouton d'alerte (SOS)",
    "sos_silent": "Bouton d'alerte discret (SOS silencieux)",
    "fall": "Chute détectée par le dispositif",
    "no_motion": "Immobilité détectée par le dispositif",
    "session_overdue": "Visite non terminée à l'heure prévue",
    "session_offline": "Boîtier injoignable pendant une visite",
}
FIELDS = (
    "declarationType",
    "date",
    "hour",
    "town",
    "townCode",
    "postalCode",
    "job",
    "location",
    "pharmacyOnDuty",
    "factPersons",
    "factPersonsLevel",
    "factGoods",
    "factGoodsLevel",
    "thirdParty",
    "description",
    "vigieAlertId",
)


@dataclass(frozen=True)
class OnvsInput:
    alert_id: str
    kind: str
    created_at: datetime
    worker_role: str | None
    commune_nom: str | None
    commune_code: str | None
    postal_code: str | None
    site_label: str | None  # a registered site means an officine (fixed button)
    session_memo: str | None  # a timed visit means the patient's home
    outcome: str | None
    note: str | None
    acknowledged_by: str | None
    duress: bool = False


def hour_bucket(at: datetime) -> str:
    h = at.astimezone(PARIS).hour
    return next(label for lo, hi, label in _HOUR_BUCKETS if lo <= h < hi)


def prefill(a: OnvsInput) -> dict[str, Any]:
    """The ONVS libéral form, pre-filled from what Vigie knows; the rest is left empty."""
    local = a.created_at.astimezone(PARIS)
    outcome = outcomes.BY_CODE.get(a.outcome or "")
    facts = outcome.facts if outcome else ()
    if a.duress and not any(f.label == outcomes.BY_CODE["duress"].facts[0].label for f in facts):
        facts = (*facts, *outcomes.BY_CODE["duress"].facts)
    persons = [f for f in facts if not f.goods]
    goods = [f for f in facts if f.goods]
    if a.site_label is not None or a.worker_role == "pharmacist":
        location = "Officine"
    elif a.session_memo is not None:
        location = "Au domicile du patient"
    else:
        location = ""
    context = _KIND_CONTEXT.get(a.kind, a.kind)
    description = " — ".join(p for p in (f"Alerte Vigie : {context}", a.session_memo, a.note) if p)
    return {
        "declarationType": "liberal",
        "date": local.date().isoformat(),
        "hour": hour_bucket(a.created_at),
        "town": a.commune_nom or "",
        "townCode": a.commune_code or "",
        "postalCode": a.postal_code or "",
        "job": _JOBS.get(a.worker_role or "", ""),
        "location": location,
        # Night, Sunday or public-holiday duty cannot be told from the clock alone: asked.
        "pharmacyOnDuty": "",
        "factPersons": [f.label for f in persons],
        "factPersonsLevel": max((f.level for f in persons), default=None),
        "factGoods": [f.label for f in goods],
        "factGoodsLevel": max((f.level for f in goods), default=None),
        # A responder took the alert in charge: the forces of order intervened.
        "thirdParty": (
            ["Forces de l'ordre (police et gendarmerie nationales, police municipale)"]
            if a.acknowledged_by
            else []
        ),
        "description": description,
        "vigieAlertId": a.alert_id,
    }


def to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV (``;``-separated, as French spreadsheets expect), lists joined with `` | ``."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, delimiter=";", lineterminator="\r\n")
    w.writeheader()
    for row in rows:
        w.writerow(
            {
                k: " | ".join(v) if isinstance(v, list) else ("" if v is None else v)
                for k, v in row.items()
            }
        )
    return buf.getvalue()
