"""A server never runs on a configuration that would fail silently (operations.md 1.1,
"Safety of the configuration").

Forgetting ``VIGIE_TWILIO_FROM`` used to switch a production server to simulated telephony
without a word (no SMS, no call, /healthz 200), and the placeholder secret key let anyone who
read the source mint an admin token. Now the choice of telephony is explicit
(``VIGIE_TELEPHONY``), and a server refuses to start on what is missing or unsafe:
``vigie server`` prints every problem on one French line and exits 2; ``create_app`` raises
``UnsafeConfiguration`` so that no other way of building a server gets around it.
"""

from __future__ import annotations

import re

from alert_server.settings import Settings
from vigie.brokers.files import reserved_for_servers
from vigie.topics import SERVER_USERNAME

TELEPHONY_CHOICES = ("twilio", "simulated")
# 32 characters is 128 bits as hex: below that it is a password someone typed, not a key.
MIN_SECRET_CHARS = 32
# Fewer distinct characters than this is a pattern ("aaaa…", "0101…"), not a random key.
MIN_SECRET_DISTINCT_CHARS = 8
# Obvious placeholders, compared lower-case with everything but letters and digits removed:
# the old default "change-me-in-production", "changeme", "CHANGE_THIS", "<your-secret>"…
_PLACEHOLDER_WORDS = (
    "changeme",
    "changethis",
    "replaceme",
    "placeholder",
    "yoursecret",
    "example",
    "exemple",
    "insecure",
)
_PLACEHOLDER_VALUES = ("secret", "password", "motdepasse", "default", "test", "vigie")
_HOW = (
    "une valeur aléatoire d'au moins 32 caractères, la même sur chaque serveur : "
    "openssl rand -hex 32"
)


class UnsafeConfiguration(ValueError):
    """The settings would run a server that fails silently; ``problems`` names each cause."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("Configuration dangereuse : " + " ; ".join(problems))


def _secret_problem(secret: str) -> str | None:
    if not secret.strip():
        return f"VIGIE_SECRET_KEY manquant ({_HOW})"
    normalized = re.sub(r"[^a-z0-9]", "", secret.lower())
    if normalized in _PLACEHOLDER_VALUES or any(w in normalized for w in _PLACEHOLDER_WORDS):
        return (
            "VIGIE_SECRET_KEY est une valeur d'exemple : quiconque la connaît peut se créer "
            f"un jeton d'administrateur ({_HOW})"
        )
    if len(secret) < MIN_SECRET_CHARS:
        return (
            f"VIGIE_SECRET_KEY trop court ({len(secret)} caractères, {MIN_SECRET_CHARS} au "
            f"moins : {_HOW})"
        )
    if len(set(secret)) < MIN_SECRET_DISTINCT_CHARS:
        return f"VIGIE_SECRET_KEY n'est pas aléatoire ({_HOW})"
    return None


def problems(settings: Settings) -> list[str]:
    """Every reason not to start, one French phrase each naming its variable; empty if none."""
    found: list[str] = []
    telephony = settings.telephony
    if telephony not in TELEPHONY_CHOICES:
        found.append(
            f"VIGIE_TELEPHONY={telephony!r} invalide (valeurs possibles : "
            + ", ".join(TELEPHONY_CHOICES)
            + ")"
        )
    elif telephony == "twilio":
        token = settings.twilio_auth_token
        values = {
            "VIGIE_TWILIO_ACCOUNT_SID": settings.twilio_account_sid,
            "VIGIE_TWILIO_AUTH_TOKEN": token.get_secret_value() if token is not None else None,
            "VIGIE_TWILIO_FROM": settings.twilio_from,
        }
        missing = [name for name, value in values.items() if not (value or "").strip()]
        if missing:
            names = " et ".join([", ".join(missing[:-1]), missing[-1]] if missing[:-1] else missing)
            found.append(
                f"{names} {'manquants' if len(missing) > 1 else 'manquant'} alors que "
                "VIGIE_TELEPHONY=twilio"
            )
    secret = _secret_problem(settings.secret_key.get_secret_value())
    if secret is not None:
        found.append(secret)
    if not reserved_for_servers(settings.mqtt_client_id):
        found.append(
            f"VIGIE_MQTT_CLIENT_ID={settings.mqtt_client_id!r} hors des noms réservés aux "
            f"serveurs ({SERVER_USERNAME} ou {SERVER_USERNAME}-…) : un boîtier de ce nom "
            "pourrait prendre la session MQTT du serveur"
        )
    if settings.ingest not in ("mqtt", "amqp"):
        found.append(f"VIGIE_INGEST={settings.ingest!r} invalide (valeurs possibles : mqtt, amqp)")
    elif settings.ingest == "amqp" and not settings.amqp_url.strip():
        found.append("VIGIE_AMQP_URL manquant alors que VIGIE_INGEST=amqp")
    found.extend(operations_problems(settings))
    found.extend(dispatch_problems(settings))
    return found


# SMS acknowledgement codes have 3 digits: a number may get at most this many wrong codes an
# hour before it is refused (the default, 5 in 15 minutes). A setting may tighten it, never
# loosen it: a looser one turns guessing a code into a matter of hours.
MAX_WRONG_SMS_CODES_PER_HOUR = 20


def dispatch_problems(settings: Settings) -> list[str]:
    """Dispatch settings that each pass their own bounds but together would be unsafe."""
    found: list[str] = []
    per_hour = settings.sms_ack_max_wrong * 3600 / settings.sms_ack_lock_window_s
    if per_hour > MAX_WRONG_SMS_CODES_PER_HOUR + 1e-9:
        found.append(
            f"VIGIE_SMS_ACK_MAX_WRONG={settings.sms_ack_max_wrong} en "
            f"VIGIE_SMS_ACK_LOCK_WINDOW_S={settings.sms_ack_lock_window_s:g} laisse essayer "
            f"{per_hour:.0f} codes SMS faux par heure et par numéro : au plus "
            f"{MAX_WRONG_SMS_CODES_PER_HOUR} (les codes ont 3 chiffres ; par ex. 5 en 900 s)"
        )
    return found


def operations_problems(settings: Settings) -> list[str]:
    """Settings of issue #17 that would fail at the first request, or open what must not be."""
    from alert_server.internal_access import parse_networks

    found: list[str] = []
    try:
        parse_networks(settings.metrics_networks)
    except ValueError as exc:
        found.append(str(exc))
    if settings.internal_access == "open" and not settings.demo:
        found.append(
            "VIGIE_INTERNAL_ACCESS=open réservé à la démonstration : /metrics et la "
            "documentation de l'API seraient lisibles par tous (token ou network)"
        )
    if settings.internal_access == "token" and 0 < len(settings.metrics_token) < 24:
        found.append("VIGIE_METRICS_TOKEN trop court (au moins 24 caractères aléatoires)")
    return found


def check(settings: Settings) -> None:
    """Raise ``UnsafeConfiguration`` when ``problems`` finds anything."""
    found = problems(settings)
    if found:
        raise UnsafeConfiguration(found)
