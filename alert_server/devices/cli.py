"""``vigie devices import FICHIER.csv``: many devices (MQTT and OsmAnd) in one process and one
transaction, all or nothing.

The file is read and checked whole (``devices.bulk``), the PINs hashed in a few threads, then
one transaction registers every device with its worker, its OsmAnd identifier or its broker
account (Mosquitto's password file, or RabbitMQ's management API) and its audit row. If
anything fails, nothing is registered and the broker accounts written are taken back. The
broker is reloaded once at the end. Each credential is printed once.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import asdict, dataclass

from sqlmodel import Session, col, select

from alert_server.audit import record_cli
from alert_server.db import make_engine, migrate, write_scope
from alert_server.devices import service
from alert_server.devices.bulk import BulkImportError, Row, hash_pins
from alert_server.devices.models import Device
from alert_server.gateways import osmand
from alert_server.settings import Settings
from vigie.brokers import files as broker_files
from vigie.timeutil import utcnow

log = logging.getLogger(__name__)
COMMAND = "vigie devices import"
OUTPUT_COLUMNS = ("device_id", "mqtt_username", "mqtt_password", "osmand_id", "server_url")


@dataclass(frozen=True)
class Registered:
    device_id: str
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    osmand_id: str | None = None
    server_url: str | None = None

    def to_json(self) -> dict[str, str]:
        """The shape of ``devices add --json`` for its kind."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class ImportResult:
    devices: list[Registered]
    # False: the broker files changed but the broker could not be told (no PID file).
    broker_reloaded: bool
    passwd_file_set: bool


def _taken(session: Session, rows: list[Row], source: str) -> list[str]:
    """Lines whose device_id is already registered (one query per 500 ids)."""
    ids = [r.new.device_id for r in rows]
    existing: dict[str, bool] = {}
    for i in range(0, len(ids), 500):
        stmt = select(Device.device_id, Device.revoked_at).where(
            col(Device.device_id).in_(ids[i : i + 500])
        )
        for device_id, revoked_at in session.exec(stmt):
            existing[device_id] = revoked_at is not None
    return [
        f"{source}:{r.line}: colonne device_id : {r.new.device_id!r} existe déjà "
        f"({'révoqué' if existing[r.new.device_id] else 'actif'})"
        for r in rows
        if r.new.device_id in existing
    ]


def import_devices(settings: Settings, rows: list[Row], source: str) -> ImportResult:
    """Register every row or none; ``BulkImportError`` for a device_id already taken,
    ``OSError`` when the broker files cannot be written, ``BrokerAccountError`` (RabbitMQ)."""
    hashes = hash_pins(rows)  # before the transaction: never hold the write lock meanwhile
    now = utcnow()
    server_url = settings.public_url.rstrip("/") + osmand.PATH
    passwd, acl = settings.broker_passwd_file, settings.broker_acl_file
    passwords = {
        r.new.device_id: broker_files.generate_password() for r in rows if r.gateway == "mqtt"
    }
    out: list[Registered] = []
    wrote_passwd = False
    rabbit_added: list[str] = []
    rabbit = None
    if settings.rabbitmq_api_url and passwords:
        from alert_server.devices.rabbitmq_accounts import RabbitAccounts

        rabbit = RabbitAccounts(settings.rabbitmq_api_url)
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        with write_scope(engine) as session:
            if taken := _taken(session, rows, source):
                raise BulkImportError(taken)
            for row, pin_hashes in zip(rows, hashes, strict=True):
                device_id = row.new.device_id
                service.add_device(session, new=row.new, now=now, pin_hashes=pin_hashes)
                record_cli(session, "device.add", target=device_id, command=COMMAND)
                if row.gateway == "osmand":
                    ident = osmand.register(session, device_id=device_id, now=now)
                    out.append(Registered(device_id, osmand_id=ident, server_url=server_url))
                else:
                    out.append(Registered(device_id, device_id, passwords[device_id]))
            # Broker accounts inside the transaction: if they cannot be written nothing is
            # registered, and if the commit fails they are taken back below.
            if passwd is not None and passwords:
                entries = broker_files.read_passwd(passwd)
                for device_id, password in passwords.items():
                    entries[device_id] = broker_files.mosquitto_hash(password)
                broker_files.write_passwd(passwd, entries)
                wrote_passwd = True
            if acl is not None and passwords:
                revoked = [d for d in broker_files.read_revoked(acl) if d not in passwords]
                broker_files.write_acl(acl, revoked)
            if rabbit is not None:
                for device_id, password in passwords.items():
                    rabbit.add_device(device_id, password)
                    rabbit_added.append(device_id)
    except BaseException:
        if wrote_passwd and passwd is not None:
            entries = broker_files.read_passwd(passwd)
            for device_id in passwords:
                entries.pop(device_id, None)
            broker_files.write_passwd(passwd, entries)
        if rabbit is not None:
            for device_id in rabbit_added:
                try:
                    rabbit.remove_device(device_id)
                except Exception:  # the first error is the one to report; this one is logged
                    log.exception("RabbitMQ account %s not taken back", device_id)
        raise
    finally:
        engine.dispose()
        if rabbit is not None:
            rabbit.close()
    reloaded = broker_files.reload_broker(settings.broker_pid_file) if wrote_passwd else True
    return ImportResult(out, reloaded, passwd is not None)


def as_csv(devices: list[Registered]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(OUTPUT_COLUMNS)
    for d in devices:
        writer.writerow([getattr(d, c) or "" for c in OUTPUT_COLUMNS])
    return buf.getvalue()


def as_json(devices: list[Registered]) -> str:
    return json.dumps([d.to_json() for d in devices], ensure_ascii=False)
