"""The Alert's state machine: every change of an alert's state goes through one function here.

An alert is ``open`` when stored, ``acknowledged`` when someone takes it in charge, ``cancelled``
when the worker stands it down with her PIN (or confirms a false alarm), ``resolved`` when a
dispatcher closes it, ``expired`` when the retention purge finds it still running past the
alerts' period (nobody can still be helped by it; it is then pseudonymised). Each transition
below checks that the move is allowed from the alert's current state (``TransitionRefused``
names the alert, the move and the state otherwise) and writes its timeline event in the same
transaction, so the state and its history cannot disagree.
Nothing outside this module writes ``Alert.state`` (``tests/test_architecture.py`` checks it).

The presses attached to an incident (``incident_of``) follow their first alert in every move.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import or_, update
from sqlmodel import Session

from alert_server.alerts.models import Alert
from alert_server.alerts.service import (
    IncidentHead,
    Stored,
    add_departement,
    add_event,
    add_events_now,
    count_press,
    event_row,
    store_alert,
)
from vigie.timeutil import as_utc
from vigie.vocabulary import ACTIVE_STATES, AlertEventType, AlertState

if TYPE_CHECKING:
    from vigie.persistence import Db


class Transition(StrEnum):
    RECEIVE = "receive"
    ACKNOWLEDGE = "acknowledge"
    CANCEL = "cancel"
    RESOLVE = "resolve"
    DISPATCH = "dispatch"
    EXPIRE = "expire"


# From which states each move may start.
ALLOWED_FROM: Final[Mapping[Transition, frozenset[AlertState]]] = {
    Transition.RECEIVE: frozenset(ACTIVE_STATES),  # a new alert, or a press joining its incident
    Transition.ACKNOWLEDGE: frozenset({AlertState.OPEN}),
    Transition.CANCEL: frozenset(ACTIVE_STATES),
    Transition.RESOLVE: frozenset({AlertState.OPEN, AlertState.ACKNOWLEDGED, AlertState.CANCELLED}),
    Transition.DISPATCH: frozenset({AlertState.OPEN}),
    Transition.EXPIRE: frozenset(ACTIVE_STATES),
}


class TransitionRefused(ValueError):
    """A move the state machine does not allow from the alert's current state."""

    def __init__(self, alert_id: str, transition: Transition, state: str) -> None:
        self.alert_id, self.transition, self.state = alert_id, transition, state
        allowed = ", ".join(sorted(ALLOWED_FROM[transition]))
        super().__init__(
            f"alerte {alert_id} : « {transition} » impossible depuis l'état « {state} » "
            f"(seulement depuis : {allowed})"
        )


def allowed(alert: Alert | IncidentHead, transition: Transition) -> bool:
    """Whether ``transition`` may be applied to ``alert`` now."""
    return alert.state in ALLOWED_FROM[transition]


def _check(alert: Alert | IncidentHead, transition: Transition) -> None:
    if not allowed(alert, transition):
        raise TransitionRefused(alert.alert_id, transition, alert.state)


def _incident(alert_id: str) -> Any:
    return or_(Alert.alert_id == alert_id, Alert.incident_of == alert_id)  # type: ignore[arg-type]


# --- receive ------------------------------------------------------------------------------


def receive(
    session: Db,
    *,
    values: dict[str, Any],
    incident: Alert | IncidentHead | None = None,
    event: Mapping[str, Any] | None = None,
) -> Stored:
    """Store a new alert (``open``), or a press joining ``incident``: it takes the incident's
    state, and the incident's first alert counts one more press (``Stored.presses``, flagged
    for the dispatcher). A repeat of an alert already stored changes nothing.

    ``event``: the ``received`` event's time, actor and details, written when the alert is new
    (None: no event, for the minimal record kept when the message itself cannot be read); a
    press joining an incident also writes ``press_merged`` on the incident's first alert, both
    events in one execution. A new alert or press is written with Core statements: this runs
    for every press the ingest writer stores.
    """
    if incident is not None:
        _check(incident, Transition.RECEIVE)
        state = AlertState(incident.state)
    else:
        state = AlertState.OPEN
    if incident is not None and event is None:
        raise TypeError("a press joining an incident is stored with its event (its time)")
    stored = store_alert(session, values={**values, "state": state})
    if not stored.created or event is None:
        return stored
    device_alert_id = values.get("device_alert_id", values["alert_id"])
    detail = dict(event)
    if stored.alert_id != device_alert_id:
        # Stored under a derived key (another device had used this id): keep the device's.
        detail["device_alert_id"] = device_alert_id
    rows = [event_row(alert_id=stored.alert_id, type_=AlertEventType.RECEIVED, **detail)]
    if incident is None:
        add_events_now(session, rows)
        return stored
    at = detail["at"]
    presses = _count_press(session, primary=incident, at=at)
    rows.append(
        event_row(
            alert_id=incident.alert_id,
            at=at,
            type_=AlertEventType.PRESS_MERGED,
            member=stored.alert_id,
            presses=presses,
        )
    )
    add_events_now(session, rows)
    return replace(stored, presses=presses)


def _count_press(session: Db, *, primary: Alert | IncidentHead, at: datetime) -> int:
    """One more press on the incident's first alert (its last press, and the flag the
    dispatcher sees); returns its number of presses."""
    last = max(as_utc(at), as_utc(primary.last_press_at)) if primary.last_press_at else at
    return count_press(
        session,
        row_id=primary.id,
        last_press_at=last,
        flags=sorted({*primary.flags, "repeated_presses"}),
    )


# --- position -----------------------------------------------------------------------------


def located(
    session: Session,
    *,
    alert: Alert,
    concerns: Mapping[str, str],
    at: datetime,
    **detail: Any,
) -> None:
    """The alert's first routing position: the départements it concerns (``concerns``, with
    their reason) and the ``located`` event. The position fields are set by the caller."""
    session.add(alert)
    for dep, reason in concerns.items():
        add_departement(session, alert_id=alert.alert_id, departement=dep, at=at, reason=reason)
    add_event(session, alert_id=alert.alert_id, at=at, type_=AlertEventType.LOCATED, **detail)


def moved(
    session: Session,
    *,
    alert: Alert,
    lat: float,
    lon: float,
    acc_m: float | None,
    pos_at: datetime | None,
    src: str | None,
    departements_now: list[str],
    added: list[str],
    at: datetime,
) -> None:
    """A new position of a running alert; ``added``: départements it moved into."""
    alert.pos_lat, alert.pos_lon = lat, lon
    alert.pos_acc_m, alert.pos_at = acc_m, pos_at
    alert.pos_src = src
    session.add(alert)
    add_event(
        session,
        alert_id=alert.alert_id,
        at=at,
        type_=AlertEventType.POSITION,
        lat=lat,
        lon=lon,
        acc_m=acc_m,
        departements=departements_now,
    )
    for dep in added:
        add_departement(session, alert_id=alert.alert_id, departement=dep, at=at, reason="moved")


# --- escalation ---------------------------------------------------------------------------


def dispatched(session: Session, *, alert: Alert, at: datetime, chains: list[Any]) -> None:
    """The escalation was handed to dispatch (once: the sweep looks for alerts without it)."""
    _check(alert, Transition.DISPATCH)
    if alert.dispatched_at is not None:
        raise TransitionRefused(alert.alert_id, Transition.DISPATCH, "dispatched")
    alert.dispatched_at = at
    session.add(alert)
    add_event(
        session, alert_id=alert.alert_id, at=at, type_=AlertEventType.DISPATCHED, chains=chains
    )


def exhausted(session: Session, *, alert: Alert, at: datetime) -> None:
    """Nobody acknowledged the whole escalation: flagged once, recorded once."""
    if "exhausted" in alert.flags:
        return
    alert.flags = sorted({*alert.flags, "exhausted"})
    session.add(alert)
    add_event(session, alert_id=alert.alert_id, at=at, type_=AlertEventType.EXHAUSTED)


def flag(session: Session, *, alert: Alert, flags: set[str]) -> None:
    """Add flags for the dispatcher (no state change, no event: the caller's event says why)."""
    if flags - set(alert.flags):
        alert.flags = sorted({*alert.flags, *flags})
        session.add(alert)


# --- acknowledge --------------------------------------------------------------------------


def acknowledge(session: Session, *, alert_id: str, actor: str, via: str, at: datetime) -> bool:
    """Compare-and-set open → acknowledged; True only for the one caller that wins.

    Not an error when it loses: an SMS reply, a key press and a console click may race, the
    first wins and the others see False. The presses attached to the incident follow it.
    """
    values = {"state": AlertState.ACKNOWLEDGED, "acknowledged_at": at, "acknowledged_by": actor}
    result = session.connection().execute(
        update(Alert)
        .where(Alert.alert_id == alert_id)  # type: ignore[arg-type]
        .where(Alert.state == AlertState.OPEN)  # type: ignore[arg-type]
        .values(**values)
    )
    won = result.rowcount == 1
    if won:
        session.connection().execute(
            update(Alert)
            .where(Alert.incident_of == alert_id)  # type: ignore[arg-type]
            .where(Alert.state == AlertState.OPEN)  # type: ignore[arg-type]
            .values(**values)
        )
        add_event(
            session,
            alert_id=alert_id,
            at=at,
            type_=AlertEventType.ACKNOWLEDGED,
            actor=actor,
            via=via,
        )
    return won


# --- closing ------------------------------------------------------------------------------


def _close(
    session: Session,
    *,
    alert: Alert,
    state: AlertState,
    at: datetime,
    outcome: str | None = None,
    note: str | None = None,
) -> None:
    values: dict[str, Any] = {"state": state, "resolved_at": at}
    if outcome is not None:
        values["outcome"] = outcome
    if note is not None:
        values["note"] = note
    session.connection().execute(
        update(Alert)
        .where(_incident(alert.alert_id))
        .where(Alert.state != AlertState.RESOLVED)  # type: ignore[arg-type]
        .values(**values)
    )
    session.refresh(alert)


def cancel(session: Session, *, alert: Alert, at: datetime, actor: str) -> None:
    """The worker's cancel PIN stands the incident down."""
    _check(alert, Transition.CANCEL)
    _close(session, alert=alert, state=AlertState.CANCELLED, at=at)
    add_event(session, alert_id=alert.alert_id, at=at, type_=AlertEventType.CANCELLED, actor=actor)


def verified_false_alarm(session: Session, *, alert: Alert, at: datetime, detail: str) -> None:
    """The worker confirmed on her own phone that all is well (an automatic alarm).

    The alert is cancelled, outcome ``false_alarm`` pre-filled for the statistics, unless it
    is under duress or already closed; the confirmation is recorded in every case."""
    if allowed(alert, Transition.CANCEL) and not alert.duress:
        _close(session, alert=alert, state=AlertState.CANCELLED, at=at, outcome="false_alarm")
    add_event(
        session,
        alert_id=alert.alert_id,
        at=at,
        type_=AlertEventType.VERIFIED_FALSE_ALARM,
        actor="worker",
        via="voice",
        detail=detail,
    )


def duress(session: Session, *, alert: Alert, at: datetime, actor: str) -> None:
    """The duress PIN: the incident is marked (every press of it), and recorded. Its state
    does not change: to the device it looks like a cancel, the escalation goes on."""
    session.connection().execute(update(Alert).where(_incident(alert.alert_id)).values(duress=True))
    session.refresh(alert)
    alert.flags = sorted({*alert.flags, "duress"})
    session.add(alert)
    add_event(session, alert_id=alert.alert_id, at=at, type_=AlertEventType.DURESS, actor=actor)


def cancel_after_duress(session: Session, *, alert: Alert, at: datetime, actor: str) -> None:
    """A cancel typed after the duress PIN stands nothing down (it may be typed under the same
    threat); recorded."""
    add_event(
        session,
        alert_id=alert.alert_id,
        at=at,
        type_=AlertEventType.CANCEL_AFTER_DURESS,
        actor=actor,
    )


def resolve(
    session: Session,
    *,
    alert: Alert,
    at: datetime,
    actor: str,
    outcome: str,
    note: str | None,
) -> None:
    """A dispatcher closes the incident, with its outcome."""
    _check(alert, Transition.RESOLVE)
    _close(session, alert=alert, state=AlertState.RESOLVED, at=at, outcome=outcome, note=note)
    add_event(
        session,
        alert_id=alert.alert_id,
        at=at,
        type_=AlertEventType.RESOLVED,
        actor=actor,
        outcome=outcome,
    )


def expire(session: Session, *, alert_id: str, at: datetime) -> bool:
    """Close an alert left running past the retention period as ``expired``, with its timeline
    line. Compare-and-set: True when it was still open or acknowledged (and is now expired),
    False when it had been closed meanwhile (nothing written). The presses attached to it are
    expired with it."""
    values = {"state": AlertState.EXPIRED}
    live = Alert.state.in_(ALLOWED_FROM[Transition.EXPIRE])  # type: ignore[attr-defined]
    result = session.connection().execute(
        update(Alert)
        .where(Alert.alert_id == alert_id)  # type: ignore[arg-type]
        .where(live)
        .values(**values)
    )
    if result.rowcount != 1:
        return False
    session.connection().execute(
        update(Alert)
        .where(Alert.incident_of == alert_id)  # type: ignore[arg-type]
        .where(live)
        .values(**values)
    )
    add_event(session, alert_id=alert_id, at=at, type_=AlertEventType.EXPIRED)
    return True
