"""The PIN gate's stop: bounded, fair, and every cancel answered.

The checks here are stand-ins for the two argon2 hashes, driven by a fake monotonic clock: each
check "takes" 1.5 s of it, so the stop's bound is reached after a known number of checks and
nothing depends on how fast this machine runs.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlmodel import Session, select

from alert_server.alerts.models import Alert, AlertEvent
from alert_server.db import migrate
from alert_server.devices.pins import PinGate
from tests.writer_support import alert_item, in_process_writer
from vigie import topics
from vigie.persistence import make_engine
from vigie.vocabulary import AlertEventType, AlertState, PinVerdict


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Gate(PinGate):
    """A gate whose checks take 1.5 s of the fake clock; the first one waits for ``go``."""

    def __init__(
        self, clock: _Clock, engine: Engine | None = None, verdict: PinVerdict = PinVerdict.CANCEL
    ) -> None:
        super().__init__(engine or create_engine("sqlite://"), monotonic=clock)
        self.fake = clock
        self.verdict = verdict
        self.started = threading.Event()
        self.go = threading.Event()
        self.order: list[str] = []

    def check(self, device_id: str, pin: str, now: datetime) -> PinVerdict:
        self.order.append(f"{device_id}:{pin}")
        self.started.set()
        assert self.go.wait(30), "the test never let the first check finish"
        self.fake.now += 1.5
        return self.verdict


def _until(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def _collect(answers: list[tuple[str, PinVerdict]], label: str):
    return lambda verdict: answers.append((label, verdict))


def test_a_stop_checks_devices_in_turn_within_its_bound_and_answers_the_rest_once_per_alert():
    clock = _Clock()
    gate = _Gate(clock)
    answers: list[tuple[str, PinVerdict]] = []
    gate.start()
    try:
        # One device floods cancels for two of its alerts; another sends one.
        for i in range(50):
            subject = "a1" if i < 48 else "a2"
            gate.submit("flood", f"p{i}", _collect(answers, f"flood:{i}"), subject=subject)
        assert gate.started.wait(30)  # flood:0 is being checked
        gate.submit("honest", "p0", _collect(answers, "honest:0"), subject="h1")

        stopper = threading.Thread(target=gate.stop, kwargs={"drain_s": 2.0})
        stopper.start()
        _until(lambda: gate._drain_until is not None, "the stop's bound set (at fake time 0)")
        gate.go.set()
        stopper.join(30)
        assert not stopper.is_alive(), "the stop did not end"
    finally:
        gate.go.set()
        gate.stop(drain_s=0)

    assert not gate.alive()
    # flood:0 was in progress (ends at 1.5 s); the other device went next, before the flood's
    # second cancel (ends at 3.0 s, past the bound); nothing more was hashed.
    assert gate.order == ["flood:p0", "honest:p0"]
    assert gate.checked == 2
    assert gate.dropped == 49
    # Every cancel is answered once per alert: the dropped ones "unverifiable" (the worker
    # types her PIN again; the alert keeps escalating), never silence.
    assert sorted(answers) == sorted(
        [
            ("flood:0", PinVerdict.CANCEL),
            ("honest:0", PinVerdict.CANCEL),
            ("flood:47", PinVerdict.UNVERIFIABLE),  # the last cancel of alert a1
            ("flood:49", PinVerdict.UNVERIFIABLE),  # the last cancel of alert a2
        ]
    )
    assert gate.pending() == 0


def test_a_stop_within_its_bound_checks_every_cancel_submitted():
    clock = _Clock()
    gate = _Gate(clock)
    gate.go.set()
    answers: list[tuple[str, PinVerdict]] = []
    gate.start()
    for i in range(3):
        gate.submit(f"d{i}", "p", _collect(answers, f"d{i}"), subject="a")
    gate.stop(drain_s=10.0)  # three checks of 1.5 s each end at 4.5 s, within the bound

    assert not gate.alive()
    assert gate.checked == 3 and gate.dropped == 0
    assert sorted(answers) == [(f"d{i}", PinVerdict.CANCEL) for i in range(3)]


def test_a_server_stopping_with_a_flood_of_cancels_tells_the_device_and_keeps_escalating(
    tmp_path: Path,
) -> None:
    """Through the real ingest writer: the cancels a stop leaves unchecked become one
    ``cancel.rejected`` (``unverifiable``) on the device and one event on the alert, which
    stays open; nothing is stood down on a PIN that was never checked."""
    engine = make_engine(f"sqlite:///{tmp_path / 'vigie.db'}")
    migrate(engine)
    clock = _Clock()
    gate = _Gate(clock, engine, verdict=PinVerdict.WRONG)
    try:
        with in_process_writer(engine, pins=gate) as writer:
            ingestor = writer.ingestor
            acked: list[str] = []
            press = alert_item("flood", acked.append)
            alert_id = json.loads(press.payload)["alert_id"]
            ingestor.submit(press)
            gate.start()
            ingestor.start()
            _until(lambda: acked == [alert_id], "the alert acknowledged")
            cancel = json.dumps(
                {"v": 1, "alert_id": alert_id, "ts": "2026-11-22T18:04:09Z", "pin": "0000"}
            ).encode()
            broker_acks: list[int] = []
            for _ in range(20):
                ingestor.handle(
                    topics.uplink("flood", "cancel"), cancel, False, lambda: broker_acks.append(1)
                )
            assert gate.started.wait(30)
            stopper = threading.Thread(target=ingestor.stop)
            stopper.start()
            _until(lambda: gate._drain_until is not None, "the stop's bound set")
            gate.go.set()
            stopper.join(30)
            assert not stopper.is_alive(), "the stop did not end"
            sent = list(zip(writer.sent, writer.bodies, strict=True))
    finally:
        gate.go.set()
        engine.dispose()

    assert len(broker_acks) == 20
    assert gate.checked == 2 and gate.dropped == 18
    to_device = [json.loads(body) for topic, body in sent if topic == topics.cmd("flood")]
    rejected = [m["reason"] for m in to_device if m["type"] == "cancel.rejected"]
    assert rejected == ["wrong_pin", "wrong_pin", "unverifiable"]
    assert not any(m["type"] == "alert.cancelled" for m in to_device)
    with Session(engine) as session:
        alert = session.exec(select(Alert).where(Alert.device_alert_id == alert_id)).one()
        assert alert.state not in (AlertState.CANCELLED, AlertState.RESOLVED)
        events = session.exec(
            select(AlertEvent.type).where(AlertEvent.alert_id == alert.alert_id)
        ).all()
    assert events.count(AlertEventType.PIN_WRONG) == 2
    assert events.count(AlertEventType.PIN_UNVERIFIABLE) == 1
