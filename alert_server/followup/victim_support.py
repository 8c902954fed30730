"""Victim support after a genuine incident: one SMS to the worker, never to anyone else.

It gives France Victimes (116 006, free), the local association configured for the
département, and how to file a complaint — including that since the loi n° 2025-623 du
9 juillet 2025 the employer, the Ordre, the URPS or a union may file it on the victim's behalf
with her written consent, and that she may give the Ordre's address as her domicile.

``offer`` is called from the resolution (``Pipeline.resolve``), inside its transaction, with
what it needs of the alert and its worker: only for an outcome marked ``genuine``
(``outcomes.py``), only once per alert, never for a worker who opted out. The text is built
when the SMS is sent, from the directory file (``VIGIE_VICTIM_SUPPORT_FILE``, see
``victim_support.example.yaml``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from sqlmodel import Session

from alert_server.followup import outbox
from alert_server.followup.models import VICTIM_SUPPORT, WorkerPreference
from dispatch.messages import PARIS, to_gsm7
from vigie import outcomes

log = logging.getLogger(__name__)

NATIONAL_NUMBER = "116 006"
# France Victimes' published hours (shared/research/french_geo.md §4.2); configurable because
# they have changed before.
NATIONAL_HOURS = "7j/7, 9h-19h"
DEFAULT_COMPLAINT = (
    "Porter plainte : commissariat ou brigade de gendarmerie (sur rendez-vous possible). "
    "Votre employeur, votre Ordre ou votre URPS peut porter plainte pour vous avec votre "
    "accord écrit (loi du 9 juillet 2025) et vous pouvez donner l'adresse de l'Ordre comme "
    "domicile."
)


class SupportDirectoryError(ValueError):
    """The victim-support file is unreadable; the message names the file and the field."""


@dataclass(frozen=True)
class LocalSupport:
    name: str
    phone: str | None = None
    complaint: str | None = None  # replaces the general complaint advice for this département


@dataclass(frozen=True)
class SupportDirectory:
    national_hours: str = NATIONAL_HOURS
    complaint: str = DEFAULT_COMPLAINT
    departements: dict[str, LocalSupport] = field(default_factory=dict)


def parse_directory(text: str, source: str = "<texte>") -> SupportDirectory:
    try:
        data: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SupportDirectoryError(f"{source}: YAML illisible ({exc})") from exc
    if not isinstance(data, dict):
        raise SupportDirectoryError(f"{source}: un objet YAML est attendu")
    deps: dict[str, LocalSupport] = {}
    raw_deps = data.get("departements") or {}
    if not isinstance(raw_deps, dict):
        raise SupportDirectoryError(f"{source}: departements doit être un objet")
    for code, entry in raw_deps.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("association"), str):
            raise SupportDirectoryError(
                f"{source}: departements.{code}.association : texte attendu"
            )
        deps[str(code)] = LocalSupport(
            name=entry["association"],
            phone=str(entry["phone"]) if entry.get("phone") is not None else None,
            complaint=str(entry["complaint"]) if entry.get("complaint") else None,
        )
    return SupportDirectory(
        national_hours=str(data.get("national_hours") or NATIONAL_HOURS),
        complaint=str(data.get("complaint") or DEFAULT_COMPLAINT),
        departements=deps,
    )


def load_directory(path: Path | None) -> SupportDirectory:
    if path is None:
        return SupportDirectory()
    try:
        return parse_directory(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise SupportDirectoryError(f"{path}: {exc}") from exc


def opted_out(session: Session, worker_id: int) -> bool:
    pref = session.get(WorkerPreference, worker_id)
    return pref is not None and pref.victim_support_opt_out


def set_opt_out(session: Session, *, worker_id: int, opt_out: bool, now: datetime) -> None:
    """The worker's choice (dashboard or support desk): no victim-support SMS for her."""
    pref = session.get(WorkerPreference, worker_id)
    if pref is None:
        pref = WorkerPreference(worker_id=worker_id, updated_at=now)
    pref.victim_support_opt_out = opt_out
    pref.updated_at = now
    session.add(pref)


def genuine(outcome: str | None) -> bool:
    """An outcome that calls for the victim-support SMS (a real incident)."""
    found = outcomes.BY_CODE.get(outcome or "")
    return found is not None and found.genuine


def offer(
    session: Session,
    *,
    alert_id: str,
    device_id: str,
    departement: str | None,
    incident_at: datetime,
    worker_id: int,
    phone: str,
    outcome: str | None,
    now: datetime,
) -> bool:
    """Queue the victim-support SMS for a genuine incident. True when one was queued (the
    caller then writes ``victim_support_offered`` on the alert's timeline).

    Runs in the resolution's transaction: the message exists if and only if the resolution
    committed. Idempotent per alert (a second resolution does not resend it).
    """
    found = outcomes.BY_CODE.get(outcome or "")
    if found is None or not found.genuine:
        return False
    if opted_out(session, worker_id):
        log.info("victim support not offered (opted out) alert_id=%s", alert_id)
        return False
    return outbox.queue(
        session,
        dedupe_key=f"{VICTIM_SUPPORT}:{alert_id}",
        kind=VICTIM_SUPPORT,
        phone=phone,
        now=now,
        worker_id=worker_id,
        device_id=device_id,
        alert_id=alert_id,
        context={
            "departement": departement,
            "incident_at": incident_at.isoformat(),
            "outcome": found.code,
        },
    )


def text(directory: SupportDirectory, *, departement: str | None, incident_at: datetime) -> str:
    """The SMS, in French, GSM-7 (a few segments: it is read once, calmly, after the fact)."""
    local = directory.departements.get(departement or "")
    when = incident_at.astimezone(PARIS)
    parts = [
        f"Vigie : après l'incident du {when:%d/%m} à {when:%H:%M}, vous pouvez être "
        f"accompagné(e) gratuitement. France Victimes : {NATIONAL_NUMBER} "
        f"({directory.national_hours}, appel gratuit)."
    ]
    if local is not None:
        parts.append(
            f"Près de chez vous : {local.name}" + (f", {local.phone}." if local.phone else ".")
        )
    parts.append(local.complaint if local is not None and local.complaint else directory.complaint)
    return to_gsm7(" ".join(parts))
