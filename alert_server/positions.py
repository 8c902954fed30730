"""A device's last known position, as the server holds it in memory.

Handed from ingest and the gateways (a heartbeat, a position report) to presence (``devices``)
and to the pipeline (an alert on the move): a value that crosses stages, so it lives here,
below all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


# Slots: one per connected device, held for as long as the process runs (a plain dataclass
# carries a per-instance dict, several hundred bytes per device).
@dataclass(frozen=True, slots=True)
class LastPosition:
    lat: float
    lon: float
    acc_m: float | None
    at: datetime
    src: str | None
