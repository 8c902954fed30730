"""Workers, their devices, and the devices' presence."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class Worker(SQLModel, table=True):
    __tablename__ = "worker"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    role: str = Field(max_length=20)  # nurse | pharmacist | other
    phone: str = Field(max_length=20)  # E.164 call-back number
    # Argon2 hashes; the PINs themselves are never stored.
    pin_hash: str = Field(max_length=200)
    duress_pin_hash: str = Field(max_length=200)
    created_at: datetime


class Device(SQLModel, table=True):
    __tablename__ = "device"

    device_id: str = Field(primary_key=True, max_length=64)
    worker_id: int = Field(foreign_key="worker.id", index=True)
    mqtt_username: str = Field(max_length=64)
    site_lat: float | None = None
    site_lon: float | None = None
    site_label: str | None = Field(default=None, max_length=200)
    created_at: datetime
    revoked_at: datetime | None = None
    # Wrong cancel PINs (alert_server/devices/pins.py): how many since when, and the lockout.
    pin_failures: int = 0
    pin_failure_since: datetime | None = None
    pin_locked_until: datetime | None = None
    # Presence, written in batches by the presence tracker (never once per heartbeat).
    online: bool = False
    last_seen_at: datetime | None = None
    batt: int | None = None
    charging: bool | None = None
    last_lat: float | None = None
    last_lon: float | None = None
    last_acc_m: float | None = None
    last_pos_at: datetime | None = None
    last_pos_src: str | None = Field(default=None, max_length=10)


class EnrolmentCode(SQLModel, table=True):
    """A one-time link that enrols a phone (operations.md 1.1): only a SHA-256 of the code is
    stored, so a copy of the database cannot enrol a phone. The table is created by the phone
    app's migration branch (``alert_server/phoneapp/migrations``)."""

    __tablename__ = "enrolment_code"

    code_sha256: str = Field(primary_key=True, max_length=64)
    device_id: str = Field(foreign_key="device.device_id", index=True, max_length=64)
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
