"""The server's log: JSON lines, third-party chatter silenced, repeats summarised at most once
a minute, and an idle steady state of at most one line a minute (an injectable clock: no
waiting, no timing assertion)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from alert_server.logging_setup import LogSetup, configure
from dispatch.store import alog


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def setup() -> Iterator[tuple[LogSetup, io.StringIO, Clock]]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream, clock = io.StringIO(), Clock()
    s = configure("json", stream=stream, clock=clock)
    try:
        yield s, stream, clock
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_structured_fields(setup: tuple[LogSetup, io.StringIO, Clock]) -> None:
    _, stream, _ = setup
    alog(logging.INFO, "sms sent", "a-1", notification=7, to="+33612345678")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("alert_server.x").exception("échec")
    first, second = lines(stream)
    assert first["alert_id"] == "a-1" and first["notification"] == 7
    assert first["to"] == "+33612345678" and first["level"] == "INFO"
    assert str(first["msg"]).startswith("sms sent")
    assert second["level"] == "ERROR" and "RuntimeError: boom" in str(second["exc"])


def test_third_party_chatter_is_silenced(setup: tuple[LogSetup, io.StringIO, Clock]) -> None:
    _, stream, _ = setup
    for name in ("apscheduler.executors.default", "twilio.http_client", "httpx", "uvicorn.access"):
        logging.getLogger(name).info("Running job / HTTP Request / GET /healthz 200")
    logging.getLogger("twilio.http_client").warning("provider answered 500")
    assert [line["logger"] for line in lines(stream)] == ["twilio.http_client"]


def test_deferrals_are_summarised_once_a_minute(
    setup: tuple[LogSetup, io.StringIO, Clock],
) -> None:
    s, stream, clock = setup
    for i in range(42):  # 42 deferrals for one number within 42 s
        alog(logging.INFO, "rate limited, deferred", f"a-{i}", to="+33612345678",
             until=f"2026-12-02T10:{i:02d}:00")  # fmt: skip
        clock.t += 1
    alog(logging.INFO, "rate limited, deferred", "b", to="+33698765432", until="x")
    assert len(lines(stream)) == 2  # the first of each number only
    clock.t += 60
    assert s.summariser.flush() == 1
    summary = lines(stream)[-1]
    assert summary["msg"] == "41 SMS différés pour +33612345678, prochain à 2026-12-02T10:41:00"
    assert summary["repeated"] == 41
    assert s.summariser.flush() == 0  # said once


def test_idle_steady_state_is_at_most_one_line_a_minute(
    setup: tuple[LogSetup, io.StringIO, Clock],
) -> None:
    """Ten minutes of what an idle server logs: the scheduler's ticks, a broker that keeps
    refusing, the same warning every 5 s. At most one line per minute once steady."""
    s, stream, clock = setup
    for _ in range(10 * 12):
        logging.getLogger("apscheduler.scheduler").info("Running job sessions-tick")
        logging.getLogger("alert_server.ingest.mqtt").warning("broker unreachable, retrying")
        clock.t += 5
        if int(clock.t) % 60 == 0:
            s.summariser.flush()  # what the flusher thread does once a window
    out = lines(stream)
    assert 1 <= len(out) <= 10, len(out)
    assert all("broker unreachable" in str(line["msg"]) for line in out)
    assert any(line.get("repeated") for line in out)


def test_plain_format_for_the_demo() -> None:
    root = logging.getLogger()
    saved = list(root.handlers)
    stream = io.StringIO()
    try:
        configure("plain", stream=stream)
        logging.getLogger("alert_server.demo").info("démarré")
        assert stream.getvalue().rstrip().endswith("INFO alert_server.demo démarré")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)


def test_skipped_scheduler_runs_are_one_summary_a_minute(
    setup: tuple[LogSetup, io.StringIO, Clock],
) -> None:
    s, stream, clock = setup
    for _ in range(120):  # one a second for two minutes, each with its own time in the text
        logging.getLogger("apscheduler.scheduler").warning(
            f'Execution of job "Clock._sweep (next run at: {clock.t})" skipped: maximum number '
            "of running instances reached (1)"
        )
        clock.t += 1
        if int(clock.t) % 60 == 0:
            s.summariser.flush()
    out = lines(stream)
    assert len(out) <= 3, out
    count, _, text = str(out[-1]["msg"]).partition(" ")
    assert (
        50 <= int(count) <= 60
        and text == "passages de tâches planifiées sautés (machine surchargée)"
    )


def test_a_flood_of_presses_is_one_line_then_one_summary_per_incident(
    setup: tuple[LogSetup, io.StringIO, Clock],
) -> None:
    """The ingest writer's line for a press joining an incident (alert_server/ingest/handler.py):
    1,000 presses of a flood in a minute are two lines, not 1,000."""
    s, stream, clock = setup
    log = logging.getLogger("alert_server.ingest.handler")
    for i in range(1000):
        log.info(
            "press joined incident alert_id=%s device_id=%s incident_of=%s",
            f"a-{i}",
            "nurse-7",
            "a-0",
            extra={"vigie_fields": {"device_id": "nurse-7", "incident_of": "a-0"}},
        )
        clock.t += 0.05
    clock.t += 60
    s.summariser.flush()
    first, summary = lines(stream)
    assert first["msg"] == "press joined incident alert_id=a-0 device_id=nurse-7 incident_of=a-0"
    assert summary["msg"] == "999 appuis de plus rattachés à l'incident a-0 (boîtier nurse-7)"


def test_rejected_messages_are_summarised_per_kind_and_reason(
    setup: tuple[LogSetup, io.StringIO, Clock],
) -> None:
    """What ``Ingestor._reject`` writes: a device sending garbage fills no log."""
    from types import SimpleNamespace

    from alert_server.ingest.handler import Ingestor

    class Counter:
        def labels(self, *a: str) -> Counter:
            return self

        def inc(self) -> None:
            pass

    s, stream, clock = setup
    ingestor = SimpleNamespace(metrics=SimpleNamespace(rejected=Counter()))
    for i in range(300):
        topic = f"vigie/v1/dev/d-{i % 7}/alert"
        Ingestor._reject(ingestor, "alert", "bad_json", topic, f"ligne {i}")  # type: ignore[arg-type]
        clock.t += 0.1
    Ingestor._reject(ingestor, "hb", "device_mismatch", "vigie/v1/dev/x/hb", "x")  # type: ignore[arg-type]
    clock.t += 60
    s.summariser.flush()
    out = [str(line["msg"]) for line in lines(stream)]
    assert out[0].startswith("rejected alert message on vigie/v1/dev/d-0/alert (bad_json)")
    assert out[1].startswith("rejected hb message on vigie/v1/dev/x/hb (device_mismatch)")
    assert out[2:] == [
        "299 messages alert refusés (bad_json), le dernier sur vigie/v1/dev/d-5/alert"
    ]
