"""One-time enrolment codes (operations.md 1.1): only a SHA-256 of the code is stored, so a
copy of the database cannot enrol a phone."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class EnrolmentCode(SQLModel, table=True):
    __tablename__ = "enrolment_code"

    code_sha256: str = Field(primary_key=True, max_length=64)
    device_id: str = Field(foreign_key="device.device_id", index=True, max_length=64)
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
