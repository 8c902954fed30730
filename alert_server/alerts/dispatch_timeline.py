"""Dispatch's side of an alert's timeline (every notification, delivery, reply and step),
in the dashboard's terms and in French."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlmodel import Session

from alert_server.alerts.models import Alert
from alert_server.alerts.schemas import TimelineEntry
from dispatch import Dispatcher

LABELS_FR = {
    "alert_sms": "SMS d'alerte",
    "alert_call": "Appel d'alerte",
    "ack_info_sms": "SMS « pris en charge par »",
    "stand_down_sms": "SMS d'annulation",
    "duress_sms": "SMS « sous contrainte »",
    "delivery": "Accusé de l'opérateur",
    "acknowledged": "Prise en charge (téléphone)",
    "chain_added": "Chaîne d'un autre département ajoutée",
    "closed": "Escalade close",
    "digits": "Touche pressée",
    "duress": "Contrainte transmise",
    "exhausted": "Chaîne épuisée sans prise en charge",
    "pulled_forward": "Étape suivante avancée (échec)",
    "started": "Escalade démarrée",
    "status_replayed": "Statut opérateur rejoué",
    "status_unmatched": "Statut opérateur sans envoi connu",
    "stood_down": "Escalade arrêtée (annulation)",
    "inbound_sms": "SMS reçu",
    # SMS acknowledgement codes: wrong ones, and the number blocked after too many.
    "wrong_code": "Code de prise en charge erroné reçu par SMS",
    "code_locked": "Numéro bloqué pour les réponses SMS (trop de codes erronés)",
    "code_refused": "Code refusé : numéro bloqué pour les réponses SMS",
}


def source(dispatcher: Dispatcher) -> Callable[[Session, Alert], list[TimelineEntry]]:
    def entries(session: Session, alert: Alert) -> list[TimelineEntry]:
        out = []
        for e in dispatcher.timeline(session, alert_id=alert.alert_id):
            detail: dict[str, Any] = {
                k: v
                for k, v in {
                    "to": e.to_phone,
                    "channel": e.channel,
                    "status": e.status,
                    "sid": e.provider_sid,
                    "error": e.error,
                    "detail": e.detail,
                }.items()
                if v
            }
            out.append(
                TimelineEntry(
                    at=e.at,
                    source="dispatch",
                    type=e.what,
                    label=LABELS_FR.get(e.what, e.what),
                    actor=e.to_name,
                    detail=detail,
                )
            )
        return out

    return entries
