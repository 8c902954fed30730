"""mosquitto#2662 on the Mosquitto path: a server of a shared subscription is SIGKILLed; Mosquitto
keeps its persistent session in the ``$share`` round robin and parks one alert in two there. A
survivor sees its last will, takes the session over and drains it through its own ingest
(``alert_server/ingest/rescue.py``).

The devices here never re-send (``tests.support.Device`` publishes once; the broker has
acknowledged it): an alert parked in the dead session reaches the database only through the
rescue. Without it this test would wait for half of the alerts until its deadline.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from alert_server.db import make_engine
from tests.support import Device, ServerProcess, add_device, alert_payload, server_env, wait_until
from vigie.brokers.mosquitto import LocalMosquitto

RESCUED = re.compile(r"rescue of vigie-server-1: drained, (\d+) uplink message")


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The broker's behaviour does not depend on the database: SQLite only."""
    return f"sqlite:///{tmp_path / 'vigie.db'}"


def _stored(db_url: str) -> dict[str, int]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT alert_id, count(*) FROM alert GROUP BY alert_id"))
            return {str(r[0]): int(r[1]) for r in rows}
    finally:
        engine.dispose()


def test_a_survivor_drains_the_session_of_a_killed_server(
    broker: LocalMosquitto, db_url: str, tmp_path: Path
) -> None:
    def env(i: int) -> dict[str, str]:
        return server_env(
            broker,
            db_url,
            VIGIE_MQTT_SHARED_GROUP="vigie",
            VIGIE_MQTT_CLIENT_ID=f"vigie-server-{i}",
        )

    s0 = ServerProcess(env(0), tmp_path / "server0.log").start()
    s1 = ServerProcess(env(1), tmp_path / "server1.log").start()
    devices = []
    try:
        for name in ("nurse-r1", "nurse-r2"):
            dev = Device(name, add_device(env(0), name), broker.port)
            assert dev.connect()
            devices.append(dev)
        # Both servers take part before the kill (the round robin alternates per message).
        before = [str(uuid.uuid4()) for _ in range(4)]
        for i, aid in enumerate(before):
            devices[i % 2].publish("alert", alert_payload(aid))
        wait_until(lambda: len(_stored(db_url)) == 4, 60, "the first 4 alerts")
        assert s1.metric("vigie_alerts_stored_total") > 0

        s1.kill()
        # Pressed after the kill, published once each: one in two is routed to the dead
        # server's session.
        after = [str(uuid.uuid4()) for _ in range(8)]
        for i, aid in enumerate(after):
            devices[i % 2].publish("alert", alert_payload(aid))
        for i, aid in enumerate(after):
            dev = devices[i % 2]
            wait_until(lambda a=aid, d=dev: bool(d.received("alert.received", a)), 120, aid)
        stored = _stored(db_url)
        assert sorted(stored) == sorted(before + after)
        assert set(stored.values()) == {1}, "an alert stored twice"
        # The survivor took the dead server's session over and drained parked alerts.
        wait_until(lambda: bool(RESCUED.search(s0.log())), 60, "the rescue's end in the log")
        m = RESCUED.search(s0.log())
        assert m is not None and int(m.group(1)) >= 1, s0.log()[-3000:]

        # The dead server comes back with its client id: its session (emptied, without its
        # subscriptions) is its own again, it subscribes again and takes part.
        s1.start()
        again = [str(uuid.uuid4()) for _ in range(8)]
        for i, aid in enumerate(again):
            devices[i % 2].publish("alert", alert_payload(aid))
        for i, aid in enumerate(again):
            dev = devices[i % 2]
            wait_until(lambda a=aid, d=dev: bool(d.received("alert.received", a)), 120, aid)
        assert s1.metric("vigie_alerts_stored_total") > 0, "the server back took no part"
        stored = _stored(db_url)
        assert len(stored) == 20 and set(stored.values()) == {1}
    finally:
        for dev in devices:
            dev.close()
        for s in (s0, s1):
            s.stop()
