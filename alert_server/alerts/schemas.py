"""What crosses the HTTP boundary for alerts (the API's response and request bodies), and the
French labels the dashboard shows for states, kinds, timeline events and outcomes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from vigie import outcomes as followup_outcomes
from vigie.vocabulary import AlertState as State

# The API spells the states out as a plain string enum (its OpenAPI schema stays as it was);
# tests/test_vocabulary.py checks it against vigie.vocabulary.AlertState.
AlertState = Literal["open", "acknowledged", "cancelled", "resolved"]
ALERT_STATES: tuple[str, ...] = tuple(State)

STATE_LABELS_FR: dict[str, str] = {
    State.OPEN: "Non prise en charge",
    State.ACKNOWLEDGED: "Prise en charge",
    State.CANCELLED: "Annulée",
    State.RESOLVED: "Clôturée",
}

KIND_LABELS_FR: dict[str, str] = {
    "sos": "SOS",
    "sos_silent": "SOS silencieux",
    "fall": "Chute détectée",
    "no_motion": "Absence de mouvement",
    "session_overdue": "Visite non terminée",
    "session_offline": "Liaison perdue pendant une visite",
}

# Outcomes picked when closing an alert: what happened, in the vocabulary the follow-up maps to
# ONVS facts and levels (vigie/outcomes.py, the single source). The keys are
# stored in ``alert.outcome``: never rename one.
OUTCOMES: dict[str, str] = {o.code: o.label_fr for o in followup_outcomes.OUTCOMES}


def _known_outcome(value: str) -> str:
    return followup_outcomes.get(value).code  # ValueError naming the valid codes otherwise


Outcome = Annotated[
    str,
    AfterValidator(_known_outcome),
    WithJsonSchema({"type": "string", "enum": list(OUTCOMES)}),
]

FLAG_LABELS_FR: dict[str, str] = {
    "duress": "contrainte",
    "no_position": "sans position",
    "unknown_device": "boîtier inconnu",
    "revoked_device": "boîtier révoqué",
    "unknown_kind": "type inconnu",
    "malformed": "message incomplet",
    "oversized": "message trop long",
    "clock_skew": "horloge du boîtier décalée",
    "delayed": "transmise en retard",
    "device_mismatch": "identifiant incohérent",
    "bad_device_id": "identifiant invalide",
    "no_alert_id": "sans identifiant",
    "unknown_fields": "champs inconnus",
    "ingest_error": "enregistrement minimal",
    "exhausted": "escalade épuisée",
    "ambiguous_border": "près d'une limite de département",
    "stale_position": "position ancienne",
    "no_directory": "annuaire des référents non chargé",
    "outside_france": "hors de France",
    "repeated_presses": "appuis répétés",
    "merged": "appui rattaché à l'alerte en cours",
    "pin_errors": "codes d'annulation erronés",
    "pin_locked": "annulation verrouillée (codes erronés répétés)",
}

EVENT_LABELS_FR: dict[str, str] = {
    "received": "Alerte reçue du boîtier",
    "repeat": "Alerte répétée par le boîtier",
    "acknowledged": "Prise en charge",
    "resolved": "Alerte clôturée",
    "cancelled": "Annulée par le travailleur (code d'annulation)",
    "duress": "CODE DE CONTRAINTE saisi : le travailleur est menacé",
    "pin_wrong": "Code d'annulation erroné",
    "pin_unverifiable": "Annulation impossible à vérifier (boîtier inconnu)",
    "cancel_after_duress": "Annulation refusée : alerte sous contrainte",
    "pin_lockout": "Annulation verrouillée : trop de codes erronés",
    "pin_locked_out": "Annulation refusée : boîtier verrouillé (codes erronés répétés)",
    "press_merged": "Nouvel appui du même boîtier (rattaché à cette alerte)",
    "located": "Position localisée",
    "position": "Nouvelle position du boîtier",
    "dispatched": "Escalade lancée vers les référents",
    "exhausted": "Escalade épuisée : personne n'a pris en charge",
}

# Timeline details: French names for the keys the stages write, in display order.
DETAIL_LABELS_FR: dict[str, str] = {
    "via": "via",
    "outcome": "issue",
    "commune": "commune",
    "departements": "départements",
    "source": "source",
    "acc_m": "précision",
    "age_s": "âge de la position",
    "lat": "latitude",
    "lon": "longitude",
    "flags": "signalements",
    "errors": "erreurs",
    "presses": "appuis",
    "member": "appui",
    "failures": "codes erronés",
    "until": "jusqu'à",
}


class Position(BaseModel):
    lat: float
    lon: float
    acc_m: float | None = Field(None, description="Rayon de précision à 68 %, en mètres")
    at: datetime | None = None
    src: str | None = Field(None, description="gps, wifi, cell, fixed, manual")


class AlertSummary(BaseModel):
    """One alert as the list shows it."""

    alert_id: str
    device_id: str
    kind: str
    state: AlertState
    duress: bool
    departement: str | None
    commune: str | None
    position: Position | None
    created_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    outcome: str | None
    flags: list[str]
    device_alert_id: str = Field(
        description="L'alert_id envoyé par le boîtier (l'identité d'une alerte est le couple "
        "boîtier, alert_id ; alert_id est la clé du serveur, égale à celui-ci quand il est libre)"
    )
    presses: int = Field(
        1, description="Appuis du même boîtier rattachés à cette alerte (une seule escalade)"
    )
    incident_of: str | None = Field(
        None, description="Pour un appui rattaché : l'alerte en cours à laquelle il appartient"
    )


class WorkerContact(BaseModel):
    """Only what a dispatcher needs to call the worker back: first name, role, number."""

    first_name: str
    role: str
    phone: str
    site_label: str | None = None


class TimelineEntry(BaseModel):
    at: datetime
    source: str = Field(description="alert_event, ou une autre source branchée sur la chronologie")
    type: str
    label: str
    actor: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class AlertDetail(AlertSummary):
    original_kind: str | None
    batt: int | None
    force: str | None
    note: str | None
    worker: WorkerContact | None
    timeline: list[TimelineEntry]


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Outcome
    note: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _note_for_other(self) -> ResolveRequest:
        if self.note is not None:
            self.note = self.note.strip() or None
        if self.outcome == "other" and not self.note:
            raise ValueError("une note est obligatoire pour l'issue « autre »")
        return self


class Problem(BaseModel):
    """An error the caller can act on (401, 404, 409, 429)."""

    detail: str


class AckConflict(BaseModel):
    """409 on acknowledge: somebody was first (or the alert is no longer open)."""

    detail: str
    state: AlertState
    acknowledged_by: str | None
    acknowledged_at: datetime | None


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105  (the OAuth2 token type, not a secret)
    expires_in: int
