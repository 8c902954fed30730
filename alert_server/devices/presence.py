"""Device presence (online/offline, last seen, battery, last position) without a database
write per heartbeat: updates are merged in memory and flushed in one transaction at an interval.

A device that stops sending heartbeats while its connection stays up (a phone app killed by
the system, a tracker stuck) is marked offline after three missed heartbeat intervals
(protocol.md 1.1), its interval learnt from the gaps between its own heartbeats.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam, func, update

from alert_server.db import write_scope
from alert_server.devices.models import Device
from alert_server.positions import LastPosition
from vigie.timeutil import utcnow

log = logging.getLogger(__name__)


# Slots: one per connected device, held for as long as the process runs (a plain dataclass
# carries a per-instance dict, several hundred bytes per device).
@dataclass(frozen=True, slots=True)
class PresenceState:
    online: bool | None = None
    last_seen_at: datetime | None = None
    batt: int | None = None
    charging: bool | None = None
    position: LastPosition | None = None


# Heartbeat intervals outside this range are not learnt (a burst after reconnecting, a device
# that sends one a day): the rule applies only to an interval the device keeps.
MIN_HB_INTERVAL_S = 1.0
MAX_HB_INTERVAL_S = 6 * 3600.0
MISSED_HEARTBEATS = 3


class PresenceTracker:
    def __init__(
        self,
        engine: Engine,
        flush_interval_s: float = 2.0,
        *,
        position_retention: timedelta | None = None,
    ) -> None:
        self._engine = engine
        self._interval = flush_interval_s
        # Positions older than the retention period are never written back: the purge may
        # have erased them from the database while this process still remembered them.
        self._position_retention = position_retention
        self._lock = threading.Lock()
        self._dirty: dict[str, PresenceState] = {}
        # The freshest known state, also after a flush (for the geolocation of alerts).
        self._latest: dict[str, PresenceState] = {}
        # Per device: (time of its last heartbeat, its learnt interval in seconds or None).
        self._heartbeats: dict[str, tuple[datetime, float | None]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def seen(
        self,
        device_id: str,
        at: datetime,
        *,
        online: bool | None = True,
        batt: int | None = None,
        charging: bool | None = None,
        position: LastPosition | None = None,
    ) -> None:
        with self._lock:
            cur = self._latest.get(device_id, PresenceState())
            new = replace(
                cur,
                online=online if online is not None else cur.online,
                last_seen_at=at if online is not False else cur.last_seen_at,
                batt=batt if batt is not None else cur.batt,
                charging=charging if charging is not None else cur.charging,
                position=(
                    position
                    if position is not None
                    and (cur.position is None or position.at >= cur.position.at)
                    else cur.position
                ),
            )
            self._latest[device_id] = new
            self._dirty[device_id] = new

    def heartbeat(self, device_id: str, at: datetime) -> None:
        """Learn the device's heartbeat interval (the last gap, smoothed)."""
        with self._lock:
            prev = self._heartbeats.get(device_id)
            interval = prev[1] if prev else None
            if prev is not None:
                gap = (at - prev[0]).total_seconds()
                if MIN_HB_INTERVAL_S <= gap <= MAX_HB_INTERVAL_S:
                    interval = gap if interval is None else 0.5 * interval + 0.5 * gap
            self._heartbeats[device_id] = (at, interval)

    def expire_silent(self, now: datetime) -> list[str]:
        """Mark offline every device online by heartbeat that missed three intervals."""
        expired: list[str] = []
        with self._lock:
            for device_id, (last, interval) in list(self._heartbeats.items()):
                if interval is None:
                    continue
                if (now - last).total_seconds() <= MISSED_HEARTBEATS * interval:
                    continue
                del self._heartbeats[device_id]
                cur = self._latest.get(device_id)
                if cur is None or cur.online is False:
                    continue
                new = replace(cur, online=False)
                self._latest[device_id] = new
                self._dirty[device_id] = new
                expired.append(device_id)
        for device_id in expired:
            log.warning("device_id=%s missed %d heartbeats: offline", device_id, MISSED_HEARTBEATS)
        return expired

    def latest(self, device_id: str) -> PresenceState | None:
        with self._lock:
            return self._latest.get(device_id)

    def flush(self) -> int:
        with self._lock:
            dirty, self._dirty = self._dirty, {}
        if not dirty:
            return 0
        rows = []
        cutoff = (
            utcnow() - self._position_retention if self._position_retention is not None else None
        )
        for device_id, st in dirty.items():
            pos = st.position
            if pos is not None and cutoff is not None and pos.at < cutoff:
                pos = None
            rows.append(
                {
                    "b_device_id": device_id,
                    "online": bool(st.online),
                    "last_seen_at": st.last_seen_at,
                    "batt": st.batt,
                    "charging": st.charging,
                    "last_lat": pos.lat if pos else None,
                    "last_lon": pos.lon if pos else None,
                    "last_acc_m": pos.acc_m if pos else None,
                    "last_pos_at": pos.at if pos else None,
                    "last_pos_src": pos.src if pos else None,
                }
            )
        # COALESCE: what this process has not heard about since its start stays as stored.
        stmt = (
            update(Device)
            .where(Device.device_id == bindparam("b_device_id"))  # type: ignore[arg-type]
            .values(
                online=bindparam("online"),
                last_seen_at=func.coalesce(bindparam("last_seen_at"), Device.last_seen_at),
                batt=func.coalesce(bindparam("batt"), Device.batt),
                charging=func.coalesce(bindparam("charging"), Device.charging),
                last_lat=func.coalesce(bindparam("last_lat"), Device.last_lat),
                last_lon=func.coalesce(bindparam("last_lon"), Device.last_lon),
                last_acc_m=func.coalesce(bindparam("last_acc_m"), Device.last_acc_m),
                last_pos_at=func.coalesce(bindparam("last_pos_at"), Device.last_pos_at),
                last_pos_src=func.coalesce(bindparam("last_pos_src"), Device.last_pos_src),
            )
        )
        try:
            with write_scope(self._engine) as session:
                session.connection().execute(stmt, rows)
        except Exception:
            # Keep the updates for the next flush rather than losing them.
            with self._lock:
                for device_id, st in dirty.items():
                    self._dirty.setdefault(device_id, st)
            log.exception("presence flush failed; will retry")
            return 0
        return len(rows)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vigie-presence", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.expire_silent(utcnow())
            self.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()
