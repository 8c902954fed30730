"""The one door of every gateway into the alert path: ``Ingestor.submit``.

A gateway's alert becomes a protocol.md alert message and goes to the same writer thread as an
MQTT alert, so it gets the same storage (stored before acknowledged), the same identity rule
(``(device_id, alert_id)``: a retry is a repeat, never a second alert), the same flood rule and
the same pipeline afterwards. Nothing here writes an alert itself.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alert_server.devices.presence import PresenceTracker
from alert_server.ingest.handler import Inbound, Ingestor
from alert_server.positions import LastPosition
from vigie.timeutil import rfc3339


@dataclass(frozen=True)
class GatewayAlert:
    """What a gateway knows of one alert, in protocol.md terms."""

    device_id: str
    alert_id: str
    kind: str
    ts: datetime
    lat: float | None = None
    lon: float | None = None
    acc_m: float | None = None
    pos_ts: datetime | None = None
    src: str = "gps"
    batt: int | None = None

    def payload(self) -> bytes:
        body: dict[str, Any] = {"v": 1, "alert_id": self.alert_id, "kind": self.kind}
        body["ts"] = rfc3339(self.ts)
        if self.lat is not None and self.lon is not None:
            pos: dict[str, Any] = {"lat": self.lat, "lon": self.lon, "src": self.src}
            if self.acc_m is not None:
                pos["acc_m"] = self.acc_m
            if self.pos_ts is not None:
                pos["ts"] = rfc3339(self.pos_ts)
            body["pos"] = pos
        if self.batt is not None:
            body["batt"] = self.batt
        return json.dumps(body).encode()


class Intake:
    def __init__(
        self,
        ingestor: Ingestor,
        presence: PresenceTracker,
        on_position: Callable[[str, LastPosition], None] | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.presence = presence
        # The pipeline's hook: an open alert of a moving device follows it.
        self.on_position = on_position

    def submit_alert(
        self, alert: GatewayAlert, received_at: datetime, on_committed: Callable[[], None]
    ) -> None:
        """Queue the alert for the writer; ``on_committed`` runs once it is committed (a new
        alert, a repeat of one already stored, or a press merged into a running incident)."""
        self.ingestor.submit(
            Inbound(alert.device_id, "alert", alert.payload(), on_committed, received_at)
        )

    def store_and_wait(self, alert: GatewayAlert, received_at: datetime, timeout_s: float) -> bool:
        """True once the alert is committed; False after ``timeout_s`` (it stays queued and is
        stored as soon as the database allows: a retry then finds it and is a repeat)."""
        done = threading.Event()
        self.submit_alert(alert, received_at, done.set)
        return done.wait(timeout_s)

    def seen(
        self,
        device_id: str,
        at: datetime,
        *,
        online: bool | None = True,
        batt: int | None = None,
        charging: bool | None = None,
        position: LastPosition | None = None,
        heartbeat: bool = False,
    ) -> None:
        self.presence.seen(
            device_id, at, online=online, batt=batt, charging=charging, position=position
        )
        if heartbeat:
            self.presence.heartbeat(device_id, at)
        if position is not None and self.on_position is not None:
            self.on_position(device_id, position)
