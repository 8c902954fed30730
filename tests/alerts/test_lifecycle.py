"""The Alert's state machine (``alert_server/alerts/lifecycle.py``): every allowed move lands in
its state with its timeline event, every refused move raises a clear error and writes nothing,
and no module but the lifecycle writes an alert's state."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlmodel import Session, SQLModel, select

from alert_server.alerts import lifecycle
from alert_server.alerts.lifecycle import Transition, TransitionRefused
from alert_server.alerts.models import Alert, AlertDepartement, AlertEvent
from vigie.vocabulary import AlertEventType, AlertState

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = create_engine("sqlite://")
    tables = [m.__table__ for m in (Alert, AlertEvent, AlertDepartement)]  # type: ignore[attr-defined]
    SQLModel.metadata.create_all(eng, tables=tables)
    yield eng
    eng.dispose()


def _values(alert_id: str, **more: object) -> dict[str, object]:
    return {
        "alert_id": alert_id,
        "device_id": "nurse-1",
        "kind": "sos",
        "duress": False,
        "flags": [],
        "created_at": T0,
        "raw": "{}",
        **more,
    }


def _new(session: Session, alert_id: str = "a-1") -> Alert:
    stored = lifecycle.receive(session, values=_values(alert_id), event={"at": T0, "actor": "x"})
    assert stored.created
    alert = session.exec(select(Alert).where(Alert.alert_id == alert_id)).one()
    return alert


def _events(session: Session, alert_id: str) -> list[str]:
    stmt = select(AlertEvent.type).where(AlertEvent.alert_id == alert_id).order_by(AlertEvent.id)  # type: ignore[arg-type]
    return list(session.exec(stmt))


def _at_state(session: Session, state: AlertState) -> Alert:
    alert = _new(session)
    if state is AlertState.ACKNOWLEDGED:
        assert lifecycle.acknowledge(session, alert_id="a-1", actor="R", via="sms", at=T0)
    elif state is AlertState.CANCELLED:
        lifecycle.cancel(session, alert=alert, at=T0, actor="nurse-1")
    elif state is AlertState.RESOLVED:
        lifecycle.resolve(session, alert=alert, at=T0, actor="op", outcome="other", note=None)
    elif state is AlertState.EXPIRED:
        assert lifecycle.expire(session, alert_id="a-1", at=T0)
    session.refresh(alert)
    assert alert.state == state
    return alert


def test_receive_stores_an_open_alert_with_its_event(engine: Engine) -> None:
    with Session(engine) as s:
        alert = _new(s)
        assert alert.state == AlertState.OPEN
        assert _events(s, "a-1") == [AlertEventType.RECEIVED]
        # A repeat changes nothing and writes no second event.
        again = lifecycle.receive(s, values=_values("a-1"), event={"at": T0})
        assert not again.created and _events(s, "a-1") == [AlertEventType.RECEIVED]


def test_a_press_joining_an_incident_takes_its_state(engine: Engine) -> None:
    with Session(engine) as s:
        first = _new(s)
        assert lifecycle.acknowledge(s, alert_id="a-1", actor="R", via="sms", at=T0)
        s.refresh(first)
        lifecycle.receive(
            s, values=_values("a-2", incident_of="a-1"), incident=first, event={"at": T0}
        )
        member = s.exec(select(Alert).where(Alert.alert_id == "a-2")).one()
        assert member.state == AlertState.ACKNOWLEDGED


def test_acknowledge_is_won_once(engine: Engine) -> None:
    with Session(engine) as s:
        _new(s)
        assert lifecycle.acknowledge(s, alert_id="a-1", actor="R1", via="sms", at=T0)
        assert not lifecycle.acknowledge(s, alert_id="a-1", actor="R2", via="voice", at=T0)
        assert _events(s, "a-1") == [AlertEventType.RECEIVED, AlertEventType.ACKNOWLEDGED]


ALLOWED = [
    (Transition.CANCEL, AlertState.OPEN, AlertState.CANCELLED),
    (Transition.CANCEL, AlertState.ACKNOWLEDGED, AlertState.CANCELLED),
    (Transition.RESOLVE, AlertState.OPEN, AlertState.RESOLVED),
    (Transition.RESOLVE, AlertState.ACKNOWLEDGED, AlertState.RESOLVED),
    (Transition.RESOLVE, AlertState.CANCELLED, AlertState.RESOLVED),
    (Transition.EXPIRE, AlertState.OPEN, AlertState.EXPIRED),
    (Transition.EXPIRE, AlertState.ACKNOWLEDGED, AlertState.EXPIRED),
]
REFUSED = [
    (Transition.CANCEL, AlertState.CANCELLED),
    (Transition.CANCEL, AlertState.RESOLVED),
    (Transition.RESOLVE, AlertState.RESOLVED),
    (Transition.RESOLVE, AlertState.EXPIRED),
    (Transition.CANCEL, AlertState.EXPIRED),
    (Transition.DISPATCH, AlertState.ACKNOWLEDGED),
    (Transition.DISPATCH, AlertState.CANCELLED),
    (Transition.DISPATCH, AlertState.RESOLVED),
]


def _apply(s: Session, transition: Transition, alert: Alert) -> None:
    if transition is Transition.CANCEL:
        lifecycle.cancel(s, alert=alert, at=T0 + timedelta(seconds=1), actor="nurse-1")
    elif transition is Transition.RESOLVE:
        lifecycle.resolve(
            s, alert=alert, at=T0 + timedelta(seconds=1), actor="op", outcome="other", note=None
        )
    elif transition is Transition.EXPIRE:
        assert lifecycle.expire(s, alert_id=alert.alert_id, at=T0 + timedelta(seconds=1))
    else:
        lifecycle.dispatched(s, alert=alert, at=T0 + timedelta(seconds=1), chains=[])


@pytest.mark.parametrize(("transition", "start", "end"), ALLOWED)
def test_allowed_moves(
    engine: Engine, transition: Transition, start: AlertState, end: AlertState
) -> None:
    with Session(engine) as s:
        alert = _at_state(s, start)
        before = _events(s, "a-1")
        _apply(s, transition, alert)
        s.refresh(alert)
        assert alert.state == end
        assert _events(s, "a-1") == [*before, AlertEventType(end)]


@pytest.mark.parametrize(("transition", "start"), REFUSED)
def test_refused_moves_name_the_alert_and_write_nothing(
    engine: Engine, transition: Transition, start: AlertState
) -> None:
    with Session(engine) as s:
        alert = _at_state(s, start)
        before = _events(s, "a-1")
        with pytest.raises(TransitionRefused, match="a-1") as refused:
            _apply(s, transition, alert)
        assert refused.value.state == start and refused.value.transition == transition
        s.refresh(alert)
        assert alert.state == start
        assert _events(s, "a-1") == before


def test_expire_takes_the_incident_presses_along(engine: Engine) -> None:
    with Session(engine) as s:
        first = _new(s)
        lifecycle.receive(
            s, values=_values("a-2", incident_of="a-1"), incident=first, event={"at": T0}
        )
        assert lifecycle.expire(s, alert_id="a-1", at=T0 + timedelta(days=400))
        s.expire_all()  # the rows were changed by an UPDATE, not through these objects
        states = {a.alert_id: a.state for a in s.exec(select(Alert)).all()}
        assert states == {"a-1": AlertState.EXPIRED, "a-2": AlertState.EXPIRED}
        assert _events(s, "a-1")[-1] == AlertEventType.EXPIRED


@pytest.mark.parametrize("start", [AlertState.CANCELLED, AlertState.RESOLVED, AlertState.EXPIRED])
def test_expire_leaves_a_closed_alert_alone(engine: Engine, start: AlertState) -> None:
    with Session(engine) as s:
        alert = _at_state(s, start)
        before = _events(s, "a-1")
        assert not lifecycle.expire(s, alert_id="a-1", at=T0 + timedelta(seconds=1))
        s.refresh(alert)
        assert alert.state == start
        assert _events(s, "a-1") == before


def test_dispatched_once(engine: Engine) -> None:
    with Session(engine) as s:
        alert = _new(s)
        lifecycle.dispatched(s, alert=alert, at=T0, chains=[])
        with pytest.raises(TransitionRefused):
            lifecycle.dispatched(s, alert=alert, at=T0, chains=[])
        assert _events(s, "a-1").count(AlertEventType.DISPATCHED) == 1


def test_duress_keeps_the_state_and_a_later_cancel_is_only_recorded(engine: Engine) -> None:
    with Session(engine) as s:
        alert = _new(s)
        lifecycle.duress(s, alert=alert, at=T0, actor="nurse-1")
        assert alert.duress and alert.state == AlertState.OPEN and "duress" in alert.flags
        lifecycle.verified_false_alarm(s, alert=alert, at=T0, detail="ok")
        s.refresh(alert)
        assert alert.state == AlertState.OPEN  # never stood down under duress
        assert _events(s, "a-1")[-1] == AlertEventType.VERIFIED_FALSE_ALARM


def test_verified_false_alarm_cancels_with_its_outcome(engine: Engine) -> None:
    with Session(engine) as s:
        alert = _new(s)
        lifecycle.verified_false_alarm(s, alert=alert, at=T0, detail="ok")
        assert alert.state == AlertState.CANCELLED and alert.outcome == "false_alarm"


def test_exhausted_is_flagged_and_recorded_once(engine: Engine) -> None:
    with Session(engine) as s:
        alert = _new(s)
        lifecycle.exhausted(s, alert=alert, at=T0)
        lifecycle.exhausted(s, alert=alert, at=T0)
        assert _events(s, "a-1").count(AlertEventType.EXHAUSTED) == 1
        assert "exhausted" in alert.flags


def _sets_state(node: ast.AST) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return (
            node.func.attr == "values"
            and any(k.arg == "state" for k in node.keywords)
            and "update(Alert)" in ast.unparse(node.func.value)
        )
    if isinstance(node, ast.Dict):
        return any(
            isinstance(k, ast.Constant)
            and k.value == "state"
            and ("AlertState" in ast.unparse(v) or "'open'" in ast.unparse(v))
            for k, v in zip(node.keys, node.values, strict=True)
        )
    if isinstance(node, ast.Assign | ast.AugAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return "AlertState" in ast.unparse(node.value) and any(
            isinstance(t, ast.Attribute) and t.attr == "state"
            for target in targets
            for t in ast.walk(target)
        )
    return False


def _writes_alert_state(tree: ast.AST) -> list[int]:
    """Lines that set an alert's state: ``x.state = …`` on an Alert, ``update(Alert)…
    .values(state=…)``, or a ``"state"`` key given to an alert insert."""
    return sorted(getattr(n, "lineno", 0) for n in ast.walk(tree) if _sets_state(n))


def test_only_the_lifecycle_writes_an_alert_state() -> None:
    offenders = []
    for path in sorted((ROOT / "alert_server").rglob("*.py")):
        if path.name == "lifecycle.py" or "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [f"{path.relative_to(ROOT)}:{n}" for n in _writes_alert_state(tree)]
    assert offenders == []


def test_the_state_write_detector_sees_a_write() -> None:
    sample = (
        "update(Alert).where(x).values(state=AlertState.CANCELLED)\n"
        "row = {'state': AlertState.OPEN}\n"
        "alert.state = AlertState.RESOLVED\n"
    )
    assert _writes_alert_state(ast.parse(sample)) == [1, 2, 3]


def test_presses_counted_in_core_are_seen_by_an_orm_copy_of_the_same_transaction(
    engine: Engine,
) -> None:
    """The ingest writer counts presses with Core statements; a cancel earlier in the same
    batch may hold the incident's first alert as an ORM object. That copy must see the new
    count and flags, so that a later ORM change does not write the old ones back."""
    from alert_server.alerts import service as alerts

    with Session(engine) as s:
        loaded = _new(s)
        loaded.last_press_at = T0
        s.add(loaded)
        for n in (2, 3):
            head = alerts.incident_primary(
                s, device_id="nurse-1", kind="sos", since=T0 - timedelta(minutes=2)
            )
            assert head is not None and head.alert_id == "a-1"
            at = T0 + timedelta(seconds=n)
            stored = lifecycle.receive(
                s, values=_values(f"a-{n}", incident_of="a-1"), incident=head, event={"at": at}
            )
            assert stored.presses == n
        # The ORM copy now reads the database's values…
        assert loaded.presses == 3 and "repeated_presses" in loaded.flags
        # …so an ORM change of another field keeps them.
        loaded.note = "vu"
        s.add(loaded)
        s.commit()
    with Session(engine) as s:
        row = s.exec(select(Alert).where(Alert.alert_id == "a-1")).one()
        assert row.presses == 3 and row.flags == ["repeated_presses"] and row.note == "vu"
        assert row.last_press_at is not None
        assert _events(s, "a-1").count(AlertEventType.PRESS_MERGED) == 2
