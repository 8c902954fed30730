"""Presence is batched, never erases what it does not know, and never writes back a position
older than the retention period (the purge may have erased it)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from alert_server.db import write_scope
from alert_server.devices.models import Device, Worker
from alert_server.devices.presence import PresenceTracker
from alert_server.positions import LastPosition
from vigie.timeutil import utcnow


def _device(engine: Engine) -> None:
    with write_scope(engine) as s:
        w = Worker(name="Inès", role="nurse", phone="+33612345678", pin_hash="x",
                   duress_pin_hash="y", created_at=utcnow())  # fmt: skip
        s.add(w)
        s.flush()
        assert w.id is not None
        s.add(Device(device_id="nurse-1", worker_id=w.id, mqtt_username="nurse-1",
                     created_at=utcnow()))  # fmt: skip


def _get(engine: Engine) -> Device:
    with Session(engine) as s:
        d = s.get(Device, "nurse-1")
        assert d is not None
        return d


def test_batched_presence_and_retention(engine: Engine) -> None:
    _device(engine)
    tracker = PresenceTracker(engine, position_retention=timedelta(days=30))
    now = utcnow()
    tracker.seen("nurse-1", now, batt=80, position=LastPosition(43.3, 5.4, 20, now, "gps"))
    assert tracker.flush() == 1
    d = _get(engine)
    assert (d.batt, d.last_lat, d.online) == (80, 43.3, True)
    # A heartbeat without a position keeps the stored one.
    tracker.seen("nurse-1", now, batt=79)
    tracker.flush()
    assert _get(engine).last_lat == 43.3 and _get(engine).batt == 79
    # The purge erases the stored position; the process still remembers an old one.
    old = now - timedelta(days=31)
    stale = PresenceTracker(engine, position_retention=timedelta(days=30))
    stale.seen("nurse-1", old, position=LastPosition(43.0, 5.0, 20, old, "gps"))
    with write_scope(engine) as s:
        dev = s.get(Device, "nurse-1")
        assert dev is not None
        dev.last_lat = dev.last_lon = dev.last_pos_at = None
        s.add(dev)
    stale.seen("nurse-1", now, batt=50)
    stale.flush()
    d = _get(engine)
    assert d.last_lat is None and d.batt == 50
