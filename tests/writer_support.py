"""The ingest writer in process, without broker or server: for the tests that check what it
commits (tests/test_ingest_fair.py) and the benchmark that times it (benchmarks/writer.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine

from alert_server.devices.presence import PresenceTracker
from alert_server.downlink import Downlink
from alert_server.ingest.handler import Inbound, Ingestor
from alert_server.metrics import Metrics
from alert_server.pipeline import Pipeline
from vigie.timeutil import utcnow


class NoPinChecks:
    """The PIN gate of a writer that is given no cancel."""

    def submit(self, device_id: str, pin: str, done: Callable[..., None]) -> None:
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


@contextmanager
def in_process_writer(engine: Engine) -> Iterator[Writer]:
    """An ``Ingestor`` on a migrated ``engine``, with the real pipeline (no dispatcher) and a
    downlink that records what it would publish."""
    sent: list[str] = []
    downlink = Downlink(lambda topic, payload, **_: sent.append(topic))
    presence = PresenceTracker(engine, 60.0)
    pipeline = Pipeline(engine, presence=presence, downlink=downlink)
    ingestor = Ingestor(
        engine,
        presence=presence,
        pipeline=pipeline,
        metrics=Metrics(),
        downlink=downlink,
        pins=NoPinChecks(),
    )
    try:
        yield Writer(ingestor, sent)
    finally:
        ingestor.stop()  # gives back the writer's kept connection
        pipeline.shutdown()


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
