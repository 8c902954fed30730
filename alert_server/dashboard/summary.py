"""An alert's story in plain French: the escalation summary at the top of the page, and a
timeline of what happened.

The timeline sources (``alerts.api.timeline``) speak the engine's language: notification rows
with their status (``planned``, ``sent``…), provider receipts, key/value details. A gendarme
reading the page at 3 a.m. needs sentences: who was told, how, when, whether it arrived,
what comes next. Planned rows are the future: they go to the summary ("appel dans 12 s"),
never into the list of what happened; cancelled rows never happened at all. A console
acknowledgement is written by both the alert and the escalation: it is shown once. A
delivery receipt says the message reached the phone, which is not anybody's acknowledgement.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from alert_server.alerts.schemas import (
    EVENT_LABELS_FR,
    FLAG_LABELS_FR,
    OUTCOMES,
    TimelineEntry,
)
from dispatch.models import CANCELLED, CLAIMED, PLANNED
from vigie.timeutil import as_utc
from vigie.vocabulary import AlertEventType, Channel

PARIS = ZoneInfo("Europe/Paris")

# Dispatch's notification rows: what was sent and by which means.
NOTIFICATIONS = {
    "alert_sms": ("SMS d'alerte", Channel.SMS),
    "alert_call": ("Appel d'alerte", Channel.VOICE),
    "ack_info_sms": ("SMS « pris en charge »", Channel.SMS),
    "stand_down_sms": ("SMS d'annulation", Channel.SMS),
    "duress_sms": ("SMS « sous contrainte »", Channel.SMS),
}
NOT_YET = {PLANNED, CLAIMED}
# Never sent (the escalation stopped first); "canceled" is the provider's spelling.
NEVER = {CANCELLED, "canceled"}
SMS_STATUS = {
    "sending": "en cours d'envoi",
    "sent": "envoyé",
    "queued": "envoyé",
    "accepted": "envoyé",
    "delivered": "délivré",
    "read": "lu",
    "undelivered": "non délivré",
    "failed": "échec",
}
CALL_STATUS = {
    "sending": "numérotation",
    "sent": "lancé",
    "queued": "lancé",
    "initiated": "lancé",
    "ringing": "sonne",
    "in-progress": "décroché",
    "answered": "décroché",
    "completed": "terminé",
    "busy": "occupé",
    "no-answer": "sans réponse",
    "failed": "échec",
}
VIA_FR = {
    "dashboard": "depuis la console",
    "console": "depuis la console",
    "api": "par l'API",
    Channel.SMS: "par SMS",
    Channel.VOICE: "par téléphone",
}
# Alert event details worth a sentence, in French, in this order.
DETAIL_FR = {
    "commune": "commune",
    "departements": "départements",
    "source": "source",
    "acc_m": "précision",
    "presses": "appuis",
    "failures": "codes erronés",
    "outcome": "issue",
    "flags": "signalements",
}
SOURCES_FR = {"gps": "GPS", "wifi": "Wi-Fi", "cell": "antenne", "fixed": "adresse fixe"}


# Alert events whose actor is the device itself (not worth naming on every line).
DEVICE_EVENTS = {
    AlertEventType.RECEIVED,
    AlertEventType.REPEAT,
    AlertEventType.LOCATED,
    AlertEventType.POSITION,
}
WARN_EVENTS = {AlertEventType.EXHAUSTED, AlertEventType.PIN_WRONG}


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the plain timeline."""

    at: datetime
    text: str
    who: str | None = None
    tone: str = "info"  # info, ok, warn, danger


def hhmm(value: datetime) -> str:
    return as_utc(value).astimezone(PARIS).strftime("%H:%M")


def hhmmss(value: datetime) -> str:
    return as_utc(value).astimezone(PARIS).strftime("%H:%M:%S")


def in_words(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d}"


_MASCULINE = (
    "Référent",
    "Commissariat",
    "Centre",
    "Commandant",
    "Chef",
    "Groupement",
    "Service",
    "CIC",
    "CORG",
    "Bureau",
    "Poste",
    "Officier",
)
_FEMININE = ("Brigade", "Compagnie", "Permanence", "Gendarmerie", "Police", "Direction", "Salle")


def to_whom(name: str) -> str:
    """ "au Référent santé DDSP 13", "à la Brigade de Cassis", "à Jeanne Martin"."""
    first = name.split(" ", 1)[0]
    if first in _MASCULINE:
        return "au " + name
    if first in _FEMININE:
        return "à la " + name
    return "à " + name


def _status_word(kind: str, status: str | None) -> str:
    channel = NOTIFICATIONS.get(kind, ("", Channel.SMS))[1]
    table = CALL_STATUS if channel == Channel.VOICE else SMS_STATUS
    return table.get(status or "", "envoyé")


def _tone(status: str | None) -> str:
    if status in ("delivered", "read", "completed", "in-progress", "answered"):
        return "ok"
    if status in ("failed", "undelivered", "busy", "no-answer"):
        return "warn"
    return "info"


def _detail_sentence(detail: dict[str, Any]) -> str:
    parts = []
    for key, label in DETAIL_FR.items():
        value = detail.get(key)
        if value in (None, "", [], {}):
            continue
        if key == "acc_m" and isinstance(value, int | float):
            value = f"± {round(value)} m" if value < 1000 else f"± {value / 1000:.1f} km"
        elif key == "source":
            value = SOURCES_FR.get(str(value), str(value))
        elif key == "outcome":
            value = OUTCOMES.get(str(value), str(value))
        elif key == "flags" and isinstance(value, list):
            value = ", ".join(FLAG_LABELS_FR.get(str(f), str(f)) for f in value)
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        parts.append(f"{label} : {value}")
    return " ; ".join(parts)


def _chains_sentence(chains: Any) -> str:
    if not isinstance(chains, list) or not chains:
        return "aucun référent trouvé : repli national"
    out = []
    for chain in chains:
        if not isinstance(chain, dict):
            continue
        force = {"PN": "police", "GN": "gendarmerie"}.get(str(chain.get("force") or ""), "")
        names = ", ".join(str(n) for n in chain.get("contacts") or [])
        head = " ".join(p for p in (f"département {chain.get('departement')}", force) if p)
        out.append(f"{head} ({names})" if names else head)
    return " ; ".join(out)


def _console_ack_times(entries: Iterable[TimelineEntry]) -> list[datetime]:
    return [
        as_utc(e.at)
        for e in entries
        if e.source == "alert_event" and e.type == AlertEventType.ACKNOWLEDGED
    ]


def plain_timeline(entries: list[TimelineEntry]) -> list[Line]:
    """What happened, oldest first, as sentences."""
    lines: list[Line] = []
    acks = _console_ack_times(entries)
    for e in entries:
        line = _line(e, acks)
        if line is not None:
            lines.append(line)
    return lines


def _line(e: TimelineEntry, console_acks: list[datetime]) -> Line | None:
    d = e.detail or {}
    if e.source != "alert_event":
        return _dispatch_line(e, console_acks)
    label = EVENT_LABELS_FR.get(e.type, "Événement")
    if e.type == AlertEventType.ACKNOWLEDGED:
        via = VIA_FR.get(str(d.get("via") or ""), "")
        return Line(e.at, " ".join(p for p in ("Prise en charge", via) if p), e.actor, "ok")
    if e.type == AlertEventType.DISPATCHED:
        return Line(e.at, f"Escalade lancée : {_chains_sentence(d.get('chains'))}", None)
    if e.type == AlertEventType.NOTE:
        return Line(e.at, f"Note : {d.get('text', '')}", e.actor)
    if e.type == AlertEventType.POLICE_REF:
        return Line(e.at, f"N° d'intervention des forces de l'ordre : {d.get('ref', '')}", e.actor)
    if e.type == AlertEventType.DURESS:
        return Line(e.at, label, e.actor, "danger")
    text = label
    sentence = _detail_sentence(d)
    if sentence:
        text += f" — {sentence}"
    actor = e.actor if e.type not in DEVICE_EVENTS else None
    return Line(e.at, text, actor, "warn" if e.type in WARN_EVENTS else "info")


def _dispatch_line(e: TimelineEntry, console_acks: list[datetime]) -> Line | None:
    d = e.detail or {}
    status = d.get("status")
    to = e.actor or d.get("to")
    if e.type in NOTIFICATIONS:
        if status in NOT_YET or status in NEVER:
            return None  # the future (summary) or what never happened
        what, channel = NOTIFICATIONS[e.type]
        target = f" {to_whom(to)}" if to else ""
        if channel == Channel.VOICE:
            return Line(
                e.at, f"Appel{target} : {_status_word(e.type, status)}", None, _tone(status)
            )
        return Line(e.at, f"{what}{target} : {_status_word(e.type, status)}", None, _tone(status))
    if e.type == "delivery":
        by_voice = d.get("channel") == Channel.VOICE
        word = CALL_STATUS.get(status or "") if by_voice else None
        if word is None:
            word = SMS_STATUS.get(status or "", status or "statut inconnu")
        means = "Appel" if by_voice else "SMS"
        target = f" {to_whom(to)}" if to else ""
        return Line(e.at, f"Réseau de l'opérateur : {means}{target} {word}", None, _tone(status))
    if e.type == "acknowledged":
        via = str(d.get("channel") or "")
        if via in ("dashboard", "console", "api") or any(
            abs((as_utc(e.at) - t).total_seconds()) < 5 for t in console_acks
        ):
            return None  # the console's own acknowledgement, already shown once
        return Line(e.at, f"Prise en charge {VIA_FR.get(via, '')}".strip(), e.actor, "ok")
    if e.type in ("status_unmatched", "status_replayed"):
        return None
    if e.type == "digits":
        return Line(e.at, f"Touche « {d.get('detail', '')} » pressée pendant l'appel", to)
    if e.type == "inbound_sms":
        return Line(e.at, f"SMS reçu de {d.get('to', 'un numéro inconnu')}", None)
    label = {
        "started": "Escalade démarrée",
        "chain_added": "Chaîne d'un autre département ajoutée",
        "closed": "Escalade close",
        "duress": "Contrainte transmise aux référents",
        "exhausted": "Chaîne épuisée : personne n'a pris en charge",
        "pulled_forward": "Étape suivante avancée après un échec",
        "stood_down": "Escalade arrêtée (annulation)",
        "wrong_code": "Code de prise en charge erroné reçu par SMS",
        "code_locked": "Numéro bloqué pour les réponses SMS",
        "code_refused": "Code refusé : numéro bloqué pour les réponses SMS",
    }.get(e.type, "Événement de l'escalade")
    text = label
    if isinstance(d.get("detail"), str) and e.type in ("started", "chain_added", "stood_down"):
        text += f" ({d['detail']})"
    tone = "warn" if e.type in ("exhausted", "wrong_code", "code_locked") else "info"
    return Line(e.at, text, None, "danger" if e.type == "duress" else tone)


def escalation_summary(entries: list[TimelineEntry], now: datetime) -> list[str]:
    """One or two French sentences: who was told how and when, what it gave, what is next
    ("SMS au Référent santé DDSP 13 à 08:31, délivré ; appel dans 12 s ; puis CIC
    Marseille")."""
    sent: list[str] = []
    upcoming: list[tuple[datetime, str, str]] = []
    ack: str | None = None
    exhausted: datetime | None = None
    last_to = ""
    for e in entries:
        d = e.detail or {}
        status = d.get("status")
        if e.source == "alert_event" and e.type == AlertEventType.ACKNOWLEDGED:
            via = VIA_FR.get(str(d.get("via") or ""), "")
            ack = f"Prise en charge par {e.actor or 'un référent'} à {hhmm(e.at)} {via}".strip()
        if e.source == "alert_event" and e.type == AlertEventType.EXHAUSTED:
            exhausted = as_utc(e.at)
        if e.source == "alert_event" or e.type not in ("alert_sms", "alert_call"):
            continue
        means = "SMS" if e.type == "alert_sms" else "appel"
        to = to_whom(e.actor) if e.actor else "à un référent"
        if status in NOT_YET:
            upcoming.append((as_utc(e.at), means, to))
        elif status not in NEVER:
            sent.append(f"{means} {to} à {hhmm(e.at)}, {_status_word(e.type, status)}")
            last_to = to
    out: list[str] = []
    if ack:
        out.append(ack + ".")
    if sent or upcoming:
        parts = sent[-3:]
        if upcoming and not ack:
            upcoming.sort()
            at, means, to = upcoming[0]
            wait = at - now
            whom = "" if to == last_to else f" {to}"
            parts.append(
                f"{means}{whom} dans {in_words(wait)}"
                if wait.total_seconds() > 0
                else f"{means}{whom} maintenant"
            )
            later = []
            for _, _, name in upcoming[1:]:
                bare = name.split(" ", 1)[1] if name.startswith(("au ", "à ")) else name
                bare = bare[3:] if bare.startswith("la ") else bare
                if bare not in later and name != to:
                    later.append(bare)
            if later:
                parts.append("puis " + ", ".join(later[:3]))
        sentence = " ; ".join(parts)
        out.append(sentence[0].upper() + sentence[1:] + ".")
    if exhausted is not None and not ack:
        out.append(f"Chaîne épuisée à {hhmm(exhausted)} : personne n'a pris en charge.")
    if not out:
        out.append("Aucun référent n'a encore été prévenu par Vigie.")
    return out
