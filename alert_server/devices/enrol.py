"""Enrolment of a phone as a device (operations.md 1.1): a one-time link, valid 24 h.

``vigie devices enrol`` (or an admin in the console) issues a code; the phone opens
``{VIGIE_PUBLIC_URL}/app/enrol?code=…`` and the app redeems the code. Redeeming gives the
device a NEW MQTT password (written to the broker's password file, broker reloaded): the
server never keeps a device's password, so it has none to hand out, and a leaked old password
stops working the moment a phone is enrolled. The code is spent atomically (one UPDATE that
only matches an unused, unexpired code), so two phones racing with the same link cannot both
get credentials.

Codes are 192 random bits; only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import update
from sqlmodel import Session, col

from alert_server.devices.models import Device, EnrolmentCode
from vigie.brokers import files as broker_files
from vigie.timeutil import as_utc

VALIDITY = timedelta(hours=24)


class EnrolmentError(Exception):
    """Why a code cannot be issued or redeemed; ``message`` is French, for the worker or the
    administrator, and ``status`` the HTTP status that goes with it."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Issued:
    device_id: str
    code: str
    enrol_url: str
    expires_at: datetime


@dataclass(frozen=True)
class Credentials:
    device_id: str
    mqtt_username: str
    mqtt_password: str


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def enrol_url(public_url: str, code: str) -> str:
    return f"{public_url.rstrip('/')}/app/enrol?code={quote(code, safe='')}"


def issue(session: Session, *, device_id: str, public_url: str, now: datetime) -> Issued:
    """A new one-time code for ``device_id`` (earlier unused codes stay valid until they
    expire: an administrator may have printed one)."""
    device = session.get(Device, device_id)
    if device is None:
        raise EnrolmentError(f"DEVICE_ID: {device_id!r} inconnu", 404)
    if device.revoked_at is not None:
        raise EnrolmentError(f"DEVICE_ID: {device_id!r} est révoqué", 409)
    code = secrets.token_urlsafe(24)
    expires_at = now + VALIDITY
    session.add(
        EnrolmentCode(
            code_sha256=_digest(code), device_id=device_id, created_at=now, expires_at=expires_at
        )
    )
    session.flush()
    return Issued(device_id, code, enrol_url(public_url, code), expires_at)


UNKNOWN = "Ce lien d'inscription n'existe pas. Vérifiez qu'il a été copié en entier."
USED = (
    "Ce lien d'inscription a déjà servi : il ne marche qu'une fois. "
    "Demandez-en un nouveau à la personne qui gère Vigie."
)
EXPIRED = (
    "Ce lien d'inscription a expiré (il est valable 24 heures). "
    "Demandez-en un nouveau à la personne qui gère Vigie."
)
REVOKED = "Ce boîtier a été révoqué : ce téléphone ne peut pas être inscrit."


def spend(session: Session, *, code: str, now: datetime) -> str:
    """Spend ``code`` (once, atomically) and return its device id, or raise EnrolmentError
    with the reason in French."""
    digest = _digest(code)
    spent = session.execute(
        update(EnrolmentCode)
        .where(col(EnrolmentCode.code_sha256) == digest)
        .where(col(EnrolmentCode.used_at).is_(None))
        .where(col(EnrolmentCode.expires_at) > now)
        .values(used_at=now)
    )
    row = session.get(EnrolmentCode, digest)
    if getattr(spent, "rowcount", 0) != 1 or row is None:
        if row is None:
            raise EnrolmentError(UNKNOWN, 404)
        if row.used_at is not None:
            raise EnrolmentError(USED, 410)
        if as_utc(row.expires_at) <= now:
            raise EnrolmentError(EXPIRED, 410)
        raise EnrolmentError(UNKNOWN, 404)
    device = session.get(Device, row.device_id)
    if device is None or device.revoked_at is not None:
        raise EnrolmentError(REVOKED, 403)
    return row.device_id


def give_credentials(
    device_id: str, *, passwd_file: Path | None, pid_file: Path | None
) -> Credentials:
    """A new MQTT password for ``device_id`` in the broker's password file, broker reloaded."""
    if passwd_file is None:
        raise EnrolmentError(
            "Inscription impossible : le serveur ne gère pas les comptes du broker "
            "(VIGIE_BROKER_PASSWD_FILE n'est pas réglé).",
            503,
        )
    password = broker_files.generate_password()
    broker_files.set_password(passwd_file, device_id, password)
    broker_files.reload_broker(pid_file)
    return Credentials(device_id, device_id, password)
