"""Gateway identities: the OsmAnd identifier of a registered device, stored as a hash only.

The identifier is the device's only credential (Traccar Client sends no password): like a
password it is shown once, at registration, and never kept in clear.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class OsmandIdentity(SQLModel, table=True):
    __tablename__ = "osmand_identity"

    # SHA-256 (hex) of the identifier typed into the app: 256 random bits, so a plain hash is
    # enough (nothing to brute-force, unlike a PIN).
    id_sha256: str = Field(primary_key=True, max_length=64)
    device_id: str = Field(foreign_key="device.device_id", unique=True, max_length=64)
    created_at: datetime
