"""What the referents read and hear: short French texts (English with ``lang="en"``).

SMS texts stay in the GSM-7 alphabet so one segment holds 160 characters instead of 70:
é, è, à, ù, É are GSM-7; ê, ç, œ, ’, « » are not and are transliterated (``to_gsm7``).
Pure functions: the time used for ages ("il y a 2 min") is a parameter.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from dispatch.schemas import AlertBrief

Lang = Literal["fr", "en"]
PARIS = ZoneInfo("Europe/Paris")

# GSM 03.38 basic character set and its extension table (each extension char costs 2 septets).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")

# Non-GSM characters common in French text, and what they become.
_TRANSLIT = {
    "â": "a", "ê": "e", "î": "i", "ô": "o", "û": "u", "ë": "e", "ï": "i", "ÿ": "y",
    "ç": "c", "œ": "oe", "á": "a", "í": "i", "ó": "o", "ú": "u", "ã": "a", "õ": "o",
    "À": "A", "Â": "A", "È": "E", "Ê": "E", "Ë": "E", "Î": "I", "Ï": "I", "Ô": "O",
    "Û": "U", "Ù": "U", "Œ": "OE", "Ÿ": "Y", "Á": "A", "Í": "I", "Ó": "O", "Ú": "U",
    "’": "'", "‘": "'", "‚": ",", "“": '"', "”": '"', "„": '"', "«": '"', "»": '"',
    "–": "-", "—": "-", "‐": "-", "‑": "-", "…": "...", "\u00a0": " ", "\u202f": " ",
    "\u2009": " ", "±": "+/-", "°": " deg", "·": ".", "•": "-", "\t": " ",
}  # fmt: skip


def to_gsm7(text: str) -> str:
    """Transliterate ``text`` into GSM-7 where a close equivalent exists.

    Characters with no close equivalent lose their accents (NFKD); anything still outside the
    alphabet is kept, and the message is then sent as UCS-2 rather than garbled.
    """
    # French guillemets carry inner spaces ("« ici »"); plain quotes do not.
    for space in (" ", "\u00a0", "\u202f"):
        text = text.replace("«" + space, "«").replace(space + "»", "»")
    out: list[str] = []
    for ch in text:
        if ch in GSM7_BASIC or ch in GSM7_EXTENDED:
            out.append(ch)
        elif ch in _TRANSLIT:
            out.append(_TRANSLIT[ch])
        else:
            stripped = "".join(
                c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c)
            )
            out.append(stripped if stripped and all(c in GSM7_BASIC for c in stripped) else ch)
    return "".join(out)


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text)


def sms_segments(text: str) -> int:
    """Number of SMS segments: GSM-7 160 / 153 septets, otherwise UCS-2 70 / 67 code units."""
    if is_gsm7(text):
        septets = sum(2 if ch in GSM7_EXTENDED else 1 for ch in text)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)


_KINDS: dict[str, dict[Lang, str]] = {
    "sos": {"fr": "SOS", "en": "SOS"},
    "sos_silent": {"fr": "SOS DISCRET", "en": "SILENT SOS"},
    "fall": {"fr": "CHUTE", "en": "FALL"},
    "no_motion": {"fr": "IMMOBILITÉ", "en": "NO MOTION"},
    "session_overdue": {"fr": "VISITE DÉPASSÉE", "en": "VISIT OVERDUE"},
    "session_offline": {"fr": "LIAISON PERDUE EN VISITE", "en": "LINK LOST DURING VISIT"},
    "duress": {"fr": "CONTRAINTE", "en": "DURESS"},
}
_KINDS_SPOKEN: dict[str, dict[Lang, str]] = {
    "sos": {"fr": "appel au secours", "en": "call for help"},
    "sos_silent": {"fr": "appel au secours discret", "en": "silent call for help"},
    "fall": {"fr": "chute détectée", "en": "fall detected"},
    "no_motion": {"fr": "immobilité détectée", "en": "no motion detected"},
    "session_overdue": {"fr": "visite dépassée sans nouvelles", "en": "visit overdue"},
    "session_offline": {
        "fr": "boîtier injoignable pendant une visite",
        "en": "device unreachable during a visit",
    },
}
_ROLES: dict[str, dict[Lang, str]] = {
    "nurse": {"fr": "Infirmier(e)", "en": "Nurse"},
    "pharmacist": {"fr": "Pharmacien(ne)", "en": "Pharmacist"},
    "other": {"fr": "Professionnel(le) de santé", "en": "Health professional"},
}
_ROLES_SPOKEN: dict[str, dict[Lang, str]] = {
    "nurse": {"fr": "infirmier ou infirmière", "en": "nurse"},
    "pharmacist": {"fr": "pharmacien ou pharmacienne", "en": "pharmacist"},
    "other": {"fr": "professionnel de santé", "en": "health professional"},
}
_SOURCES: dict[str, dict[Lang, str]] = {
    "gps": {"fr": "GPS", "en": "GPS"},
    "wifi": {"fr": "wifi", "en": "wifi"},
    "cell": {"fr": "antenne", "en": "cell"},
    "fixed": {"fr": "poste fixe", "en": "fixed"},
    "manual": {"fr": "saisie", "en": "manual"},
    "site": {"fr": "site déclaré", "en": "registered site"},
    "last_known": {"fr": "dernière position connue", "en": "last known position"},
}


def kind_label(kind: str, lang: Lang = "fr") -> str:
    """SOS, SOS DISCRET, CHUTE…; an unknown kind is escalated as SOS and named."""
    if kind in _KINDS:
        return _KINDS[kind][lang]
    return f"SOS ({kind})"


def who(brief: AlertBrief, lang: Lang = "fr") -> str:
    role = _ROLES.get(brief.worker_role or "", {}).get(lang)
    parts = [p for p in (role, brief.worker_first_name) if p]
    if parts:
        return " ".join(parts)
    return "Travailleur isolé" if lang == "fr" else "Lone worker"


def map_link(lat: float, lon: float) -> str:
    la, lo = f"{lat:.5f}", f"{lon:.5f}"
    return f"https://www.openstreetmap.org/?mlat={la}&mlon={lo}#map=17/{la}/{lo}"


def _age(position_at: datetime | None, now: datetime, lang: Lang) -> str | None:
    if position_at is None:
        return None
    seconds = max(0, int((now - position_at).total_seconds()))
    if seconds < 60:
        return f"il y a {seconds} s" if lang == "fr" else f"{seconds} s ago"
    minutes = seconds // 60
    if minutes < 120:
        return f"il y a {minutes} min" if lang == "fr" else f"{minutes} min ago"
    hours = minutes // 60
    return f"il y a {hours} h" if lang == "fr" else f"{hours} h ago"


def where(brief: AlertBrief, now: datetime, lang: Lang = "fr") -> str:
    place = ", ".join(p for p in (brief.commune, brief.place_label) if p)
    bits: list[str] = []
    if place:
        bits.append(place)
    if brief.lat is not None and brief.lon is not None:
        quality = []
        source = _SOURCES.get(brief.position_source or "", {}).get(lang)
        if source:
            quality.append(source)
        if brief.acc_m is not None:
            quality.append(
                f"à {round(brief.acc_m)} m près"
                if lang == "fr"
                else f"within {round(brief.acc_m)} m"
            )
        age = _age(brief.position_at, now, lang)
        if age:
            quality.append(age)
        link = map_link(brief.lat, brief.lon)
        bits.append(f"{link} ({', '.join(quality)})" if quality else link)
    if not bits:
        return "position inconnue" if lang == "fr" else "position unknown"
    return " ".join(bits)


def ack_prompt(code: str, lang: Lang = "fr") -> str:
    """How to take the alert: the code to reply with, or, when this number got no code (which
    never holds the SMS back), the link or the call."""
    if not code:
        if lang == "en":
            return "Take charge with the link or by answering the call (key 1)."
        return "Prenez en charge par le lien ou en répondant à l'appel (touche 1)."
    if lang == "en":
        return f"Reply OK {code} to take charge."
    return f"Répondez OK {code} pour prendre en charge."


def _label(ctx: MessageContext) -> str:
    """SOS Infirmier(e) Camille (482): how the follow-up texts name the alert."""
    b, lang = ctx.brief, ctx.lang
    label = f"{kind_label(b.kind, lang)} {who(b, lang)}"
    return f"{label} ({ctx.code})" if ctx.code else label


def dashboard_link(public_url: str, alert_id: str) -> str:
    return f"{public_url.rstrip('/')}/alerts/{alert_id}"


def _local_hm(at: datetime) -> str:
    return at.astimezone(PARIS).strftime("%H:%M")


@dataclass(frozen=True, slots=True)
class MessageContext:
    brief: AlertBrief
    code: str
    public_url: str
    duress: bool = False
    lang: Lang = "fr"


def alert_sms(ctx: MessageContext, now: datetime) -> str:
    """The escalation SMS: what, who, call-back, where, ack code, dashboard link."""
    b, lang = ctx.brief, ctx.lang
    what = kind_label(b.kind, lang)
    if ctx.duress:
        what = f"{kind_label('duress', lang)} - {what}"
    head = f"Vigie {what}: {who(b, lang)}"
    if b.worker_phone:
        # A discreet alert means the aggressor may be there: a loud call-back could hurt.
        if b.kind == "sos_silent":
            head += (
                f", tel {b.worker_phone} (prudence si rappel)"
                if lang == "fr"
                else f", tel {b.worker_phone} (careful if calling back)"
            )
        else:
            head += (
                f", rappel {b.worker_phone}" if lang == "fr" else f", call back {b.worker_phone}"
            )
    if ctx.duress:
        head += (
            ". A annulé sous la contrainte, en danger"
            if lang == "fr"
            else ". Cancelled under duress, in danger"
        )
    text = (
        f"{head}. {where(b, now, lang)}. {ack_prompt(ctx.code, lang)} "
        f"{dashboard_link(ctx.public_url, b.alert_id)}"
    )
    return to_gsm7(text)


def duress_sms(ctx: MessageContext, now: datetime) -> str:
    """Told to everyone already notified when the worker cancels with the duress PIN."""
    b, lang = ctx.brief, ctx.lang
    if lang == "en":
        text = (
            f"Vigie DURESS: {who(b, lang)} cancelled the {kind_label(b.kind, lang)} alert under "
            f"duress. Still in danger, the alert goes on. {where(b, now, lang)}. "
            f"{ack_prompt(ctx.code, lang)} {dashboard_link(ctx.public_url, b.alert_id)}"
        )
    else:
        text = (
            f"Vigie CONTRAINTE: {who(b, lang)} a annulé l'alerte {kind_label(b.kind, lang)} sous "
            f"la contrainte. Toujours en danger, l'alerte continue. {where(b, now, lang)}. "
            f"{ack_prompt(ctx.code, lang)} {dashboard_link(ctx.public_url, b.alert_id)}"
        )
    return to_gsm7(text)


def ack_info_sms(
    ctx: MessageContext, *, by_name: str, by_phone: str | None, at: datetime, to_acker: bool
) -> str:
    b, lang = ctx.brief, ctx.lang
    label = _label(ctx)
    if to_acker:
        text = (
            f"Vigie: vous avez pris en charge l'alerte {label} à {_local_hm(at)}. "
            f"{dashboard_link(ctx.public_url, b.alert_id)}"
            if lang == "fr"
            else f"Vigie: you took charge of alert {label} at {_local_hm(at)}. "
            f"{dashboard_link(ctx.public_url, b.alert_id)}"
        )
    else:
        by = f"{by_name} ({by_phone})" if by_phone else by_name
        text = (
            f"Vigie: alerte {label} prise en charge par {by} à {_local_hm(at)}. "
            "Aucune action requise de votre part."
            if lang == "fr"
            else f"Vigie: alert {label} taken in charge by {by} at {_local_hm(at)}. "
            "No action needed from you."
        )
    return to_gsm7(text)


def stand_down_sms(ctx: MessageContext, *, at: datetime) -> str:
    lang = ctx.lang
    label = _label(ctx)
    text = (
        f"Vigie: alerte {label} annulée par la personne à {_local_hm(at)} (code d'annulation). "
        "Fin de l'alerte."
        if lang == "fr"
        else f"Vigie: alert {label} cancelled by the worker at {_local_hm(at)} (cancel code). "
        "Alert over."
    )
    return to_gsm7(text)


def already_taken_sms(ctx: MessageContext, *, by_name: str | None, status: str) -> str:
    lang = ctx.lang
    label = _label(ctx)
    if lang == "en":
        text = (
            f"Vigie: alert {label} already taken in charge by {by_name}."
            if status == "acknowledged"
            else f"Vigie: alert {label} is over ({status})."
        )
    else:
        text = (
            f"Vigie: alerte {label} déjà prise en charge par {by_name}."
            if status == "acknowledged"
            else f"Vigie: alerte {label} terminée ({_STATUS_FR.get(status, status)})."
        )
    return to_gsm7(text)


_STATUS_FR = {"stood_down": "annulée", "closed": "clôturée", "acknowledged": "prise en charge"}


def unknown_code_sms(lang: Lang = "fr") -> str:
    return to_gsm7(
        "Vigie: code non reconnu. Répondez OK suivi du code reçu dans l'alerte."
        if lang == "fr"
        else "Vigie: code not recognised. Reply OK followed by the code of the alert."
    )


def code_locked_sms(minutes: int, lang: Lang = "fr") -> str:
    """The answer to a code reply from a number blocked for too many wrong codes."""
    return to_gsm7(
        f"Vigie: trop de codes erronés, ce numéro est bloqué {minutes} min pour les réponses "
        "par SMS. Prenez en charge par l'appel (touche 1) ou la console."
        if lang == "fr"
        else f"Vigie: too many wrong codes, this number is blocked for {minutes} min for text "
        "replies. Take charge through the call (key 1) or the console."
    )


# --- voice -------------------------------------------------------------------------------


def voice_text(ctx: MessageContext) -> str:
    """What the call says (twice, inside the Gather), before asking to press 1."""
    b, lang = ctx.brief, ctx.lang
    role = _ROLES_SPOKEN.get(b.worker_role or "", {}).get(lang)
    person = " ".join(p for p in (role, b.worker_first_name) if p) or (
        "un travailleur isolé" if lang == "fr" else "a lone worker"
    )
    what = _KINDS_SPOKEN.get(b.kind, _KINDS_SPOKEN["sos"])[lang]
    place = ", ".join(p for p in (b.commune, b.place_label) if p)
    if lang == "en":
        parts = [f"Vigie alert. {what.capitalize()} from {person}."]
        if ctx.duress:
            parts.append("The worker cancelled under duress and is in danger.")
        if place:
            parts.append(f"Location: {place}.")
        parts.append("Details by text message. Press 1 to take charge of this alert.")
    else:
        parts = [f"Alerte Vigie. {what.capitalize()} de {person}."]
        if ctx.duress:
            parts.append("La personne a annulé sous la contrainte : elle est en danger.")
        if place:
            parts.append(f"Lieu : {place}.")
        parts.append("Détails par SMS. Appuyez sur 1 pour prendre en charge cette alerte.")
    return " ".join(parts)


def voice_thanks(lang: Lang = "fr") -> str:
    return (
        "Merci. Vous avez pris en charge l'alerte. Les autres contacts sont prévenus. Au revoir."
        if lang == "fr"
        else "Thank you. You have taken charge of the alert. The other contacts are told. Goodbye."
    )


def voice_already(by_name: str | None, status: str, lang: Lang = "fr") -> str:
    if status == "acknowledged":
        return (
            f"Cette alerte a déjà été prise en charge par {by_name}. Merci. Au revoir."
            if lang == "fr"
            else f"This alert was already taken in charge by {by_name}. Thank you. Goodbye."
        )
    if status == "stood_down":
        return (
            "Cette alerte a été annulée par la personne. Aucune action requise. Au revoir."
            if lang == "fr"
            else "This alert was cancelled by the worker. No action needed. Goodbye."
        )
    return (
        "Cette alerte est terminée. Au revoir." if lang == "fr" else "This alert is over. Goodbye."
    )


def voice_no_input(lang: Lang = "fr") -> str:
    return (
        "Aucune touche reçue. L'alerte reste en cours. Au revoir."
        if lang == "fr"
        else "No key received. The alert is still open. Goodbye."
    )
