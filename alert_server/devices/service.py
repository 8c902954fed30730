"""Workers and devices: registration, listing, revocation, PIN checks."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime

import phonenumbers
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select as select_columns
from sqlmodel import Session

from alert_server.devices.models import Device, Worker
from vigie.brokers.files import reserved_for_servers
from vigie.topics import SERVER_USERNAME, valid_device_id

DEVICE = Device.__table__  # type: ignore[attr-defined]
WORKER = Worker.__table__  # type: ignore[attr-defined]

_hasher = PasswordHasher()
ROLES = ("nurse", "pharmacist", "other")
PIN_RE = re.compile(r"^[0-9]{4,8}$")


class DeviceInputError(ValueError):
    """Bad input for a device registration; the message names the field."""


def hash_pin(pin: str) -> str:
    return _hasher.hash(pin)


def pin_matches(pin: str, encoded: str) -> bool:
    try:
        return _hasher.verify(encoded, pin)
    except (VerificationError, InvalidHashError):
        return False


def normalise_phone(phone: str, field: str = "--phone") -> str:
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException as exc:
        raise DeviceInputError(f"{field}: {phone!r} n'est pas un numéro E.164 ({exc})") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise DeviceInputError(f"{field}: {phone!r} n'est pas un numéro valide")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class NewDevice:
    device_id: str
    worker: str
    role: str
    phone: str
    pin: str
    duress_pin: str
    site_lat: float | None = None
    site_lon: float | None = None
    site_label: str | None = None

    def validate(self) -> NewDevice:
        if not valid_device_id(self.device_id):
            raise DeviceInputError(
                f"DEVICE_ID: {self.device_id!r} doit correspondre à ^[A-Za-z0-9_-]{{3,64}}$"
                + (
                    f" et ne pas être {SERVER_USERNAME!r}"
                    if self.device_id == SERVER_USERNAME
                    else ""
                )
            )
        if reserved_for_servers(self.device_id):
            raise DeviceInputError(
                f"DEVICE_ID: {self.device_id!r} est réservé aux serveurs (les noms "
                f"{SERVER_USERNAME} et {SERVER_USERNAME}-… sont les leurs sur le broker)"
            )
        if not self.worker.strip():
            raise DeviceInputError("--worker: le nom ne peut pas être vide")
        if self.role not in ROLES:
            raise DeviceInputError(f"--role: {self.role!r} n'est pas l'un de {', '.join(ROLES)}")
        for name, pin in (("--pin", self.pin), ("--duress-pin", self.duress_pin)):
            if not PIN_RE.match(pin):
                raise DeviceInputError(f"{name}: le code doit faire 4 à 8 chiffres")
        if self.pin == self.duress_pin:
            raise DeviceInputError("--duress-pin: doit être différent de --pin")
        site = (self.site_lat, self.site_lon)
        if (site[0] is None) != (site[1] is None):
            raise DeviceInputError("--site-lat/--site-lon: donner les deux ou aucun")
        if self.site_lat is not None and not -90 <= self.site_lat <= 90:
            raise DeviceInputError(f"--site-lat: {self.site_lat} hors de [-90, 90]")
        if self.site_lon is not None and not -180 <= self.site_lon <= 180:
            raise DeviceInputError(f"--site-lon: {self.site_lon} hors de [-180, 180]")
        phone = normalise_phone(self.phone)
        return NewDevice(
            self.device_id,
            self.worker.strip(),
            self.role,
            phone,
            self.pin,
            self.duress_pin,
            self.site_lat,
            self.site_lon,
            self.site_label,
        )


def add_device(
    session: Session,
    *,
    new: NewDevice,
    now: datetime,
    pin_hashes: tuple[str, str] | None = None,
    hasher: Callable[[str], str] = hash_pin,
) -> Device:
    """Register a device and its worker. Raises DeviceInputError if the id is taken.

    ``pin_hashes``: the (PIN, duress PIN) hashes when already made (a bulk import hashes
    them in parallel, before its transaction). Otherwise ``hasher`` turns each PIN into its
    stored argon2 hash (``hash_pin``; the demonstration, whose devices all share the PINs it
    prints, hashes each PIN once for all of them)."""
    new = new.validate()
    existing = session.get(Device, new.device_id)
    if existing is not None:
        state = "révoqué" if existing.revoked_at else "actif"
        raise DeviceInputError(f"DEVICE_ID: {new.device_id!r} existe déjà ({state})")
    pin_hash, duress_hash = pin_hashes or (hasher(new.pin), hasher(new.duress_pin))
    worker = Worker(
        name=new.worker,
        role=new.role,
        phone=new.phone,
        pin_hash=pin_hash,
        duress_pin_hash=duress_hash,
        created_at=now,
    )
    session.add(worker)
    session.flush()
    assert worker.id is not None
    device = Device(
        device_id=new.device_id,
        worker_id=worker.id,
        mqtt_username=new.device_id,
        site_lat=new.site_lat,
        site_lon=new.site_lon,
        site_label=new.site_label,
        created_at=now,
    )
    session.add(device)
    session.flush()
    return device


def revoke_device(session: Session, *, device_id: str, now: datetime) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise DeviceInputError(f"DEVICE_ID: {device_id!r} inconnu")
    if device.revoked_at is None:
        device.revoked_at = now
        device.online = False
        session.add(device)
    return device


def device_and_worker(session: Session, device_id: str) -> tuple[Device, Worker] | None:
    device = session.get(Device, device_id)
    if device is None:
        return None
    worker = session.get(Worker, device.worker_id)
    assert worker is not None
    return device, worker


@dataclass(frozen=True, slots=True)
class InService:
    """A device not revoked and its worker, as the worker notices need them."""

    device_id: str
    online: bool
    last_seen_at: datetime | None
    batt: int | None
    charging: bool | None
    worker_id: int
    phone: str


def in_service(session: Session) -> list[InService]:
    """Every device not revoked, with its worker's id and phone."""
    rows = session.execute(
        select_columns(
            DEVICE.c.device_id,
            DEVICE.c.online,
            DEVICE.c.last_seen_at,
            DEVICE.c.batt,
            DEVICE.c.charging,
            WORKER.c.id,
            WORKER.c.phone,
        )
        .select_from(DEVICE.join(WORKER, WORKER.c.id == DEVICE.c.worker_id))
        .where(DEVICE.c.revoked_at.is_(None))
    ).all()
    return [InService(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class DeviceState:
    """What the visit timers need of a device: is it online, its battery, its worker's role."""

    online: bool
    batt: int | None
    role: str | None


def states(session: Session, device_ids: Collection[str]) -> dict[str, DeviceState]:
    """The state of each known device among ``device_ids`` (unknown ones are left out)."""
    if not device_ids:
        return {}
    rows = session.execute(
        select_columns(DEVICE.c.device_id, DEVICE.c.online, DEVICE.c.batt, WORKER.c.role)
        .select_from(DEVICE.outerjoin(WORKER, WORKER.c.id == DEVICE.c.worker_id))
        .where(DEVICE.c.device_id.in_(sorted(set(device_ids))))
    ).all()
    return {device_id: DeviceState(online, batt, role) for device_id, online, batt, role in rows}
