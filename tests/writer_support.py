"""The ingest writer in process, without broker or server: for the tests that check what it
commits (tests/test_ingest_fair.py) and the benchmark that times it (benchmarks/writer.py)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine

from alert_server.devices.presence import PresenceTracker
from alert_server.downlink import Downlink
from alert_server.ingest import handler
from alert_server.ingest.handler import Inbound, Ingestor
from alert_server.metrics import Metrics
from alert_server.pipeline import Pipeline
from vigie.timeutil import utcnow


class NoPinChecks:
    """The PIN gate of a writer that is given no cancel."""

    def submit(
        self, device_id: str, pin: str, done: Callable[..., None], *, subject: str = ""
    ) -> None:
        raise AssertionError("no cancel expected here")

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class Writer:
    ingestor: Ingestor
    # The topics the downlink published on, in order (receipts and the like).
    sent: list[str]
    # What was published on them, in the same order.
    bodies: list[bytes]


@contextmanager
def in_process_writer(engine: Engine, pins: handler.PinChecks | None = None) -> Iterator[Writer]:
    """An ``Ingestor`` on a migrated ``engine``, with the real pipeline (no dispatcher) and a
    downlink that records what it would publish; ``pins`` checks cancels (none by default)."""
    sent: list[str] = []
    bodies: list[bytes] = []

    def publish(topic: str, payload: bytes, **_: object) -> None:
        sent.append(topic)
        bodies.append(payload)

    downlink = Downlink(publish)
    presence = PresenceTracker(engine, 60.0)
    pipeline = Pipeline(engine, presence=presence, downlink=downlink)
    ingestor = Ingestor(
        engine,
        presence=presence,
        pipeline=pipeline,
        metrics=Metrics(),
        downlink=downlink,
        pins=pins if pins is not None else NoPinChecks(),
    )
    try:
        yield Writer(ingestor, sent, bodies)
    finally:
        ingestor.stop()  # gives back the writer's kept connection
        pipeline.shutdown()


def writer_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The back-off sleeps of the writer's retries run on this (the test's) thread, recorded
    instead of slept. ``time.sleep`` is the process's own: every other thread (a pipeline, a
    broker client left by an earlier test of this worker) still sleeps for real. Recording
    theirs too made the "no sleep" check fail at random, and a thread looping on a sleep that
    returned at once filled the list until its report took minutes to write."""
    sleeps: list[float] = []
    real_sleep = time.sleep
    test_thread = threading.get_ident()

    def sleep(seconds: float) -> None:
        if threading.get_ident() == test_thread:
            sleeps.append(seconds)
        else:
            real_sleep(seconds)

    monkeypatch.setattr(handler.time, "sleep", sleep)
    return sleeps


def alert_item(device_id: str, ack: Callable[[str], None] | None = None) -> Inbound:
    """An SOS from ``device_id`` with a fresh alert_id, as the link hands it over; ``ack``
    receives the alert_id when the writer acknowledges it."""
    alert_id = str(uuid.uuid4())
    body = {
        "v": 1,
        "alert_id": alert_id,
        "kind": "sos",
        "ts": "2026-11-22T18:04:05Z",
        "pos": {"lat": 43.2965, "lon": 5.3698, "acc_m": 12, "src": "gps"},
    }
    done = (lambda: ack(alert_id)) if ack is not None else (lambda: None)
    return Inbound(device_id, "alert", json.dumps(body).encode(), done, utcnow())
