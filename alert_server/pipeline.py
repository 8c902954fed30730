"""The use case written out: on_alert → store → geolocate → match → dispatch.

Stages do not import one another; this module is where they meet. Slow work (Wi-Fi/cell
providers, telephony) runs on a small thread pool, never in the MQTT thread.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func
from sqlalchemy import select as select_columns
from sqlmodel import Session, select

from alert_server.alerts import lifecycle
from alert_server.alerts import service as alerts
from alert_server.alerts.models import Alert
from alert_server.db import read_scope, write_scope
from alert_server.devices import pins
from alert_server.devices import service as devices
from alert_server.devices.models import Device, Worker
from alert_server.devices.pins import PinPolicy
from alert_server.devices.presence import PresenceTracker
from alert_server.dispatch_bridge import incident_refs, service_name
from alert_server.downlink import AlertRef, Downlink
from alert_server.followup import victim_support
from alert_server.geo import resolve as geo_resolve
from alert_server.geo import service as geo_service
from alert_server.geo.providers import RadioLocator
from alert_server.geo.schemas import (
    FIX_SOURCES,
    CellTower,
    Fix,
    PositionInputs,
    RadioScan,
    ResolvedPosition,
    Site,
    WifiAccessPoint,
)
from alert_server.ingest.handler import AlertDraft, StoredAlert
from alert_server.positions import LastPosition
from alert_server.referents import chains as referent_chains
from alert_server.referents import service as referents
from alert_server.referents.schemas import Directory
from alert_server.sessions import service as visits
from dispatch import Dispatcher
from dispatch.schemas import AlertBrief
from vigie import payloads
from vigie.persistence import Prepared, connection_of
from vigie.timeutil import as_utc, rfc3339, utcnow
from vigie.vocabulary import AlertEventType, AlertState, DownlinkType, PinVerdict

log = logging.getLogger(__name__)

# An alert stored but not handed to dispatch after this long is picked up by the sweep.
SWEEP_GRACE = timedelta(seconds=5)

_device_t = Device.__table__  # type: ignore[attr-defined]
# Run at every press (``Prepared``).
_DEVICE_REVOKED_AT = Prepared(
    select_columns(_device_t.c.revoked_at).where(_device_t.c.device_id == bindparam("d"))
)
# Two servers storing presses of one device decide its incident one at a time (PostgreSQL).
_DEVICE_LOCK = Prepared(select_columns(func.pg_advisory_xact_lock(bindparam("k"))))


def _first_name(name: str) -> str:
    return name.split()[0] if name.split() else name


class Pipeline:
    def __init__(
        self,
        engine: Engine,
        *,
        presence: PresenceTracker,
        downlink: Downlink,
        dispatcher: Dispatcher | None = None,
        pin_policy: PinPolicy | None = None,
        session_default_duration_s: float | None = None,
        session_checkin_extend_s: float | None = None,
        providers: Sequence[RadioLocator] = (),
        provider_timeout_s: float = 2.0,
        flood_window_s: float = 120.0,
        workers: int = 4,
    ) -> None:
        self.engine = engine
        self.presence = presence
        self.downlink = downlink
        self.pin_policy = pin_policy or PinPolicy()
        self.session_default_duration_s = session_default_duration_s
        self.session_checkin_extend_s = session_checkin_extend_s
        self.dispatcher = dispatcher
        self.providers = tuple(providers)
        self.provider_timeout_s = provider_timeout_s
        self.flood_window = timedelta(seconds=flood_window_s)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vigie-pipeline")
        self._inflight: set[str] = set()
        self._lock = threading.Lock()

    # -- storage (ingest writer thread, inside its transaction) -----------------------------
    def store_alert(
        self, session: Session | Connection, *, draft: AlertDraft, now: datetime
    ) -> StoredAlert:
        """Store an alert message read by ingest: a new alert, a press joining its device's
        running incident, or a repeat of an alert already stored. Core statements only, so
        that the writer can run them on a bare connection (``write_transaction``)."""
        conn = connection_of(session)
        # One Core query for the one column needed: loading a Device entity through the ORM
        # was a third of the writer's time per alert.
        device = (
            _DEVICE_REVOKED_AT.first(conn, {"d": draft.device_id})
            if "bad_device_id" not in draft.flags
            else None
        )
        if device is None:
            draft.flags.append("unknown_device")
        elif device[0] is not None:  # revoked_at
            draft.flags.append("revoked_device")
        values = draft.values(now)
        # A new press of the same kind while the device's previous alert is still running
        # (within the flood window) is part of that incident: stored and receipted, never
        # escalated again (one device cannot make a referent receive a hundred SMS).
        if conn.dialect.name == "postgresql":
            _DEVICE_LOCK.rows(conn, {"k": _device_lock_key(draft.device_id)})
        primary = alerts.incident_primary(
            session, device_id=draft.device_id, kind=draft.kind, since=now - self.flood_window
        )
        if primary is not None and primary.device_alert_id != draft.alert_id:
            draft.incident_of = primary.alert_id
            values.update(
                incident_of=primary.alert_id,
                duress=primary.duress,
                dispatched_at=now,
                acknowledged_at=primary.acknowledged_at,
                acknowledged_by=primary.acknowledged_by,
                flags=sorted({*values["flags"], "merged"}),
            )
        stored = lifecycle.receive(
            session,
            values=values,
            incident=primary if draft.incident_of is not None else None,
            event={
                "at": now,
                "actor": draft.device_id,
                "flags": values["flags"],
                "errors": draft.errors,
                **({"incident_of": draft.incident_of} if draft.incident_of else {}),
            },
        )
        if stored.created:
            # A press joining its incident was counted on the incident's first alert by
            # ``receive`` (with its ``press_merged`` event).
            joined = primary if draft.incident_of is not None else None
            if joined is not None and joined.state == AlertState.ACKNOWLEDGED:
                # Help is already on its way: this press is told so too.
                draft.incident_acknowledged_by = joined.acknowledged_by or ""
                draft.incident_duress = joined.duress
        else:
            draft.incident_of = None
            alerts.add_event_now(
                session,
                alert_id=stored.alert_id,
                at=now,
                type_=AlertEventType.REPEAT,
                actor=draft.device_id,
            )
        return StoredAlert(stored.alert_id, stored.created, values["flags"])

    def store_unreadable_alert(self, session: Session, *, values: dict[str, Any]) -> StoredAlert:
        """The minimal record of an alert message that could not be stored normally (its raw
        bytes, flagged): no event."""
        stored = lifecycle.receive(session, values=values, event=None)
        return StoredAlert(stored.alert_id, stored.created, values["flags"])

    # -- after storage: geolocate → match → dispatch --------------------------------------
    def alert_stored(self, alert_id: str) -> None:
        with self._lock:
            if alert_id in self._inflight:
                return
            self._inflight.add(alert_id)
        self._pool.submit(self._process_safe, alert_id)

    def _process_safe(self, alert_id: str) -> None:
        try:
            self.process(alert_id, utcnow())
        except Exception:
            # The alert stays undispatched; the sweep retries it.
            log.exception("pipeline failed alert_id=%s; the sweep will retry", alert_id)
        finally:
            with self._lock:
                self._inflight.discard(alert_id)

    def process(self, alert_id: str, now: datetime) -> None:
        """Route one stored alert and start its escalation, in one transaction."""
        if self.dispatcher is None:
            return
        after: list[Callable[[], None]] = []
        # Read and locate first, outside the write transaction: the directory and the index
        # take their own connections and a position provider is an HTTP call. Inside the
        # write lock they would hold up every other writer (on SQLite, with every pooled
        # connection waiting on that lock, this one's own connection request would wait too).
        with read_scope(self.engine) as session:
            seen = session.exec(select(Alert).where(Alert.alert_id == alert_id)).first()
            if seen is None or seen.dispatched_at is not None or seen.state != AlertState.OPEN:
                return
            found = devices.device_and_worker(session, seen.device_id)
        device, worker = found if found is not None else (None, None)
        directory = referents.current_directory(self.engine)
        if directory is None and "no_directory" in seen.flags:
            # Already flagged and still nobody to call: the sweep's retry stops here, without
            # locating again or taking the write lock (on SQLite that lock is the one ingest
            # commits every alert under).
            log.error("no referent directory loaded: alert_id=%s cannot be escalated", alert_id)
            return
        resolved = self._locate(seen, device, directory, now)
        with write_scope(self.engine) as session:
            alert = _locked_alert(session, alert_id)
            # Acknowledged, cancelled or resolved before it was routed: nothing to escalate.
            if alert is None or alert.dispatched_at is not None or alert.state != AlertState.OPEN:
                return
            self._apply_position(session, alert, resolved, now)
            if directory is None:
                # Nobody to call: keep the alert loudly open and retry at every sweep (an
                # import of the directory makes the next sweep dispatch it).
                lifecycle.flag(session, alert=alert, flags={"no_directory"})
                log.error("no referent directory loaded: alert_id=%s cannot be escalated", alert_id)
                return
            chains = referent_chains.chains_for_position(directory, resolved, now)
            brief = _brief(alert, worker, device, resolved)
            # A timed visit's memo (often the patient's address) is the place for responders.
            brief = visits.brief_with_memo(session, alert, brief)
            self.dispatcher.start(
                session, brief=brief, chains=chains, policy=directory.escalation, now=now
            )
            # fall / no_motion: the worker's own phone first, the chain held (never for SOS).
            self.dispatcher.verify_first(session, brief=brief, now=now)
            lifecycle.dispatched(
                session,
                alert=alert,
                at=now,
                chains=[
                    {
                        "departement": c.departement,
                        "force": c.force,
                        "contacts": [x.name for x in c.contacts],
                    }
                    for c in chains
                ],
            )
            if alert.duress:
                # The duress PIN was typed before the escalation existed: tell dispatch now.
                self.dispatcher.mark_duress(session, alert_id=alert_id, now=now)
            if geo_resolve.needs_locate(resolved):
                ref = AlertRef.of(alert)
                after.append(lambda: self.downlink.alert(ref, DownlinkType.LOCATE))
        for action in after:
            action()

    def _locate(
        self, alert: Alert, device: Device | None, directory: Directory | None, now: datetime
    ) -> ResolvedPosition:
        inputs = self._position_inputs(alert, device)
        index = geo_service.current_index(self.engine)

        def default_force(dep: str) -> str | None:
            return referent_chains.default_force(directory, dep) if directory else None

        return geo_resolve.resolve_position(
            inputs,
            now=now,
            index=index,
            providers=self.providers,
            provider_timeout_s=self.provider_timeout_s,
            default_force=default_force,
        )

    def _position_inputs(self, alert: Alert, device: Device | None) -> PositionInputs:
        fix = None
        if alert.pos_lat is not None and alert.pos_lon is not None:
            fix = Fix(
                alert.pos_lat,
                alert.pos_lon,
                alert.pos_acc_m,
                as_utc(alert.pos_at) if alert.pos_at else None,
                alert.pos_src or "gps",
            )
        radio = _radio_scan(alert)
        site = None
        last: list[Fix] = []
        if device is not None:
            if device.site_lat is not None and device.site_lon is not None:
                site = Site(device.site_lat, device.site_lon, device.site_label)
            if device.last_lat is not None and device.last_lon is not None:
                last.append(
                    Fix(
                        device.last_lat,
                        device.last_lon,
                        device.last_acc_m,
                        as_utc(device.last_pos_at) if device.last_pos_at else None,
                        device.last_pos_src or "gps",
                    )
                )
        state = self.presence.latest(alert.device_id)
        if state is not None and state.position is not None:
            p = state.position
            last.append(Fix(p.lat, p.lon, p.acc_m, p.at, p.src or "gps"))
        return PositionInputs(
            fix=fix,
            radio=radio,
            site=site,
            last_known=tuple(last),
            alert_id=alert.alert_id,
            device_id=alert.device_id,
        )

    def _apply_position(
        self, session: Session, alert: Alert, resolved: ResolvedPosition, now: datetime
    ) -> None:
        alert.departement = resolved.departement
        alert.commune_code = resolved.commune_code
        alert.commune_nom = resolved.commune_nom
        alert.force = resolved.force
        flags = set(alert.flags) - {"no_position"}
        flags |= set(resolved.flags)
        alert.flags = sorted(flags)
        if resolved.has_position and resolved.source not in (None, *FIX_SOURCES):
            # The position came from elsewhere than the alert's own fix (site, provider,
            # last known): record it on the alert, with its source.
            alert.pos_lat, alert.pos_lon = resolved.lat, resolved.lon
            alert.pos_acc_m = resolved.acc_m
            alert.pos_at = resolved.measured_at
            alert.pos_src = resolved.source
        lifecycle.located(
            session,
            alert=alert,
            concerns={
                dep: "ambiguous_border" if dep != resolved.departement else "position"
                for dep in resolved.departements
            },
            at=now,
            source=resolved.source,
            acc_m=resolved.acc_m,
            age_s=resolved.age_s,
            commune=resolved.commune_nom,
            departements=list(resolved.departements),
            flags=sorted(resolved.flags),
        )

    def sweep(self, now: datetime | None = None) -> int:
        """Hand over every stored alert that has not reached dispatch (crash recovery)."""
        if self.dispatcher is None:
            return 0
        now = now or utcnow()
        with read_scope(self.engine) as session:
            pending = alerts.undispatched(session, older_than=now - SWEEP_GRACE)
        for alert_id in pending:
            log.warning("alert_id=%s was stored but never dispatched; dispatching now", alert_id)
            self.alert_stored(alert_id)
        return len(pending)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)

    # -- responders ------------------------------------------------------------------------
    def acknowledge(self, alert_id: str, *, actor: str, via: str, now: datetime) -> bool:
        """Take the alert in charge. True for the first acknowledgement, False otherwise.

        Atomic: SMS reply, key press and dashboard click all end in the same conditional
        UPDATE of the open alert, so arriving at the same instant they make one
        acknowledgement. With an escalation running, dispatch stops it in the same
        transaction (and tells everyone notified who took it).
        """
        with read_scope(self.engine) as session:
            # A press attached to an incident is taken in charge with its incident.
            found = alerts.get_alert(session, alert_id=alert_id)
            if found is not None:
                alert_id = alerts.primary_of(session, found).alert_id
        if self.dispatcher is not None:
            with write_scope(self.engine) as session:
                result = self.dispatcher.acknowledge(
                    session, alert_id=alert_id, by=actor, via=via, now=now
                )
            if result.status != "unknown":
                return result.accepted
        # No escalation (not routed yet, or no dispatch): acknowledge the alert row itself.
        with write_scope(self.engine) as session:
            won = lifecycle.acknowledge(session, alert_id=alert_id, actor=actor, via=via, at=now)
            refs = self._incident_refs(session, alert_id) if won else []
            by = service_name(alerts.get_alert(session, alert_id=alert_id), actor, via)
        for ref in refs:
            self.downlink.alert(ref, DownlinkType.ALERT_ACKNOWLEDGED, by=by)
        return won

    def resolve(
        self, alert_id: str, *, actor: str, outcome: str, note: str | None, now: datetime
    ) -> bool:
        """Close the alert (any state but resolved). True when this call closed it."""
        with write_scope(self.engine) as session:
            alert = alerts.get_alert(session, alert_id=alert_id)
            if alert is None:
                return False
            alert = alerts.primary_of(session, alert)
            alert_id = alert.alert_id
            if not lifecycle.allowed(alert, lifecycle.Transition.RESOLVE):
                return False
            # As the devices know them before the change: a cancelled alert stays quiet.
            refs = self._incident_refs(session, alert_id)
            lifecycle.resolve(session, alert=alert, at=now, actor=actor, outcome=outcome, note=note)
            if self.dispatcher is not None:
                self.dispatcher.close(session, alert_id=alert_id, now=now)
            _offer_victim_support(session, alert, outcome=outcome, now=now)
        for ref in refs:
            self.downlink.alert(ref, DownlinkType.ALERT_RESOLVED)
        return True

    def _incident_refs(self, session: Session, alert_id: str) -> list[AlertRef]:
        return incident_refs(session, alert_id)

    # -- device messages (ingest writer thread, inside its transaction) ---------------------
    def on_cancel(
        self,
        session: Session,
        *,
        device_id: str,
        msg: payloads.CancelMsg,
        verdict: PinVerdict,
        now: datetime,
    ) -> list[Callable[[], None]]:
        """Apply a cancel whose PIN was checked (``devices.pins``): the decision only.

        The cancel PIN stands the incident down; the duress PIN looks exactly the same on the
        device (the same ``alert.cancelled`` for the same alerts, then nothing more) while
        the escalation goes on and every contact is told. A wrong PIN changes nothing, is
        recorded for the dispatcher and counts towards the lockout.
        """
        alert = alerts.find_device_alert(session, device_id=device_id, device_alert_id=msg.alert_id)
        if alert is None:
            # A device may only cancel its own alerts (the lookup is by device and alert id).
            log.warning(
                "cancel for unknown alert alert_id=%s device_id=%s", msg.alert_id, device_id
            )
            return [self._cancel_rejected(device_id, msg.alert_id, "unknown_alert")]
        primary = alerts.primary_of(session, alert)
        device = session.get(Device, device_id)

        if verdict in (PinVerdict.UNVERIFIABLE, PinVerdict.LOCKED, PinVerdict.WRONG):
            reason = {
                PinVerdict.UNVERIFIABLE: "unverifiable",
                PinVerdict.LOCKED: "locked",
                PinVerdict.WRONG: "wrong_pin",
            }[verdict]
            event = {
                PinVerdict.UNVERIFIABLE: AlertEventType.PIN_UNVERIFIABLE,
                PinVerdict.LOCKED: AlertEventType.PIN_LOCKED_OUT,
                PinVerdict.WRONG: AlertEventType.PIN_WRONG,
            }[verdict]
            flags = {"pin_errors"} if verdict is PinVerdict.WRONG else set()
            if verdict is PinVerdict.LOCKED:
                flags.add("pin_locked")
            alerts.add_event(
                session,
                alert_id=primary.alert_id,
                at=now,
                type_=event,
                actor=device_id,
                **({"cancelled_alert": alert.alert_id} if alert is not primary else {}),
            )
            if verdict is PinVerdict.WRONG and device is not None:
                if pins.record_wrong_pin(device, now, self.pin_policy):
                    flags.add("pin_locked")
                    alerts.add_event(
                        session,
                        alert_id=primary.alert_id,
                        at=now,
                        type_=AlertEventType.PIN_LOCKOUT,
                        actor=device_id,
                        failures=device.pin_failures,
                        until=device.pin_locked_until.isoformat()
                        if device.pin_locked_until
                        else None,
                    )
                session.add(device)
            lifecycle.flag(session, alert=primary, flags=flags)
            log.warning(
                "cancel refused (%s) alert_id=%s device_id=%s", reason, primary.alert_id, device_id
            )
            return [self._cancel_rejected(device_id, msg.alert_id, reason)]

        if device is not None and device.pin_failures:
            pins.clear_failures(device)
            session.add(device)
        device_cancelled = primary.state == AlertState.CANCELLED or primary.duress
        if primary.state == AlertState.RESOLVED and not device_cancelled:
            return [self._cancel_rejected(device_id, msg.alert_id, "already_closed")]
        # From here on the device receives the same thing for both PINs.
        refs = [AlertRef.of(alert)] + [
            r
            for r in self._incident_refs(session, primary.alert_id)
            if r.device_alert_id != alert.device_alert_id
        ]
        if verdict is PinVerdict.DURESS:
            if not primary.duress:
                lifecycle.duress(session, alert=primary, at=now, actor=device_id)
                log.warning("DURESS alert_id=%s device_id=%s", primary.alert_id, device_id)
                if self.dispatcher is not None and primary.dispatched_at is not None:
                    self.dispatcher.mark_duress(session, alert_id=primary.alert_id, now=now)
        elif primary.duress:
            # Once under duress, a later "cancel" cannot stand the alert down: it may be
            # typed under the same threat.
            lifecycle.cancel_after_duress(session, alert=primary, at=now, actor=device_id)
        elif lifecycle.allowed(primary, lifecycle.Transition.CANCEL):
            lifecycle.cancel(session, alert=primary, at=now, actor=device_id)
            log.info("alert cancelled alert_id=%s device_id=%s", primary.alert_id, device_id)
            if self.dispatcher is not None:
                self.dispatcher.stand_down(
                    session, alert_id=primary.alert_id, now=now, reason="cancel_pin"
                )
        # Sent as the device knew the alerts before this cancel: a duress cancel must not
        # mark the reply any differently from a real one.
        plain = [AlertRef(r.device_id, r.device_alert_id, quiet=False) for r in refs]

        def reply() -> None:
            for ref in plain:
                self.downlink.alert(ref, DownlinkType.ALERT_CANCELLED)

        return [reply]

    def _cancel_rejected(self, device_id: str, alert_id: str, reason: str) -> Callable[[], None]:
        ref = AlertRef(device_id, alert_id, quiet=False)
        return lambda: self.downlink.alert(ref, DownlinkType.CANCEL_REJECTED, reason=reason)

    def on_session(
        self, session: Session, *, device_id: str, msg: payloads.SessionMsg, now: datetime
    ) -> list[Callable[[], None]]:
        out = record_session_message(
            session,
            device_id=device_id,
            msg=msg,
            now=now,
            default_duration_s=self.session_default_duration_s,
            checkin_extend_s=self.session_checkin_extend_s,
        )
        fields: dict[str, Any] = {"session_id": msg.session_id, "action": msg.action}
        if out.accepted:
            fields["expected_end"] = rfc3339(out.expected_end) if out.expected_end else None
            return [
                lambda: self.downlink.session(device_id, DownlinkType.SESSION_ACCEPTED, **fields)
            ]
        log.warning(
            "session refused (%s) device_id=%s session_id=%s", out.reason, device_id, msg.session_id
        )
        return [
            lambda: self.downlink.session(
                device_id, DownlinkType.SESSION_REJECTED, reason=out.reason, **fields
            )
        ]

    def on_position(self, device_id: str, position: LastPosition) -> None:
        """A new position from a device (MQTT thread): moving alerts are re-routed."""
        if self.dispatcher is None:
            return
        self._pool.submit(self._moved_safe, device_id, position)

    def _moved_safe(self, device_id: str, position: LastPosition) -> None:
        try:
            self.moved(device_id, position, utcnow())
        except Exception:
            log.exception("re-routing a moving alert failed device_id=%s", device_id)

    def moved(self, device_id: str, position: LastPosition, now: datetime) -> None:
        """Update the device's open alerts with a new position; a new département adds its
        chain (never removes one)."""
        assert self.dispatcher is not None
        directory = referents.current_directory(self.engine)
        index = geo_service.current_index(self.engine)
        with write_scope(self.engine) as session:
            open_alerts = alerts.open_for_device(session, device_id=device_id)
            for alert in open_alerts:
                fix = Fix(
                    position.lat, position.lon, position.acc_m, position.at, position.src or "gps"
                )
                resolved = geo_resolve.resolve_position(
                    PositionInputs(fix=fix, alert_id=alert.alert_id, device_id=device_id),
                    now=now,
                    index=index,
                    default_force=(
                        (lambda d: referent_chains.default_force(directory, d))
                        if directory
                        else None
                    ),
                )
                if not resolved.has_position or "stale_position" in resolved.flags:
                    continue
                current = alerts.departements(session, alert_id=alert.alert_id)
                added = list(geo_resolve.departements_to_add(tuple(current), resolved))
                lifecycle.moved(
                    session,
                    alert=alert,
                    lat=position.lat,
                    lon=position.lon,
                    acc_m=position.acc_m,
                    pos_at=position.at,
                    src=position.src,
                    departements_now=list(resolved.departements),
                    added=added,
                    at=now,
                )
                for dep in added:
                    if directory is not None and alert.dispatched_at is not None:
                        chain = referent_chains.chain_for(
                            directory, dep, resolved.force_for(dep), now
                        )
                        self.dispatcher.add_chain(
                            session, alert_id=alert.alert_id, chain=chain, now=now
                        )
                        log.warning(
                            "alert_id=%s moved into département %s: its chain is added",
                            alert.alert_id,
                            dep,
                        )


def record_session_message(
    session: Session,
    *,
    device_id: str,
    msg: payloads.SessionMsg,
    now: datetime,
    default_duration_s: float | None = None,
    checkin_extend_s: float | None = None,
) -> visits.SessionOutcome:
    """A Session message applied to its visit (``sessions.service.on_message``); when the
    visit's alert is already raised, the message is also recorded on the alert's timeline."""
    out = visits.on_message(
        session,
        device_id=device_id,
        msg=msg,
        now=now,
        default_duration_s=default_duration_s,
        checkin_extend_s=checkin_extend_s,
    )
    note = out.after_alert
    if note is not None:
        alerts.add_event(
            session,
            alert_id=note.alert_id,
            at=now,
            type_=note.event,
            actor=device_id,
            expected_end=note.expected_end.isoformat() if note.expected_end else None,
        )
    return out


def _offer_victim_support(
    session: Session, alert: Alert, *, outcome: str | None, now: datetime
) -> None:
    """After a genuine incident, the victim-support SMS to the alert's worker (once)."""
    if not victim_support.genuine(outcome):
        return
    pair = devices.device_and_worker(session, alert.device_id)
    if pair is None:
        return
    _, worker = pair
    assert worker.id is not None
    queued = victim_support.offer(
        session,
        alert_id=alert.alert_id,
        device_id=alert.device_id,
        departement=alert.departement,
        incident_at=as_utc(alert.created_at),
        worker_id=worker.id,
        phone=worker.phone,
        outcome=outcome,
        now=now,
    )
    if queued:
        alerts.add_event(
            session,
            alert_id=alert.alert_id,
            at=now,
            type_=AlertEventType.VICTIM_SUPPORT_OFFERED,
            actor="server",
        )


def _device_lock_key(device_id: str) -> int:
    return int.from_bytes(
        hashlib.sha256(b"vigie-device\0" + device_id.encode()).digest()[:8], "big", signed=True
    )


def _locked_alert(session: Session, alert_id: str) -> Alert | None:
    # FOR UPDATE on PostgreSQL (nothing on SQLite, whose writers are serialised anyway): an
    # acknowledgement racing with routing waits for it, or routing sees it acknowledged.
    stmt = select(Alert).where(Alert.alert_id == alert_id).with_for_update()
    return session.exec(stmt).first()


def _radio_scan(alert: Alert) -> RadioScan | None:
    """Wi-Fi and cells of the alert, read back from its raw payload (kept as received)."""
    try:
        msg = payloads.parse_uplink("alert", alert.raw.encode())
    except (payloads.PayloadError, ValueError):
        return None
    assert isinstance(msg, payloads.AlertMsg)
    wifi = tuple(WifiAccessPoint(w.bssid, w.rssi) for w in msg.wifi or ())
    cells = tuple(CellTower(c.mcc, c.mnc, c.lac, c.cid, c.rssi) for c in msg.cells or ())
    if not wifi and not cells:
        return None
    return RadioScan(wifi=wifi, cells=cells, measured_at=msg.ts)


def _brief(
    alert: Alert, worker: Worker | None, device: Device | None, resolved: ResolvedPosition
) -> AlertBrief:
    return AlertBrief(
        alert_id=alert.alert_id,
        device_id=alert.device_id,
        kind=alert.kind,
        created_at=as_utc(alert.created_at),
        worker_first_name=_first_name(worker.name) if worker else None,
        worker_role=worker.role if worker else None,
        worker_phone=worker.phone if worker else None,
        commune=resolved.commune_nom,
        departement=resolved.departement,
        place_label=resolved.site_label or (device.site_label if device else None),
        lat=resolved.lat,
        lon=resolved.lon,
        acc_m=resolved.acc_m,
        position_at=resolved.measured_at,
        position_source=resolved.source,
        flags=tuple(sorted(set(alert.flags))),
        duress=alert.duress,
    )
