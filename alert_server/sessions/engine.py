"""The session timers: ``tick(now)`` advances every due visit exactly once.

Timers are rows (``visit_session.due_at`` and ``offline_due_at``), as in ``dispatch.clock``:
any server's tick may run them, a restart loses nothing. A tick, each step in its own write
transaction:

1. schedules the rows whose deadline depends on settings (``due_at`` NULL);
2. watches the devices of running sessions: a status seen ``offline`` arms the offline timer,
   ``online`` again disarms it;
3. fires the due rows: at the expected end a ``session.warning`` to the device and the grace
   timer; at the end of the grace (or of the offline delay) a server-side alert.

Exactly once: the due rows are picked with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (servers
split them) and every transition is a compare-and-set on the state (a second server, or a
message from the device racing with the tick, changes nothing). The alert itself is inserted
with a deterministic ``alert_id`` (``ON CONFLICT DO NOTHING``): one alert per session, ever.

The one at-most-once effect is the ``session.warning`` itself: published after the commit, it
is lost if the server dies in between. The alert still follows after the grace time, so the
failure only costs the worker her reminder, never her protection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, and_, or_, select, update
from sqlmodel import Session

from alert_server.db import read_scope, write_scope
from alert_server.downlink import AlertRef, Downlink
from alert_server.sessions.models import ACTIVE, ALERTED, RUNNING, WARNED
from alert_server.sessions.service import SESSION_TABLE, session_alert_id
from vigie.persistence import any_row, pick_due
from vigie.timeutil import as_utc, rfc3339, utcnow
from vigie.vocabulary import AlertKind, DownlinkType

log = logging.getLogger(__name__)

S = SESSION_TABLE

AlertStored = Callable[[str], None]


class Received(Protocol):
    @property
    def created(self) -> bool: ...


class ReceiveAlert(Protocol):
    """Port: store a new alert and its ``received`` event, in the caller's transaction; a
    repeat of an alert already stored changes nothing (``alerts.lifecycle.receive``)."""

    def __call__(
        self, session: Session, *, values: dict[str, Any], event: Mapping[str, Any] | None = ...
    ) -> Received: ...


class DeviceState(Protocol):
    """What the timers need of a device: online or not, its battery, its worker's role."""

    @property
    def online(self) -> bool: ...

    @property
    def batt(self) -> int | None: ...

    @property
    def role(self) -> str | None: ...


class DeviceStates(Protocol):
    """Port: the state of each known device among ``device_ids``, in the caller's transaction
    (``devices.service.states``); unknown devices are left out."""

    def __call__(
        self, session: Session, device_ids: Collection[str]
    ) -> Mapping[str, DeviceState]: ...


OVERDUE_KIND = AlertKind.SESSION_OVERDUE
# Not a protocol kind: dispatch escalates it as an SOS and names it (messages.kind_label).
OFFLINE_KIND = AlertKind.SESSION_OFFLINE


@dataclass(frozen=True)
class SessionConfig:
    # Grace time per worker role (seconds); roles not listed get ``default_grace_s``.
    grace_s: Mapping[str, float] = field(
        default_factory=lambda: {"nurse": 300.0, "pharmacist": 300.0, "other": 300.0}
    )
    default_grace_s: float = 300.0
    offline_alert_s: float = 300.0
    checkin_extend_s: float = 900.0
    default_duration_s: float = 3600.0
    batch_size: int = 200

    def grace_for(self, role: str | None) -> float:
        return float(self.grace_s.get(role or "", self.default_grace_s))


@dataclass
class SessionTickReport:
    scheduled: int = 0
    offline_armed: int = 0
    offline_cleared: int = 0
    warned: list[str] = field(default_factory=list)  # session ids
    alerts: list[str] = field(default_factory=list)  # alert ids created by this tick


class SessionEngine:
    def __init__(
        self,
        engine: Engine,
        *,
        downlink: Downlink,
        alert_stored: AlertStored,
        receive_alert: ReceiveAlert,
        device_states: DeviceStates,
        config: SessionConfig | None = None,
    ) -> None:
        """``alert_stored``: hands a committed alert to the pipeline; ``receive_alert`` and
        ``device_states``: the ports to the alerts and devices stages."""
        self.engine = engine
        self.downlink = downlink
        self.alert_stored = alert_stored
        self.receive_alert = receive_alert
        self.device_states = device_states
        self.config = config or SessionConfig()

    def tick_safe(self) -> None:
        """For the scheduler: never raises (the next tick retries from the rows)."""
        try:
            self.tick(utcnow())
        except Exception:
            log.exception("session tick failed; the next tick retries")

    def tick(self, now: datetime) -> SessionTickReport:
        report = SessionTickReport()
        self._schedule(now, report)
        self._watch_offline(now, report)
        after = self._fire(now, report)
        for action in after:
            try:
                action()
            except Exception:
                log.exception("post-commit action of a session timer failed")
        return report

    # -- helpers ---------------------------------------------------------------------------

    def _any(self, where: Any) -> bool:
        """Whether any visit matches ``where``: a read, without the write lock. On SQLite an
        alert's commit waits for that lock, and most ticks have nothing to write."""
        with read_scope(self.engine) as session:
            return any_row(session, S.c.id, where)

    def _pick(self, session: Session, where: Any) -> list[Any]:
        # Several servers: each takes rows nobody else holds right now.
        stmt = pick_due(
            session, select(S).where(where).order_by(S.c.id).limit(self.config.batch_size)
        )
        return list(session.execute(stmt).mappings().all())

    # -- 1. deadlines that depend on settings ------------------------------------------------

    def _schedule(self, now: datetime, report: SessionTickReport) -> None:
        cfg = self.config
        unscheduled = and_(S.c.state == ACTIVE, S.c.due_at.is_(None))
        if not self._any(unscheduled):
            return
        with write_scope(self.engine) as session:
            rows = self._pick(session, unscheduled)
            for r in rows:
                expected_end = r["expected_end"]
                if expected_end is None:
                    expected_end = as_utc(r["started_at"]) + timedelta(
                        seconds=cfg.default_duration_s
                    )
                due = as_utc(expected_end)
                if r["last_checkin_at"] is not None:
                    due = max(
                        due,
                        as_utc(r["last_checkin_at"]) + timedelta(seconds=cfg.checkin_extend_s),
                    )
                res = session.execute(
                    update(S)
                    .where(S.c.id == r["id"], S.c.state == ACTIVE, S.c.due_at.is_(None))
                    .values(expected_end=expected_end, due_at=due, updated_at=now)
                )
                report.scheduled += res.rowcount  # type: ignore[attr-defined]

    # -- 2. devices going offline during a session -------------------------------------------

    def _watch_offline(self, now: datetime, report: SessionTickReport) -> None:
        """Arm the offline timer of a running visit whose device went offline, disarm it when
        the device is back. Read without the write lock; the changes (rare) are written with
        it, each one only if the row is still as read."""
        delay = timedelta(seconds=self.config.offline_alert_s)
        with read_scope(self.engine) as session:
            rows = session.execute(
                select(S.c.id, S.c.offline_since, S.c.device_id).where(S.c.state.in_(RUNNING))
            ).all()
            states = self.device_states(session, {r.device_id for r in rows}) if rows else {}
        arm: list[int] = []
        clear: list[tuple[int, datetime]] = []
        for row_id, offline_since, device_id in rows:
            state = states.get(device_id)
            if state is None:
                continue  # no such device: nothing to watch
            if not state.online and offline_since is None:
                arm.append(row_id)
            elif state.online and offline_since is not None:
                clear.append((row_id, offline_since))
        if not arm and not clear:
            return
        with write_scope(self.engine) as session:
            for row_id in arm:
                res = session.execute(
                    update(S)
                    .where(S.c.id == row_id, S.c.state.in_(RUNNING), S.c.offline_since.is_(None))
                    .values(offline_since=now, offline_due_at=now + delay, updated_at=now)
                )
                report.offline_armed += res.rowcount  # type: ignore[attr-defined]
            for row_id, offline_since in clear:
                # Back before the delay: nothing happened (unless the timer read was re-armed
                # meanwhile, by another server that saw the device go offline again).
                res = session.execute(
                    update(S)
                    .where(
                        S.c.id == row_id,
                        S.c.state.in_(RUNNING),
                        S.c.offline_since == offline_since,
                    )
                    .values(offline_since=None, offline_due_at=None, updated_at=now)
                )
                report.offline_cleared += res.rowcount  # type: ignore[attr-defined]

    # -- 3. due timers ------------------------------------------------------------------------

    def _fire(self, now: datetime, report: SessionTickReport) -> list[Callable[[], None]]:
        after: list[Callable[[], None]] = []
        due = and_(S.c.state.in_(RUNNING), or_(S.c.due_at <= now, S.c.offline_due_at <= now))
        if not self._any(due):
            return after
        with write_scope(self.engine) as session:
            for r in self._pick(session, due):
                device = self.device_states(session, (r["device_id"],)).get(r["device_id"])
                still_offline = device is not None and not device.online
                if r["offline_due_at"] is not None and as_utc(r["offline_due_at"]) <= now:
                    if still_offline:
                        self._raise(session, r, "offline", now, device, report, after)
                        continue
                    # Came back between the watch and now: disarm.
                    session.execute(
                        update(S)
                        .where(S.c.id == r["id"])
                        .values(offline_since=None, offline_due_at=None, updated_at=now)
                    )
                if r["due_at"] is None or as_utc(r["due_at"]) > now:
                    continue
                if r["state"] == ACTIVE:
                    self._warn(session, r, now, device.role if device else None, report, after)
                elif r["state"] == WARNED:
                    self._raise(session, r, "overdue", now, device, report, after)
        return after

    def _warn(
        self,
        session: Session,
        r: Any,
        now: datetime,
        role: str | None,
        report: SessionTickReport,
        after: list[Callable[[], None]],
    ) -> None:
        grace = self.config.grace_for(role)
        # The grace counts from the warning itself, so a late tick never shortens it.
        res = session.execute(
            update(S)
            .where(S.c.id == r["id"], S.c.state == ACTIVE, S.c.due_at <= now)
            .values(
                state=WARNED,
                warned_at=now,
                due_at=now + timedelta(seconds=grace),
                updated_at=now,
            )
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            return
        report.warned.append(r["session_id"])
        device_id, session_id = r["device_id"], r["session_id"]
        expected_end = r["expected_end"]
        log.warning(
            "session overdue, warning the worker device_id=%s session_id=%s grace_s=%s",
            device_id,
            session_id,
            grace,
        )

        def send() -> None:
            self.downlink.session(
                device_id,
                DownlinkType.SESSION_WARNING,
                session_id=session_id,
                expected_end=rfc3339(expected_end) if expected_end else None,
                grace_s=round(grace),
            )

        after.append(send)

    def _raise(
        self,
        session: Session,
        r: Any,
        reason: str,
        now: datetime,
        device: DeviceState | None,
        report: SessionTickReport,
        after: list[Callable[[], None]],
    ) -> None:
        device_id, session_id = r["device_id"], r["session_id"]
        alert_id = session_alert_id(device_id, session_id, reason)
        res = session.execute(
            update(S)
            .where(S.c.id == r["id"], S.c.state.in_(RUNNING))
            .values(
                state=ALERTED,
                alert_id=alert_id,
                alert_reason=reason,
                due_at=None,
                offline_due_at=None,
                updated_at=now,
            )
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            return
        kind = OVERDUE_KIND if reason == "overdue" else OFFLINE_KIND
        flags = ["server_side", "device_offline" if reason == "offline" else "session_overdue"]
        has_pos = r["pos_lat"] is not None and r["pos_lon"] is not None
        if not has_pos:
            flags.append("no_position")
        expected_end = r["expected_end"]
        raw = {
            "v": 1,
            "source": "server",
            "reason": reason,
            "session_id": session_id,
            "memo": r["memo"],
            "started_at": rfc3339(r["started_at"]),
            "expected_end": rfc3339(expected_end) if expected_end else None,
            "warned_at": rfc3339(r["warned_at"]) if r["warned_at"] else None,
            "offline_since": rfc3339(r["offline_since"]) if r["offline_since"] else None,
        }
        created = self.receive_alert(
            session,
            values={
                "alert_id": alert_id,
                "device_id": device_id,
                "kind": kind,
                "original_kind": None,
                "duress": False,
                "flags": sorted(flags),
                "created_at": now,
                "device_ts": None,
                "batt": device.batt if device is not None else None,
                "pos_lat": r["pos_lat"] if has_pos else None,
                "pos_lon": r["pos_lon"] if has_pos else None,
                "pos_acc_m": r["pos_acc_m"] if has_pos else None,
                "pos_at": r["pos_at"] if has_pos else None,
                "pos_src": r["pos_src"] if has_pos else None,
                "raw": json.dumps(raw, ensure_ascii=False),
            },
            event={
                "at": now,
                "actor": "server",
                "flags": sorted(flags),
                "session_id": session_id,
                "reason": reason,
            },
        ).created
        if not created:
            return
        report.alerts.append(alert_id)
        log.error(
            "session alert raised alert_id=%s device_id=%s session_id=%s reason=%s",
            alert_id,
            device_id,
            session_id,
            reason,
        )
        # Committed first, then handed to the pipeline (whose sweep also catches it if this
        # server dies in between): same path as a device's alert. The device is told the
        # server raised it (protocol.md 1.1): she can cancel it with her PIN.
        ref = AlertRef(device_id, alert_id, quiet=False)
        after.append(lambda: self.downlink.alert(ref, DownlinkType.ALERT_RAISED, kind=kind))
        after.append(lambda: self.alert_stored(alert_id))
