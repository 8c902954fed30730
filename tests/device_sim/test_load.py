"""Load mode, small: 50 devices for a few seconds against the real broker and server."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from device_sim.device import BrokerTarget
from device_sim.geo import CommuneIndex
from device_sim.load import LoadConfig, LoadRun, Progress, load_passwords, write_json
from device_sim.provision import wait_credentials_active, write_broker_passwords
from tests.device_sim.conftest import Stack


def test_load_50_devices_loses_nothing(
    shared_stack: Stack, communes: CommuneIndex, tmp_path: Path
) -> None:
    cfg = LoadConfig(
        devices=50,
        hb_interval_s=1.0,
        alert_rate=8.0,
        duration_s=3.0,
        drain_s=20.0,
        departements=["13", "84"],
        id_prefix="ld-",
        seed=3,
    )
    passwords = load_passwords(cfg)
    # Test shortcut: straight into the broker's password file, then SIGHUP.
    write_broker_passwords(
        shared_stack.broker.passwd_file, passwords, reload=shared_stack.broker.reload
    )
    first = next(iter(passwords))
    assert wait_credentials_active("127.0.0.1", shared_stack.broker.port, first, passwords[first])

    asked: list[str] = []

    def first_notifications(alert_ids: Sequence[str]) -> Mapping[str, datetime | None]:
        # Stand-in for the telephony side (wired by the lead): the time the alert was stored.
        asked.extend(alert_ids)
        out: dict[str, datetime | None] = {}
        for a in alert_ids:
            rows = shared_stack.store.alerts(alert_id=a)
            out[a] = rows[0]["created_at"] if rows else None
        return out

    out = io.StringIO()
    threads_before = threading.active_count()
    run = LoadRun(
        cfg,
        BrokerTarget(port=shared_stack.broker.port),
        passwords,
        index=communes,
        first_notifications=first_notifications,
        store=shared_stack.store,
        progress=Progress(out, plain_every_s=1.0),
    )
    report = run.run()
    assert threading.active_count() <= threads_before + 1  # one shard thread, not 50
    assert report.devices == 50 and report.connected_peak == 50
    assert report.alerts_pressed >= 10
    assert report.alerts_lost == 0, report.lost_alert_ids
    assert report.alerts_received == report.alerts_pressed
    assert report.duplicate_receipts == 0
    assert report.store_check == {"stored": report.alerts_pressed, "missing": 0, "duplicates": 0}
    assert report.heartbeats >= 50 * 2
    p = report.press_to_received
    assert p["count"] == report.alerts_pressed and p["p50_ms"] is not None
    n = report.press_to_first_notification
    assert n is not None and n["missing"] == 0 and n["count"] == report.alerts_pressed
    assert sorted(asked) == sorted(r.alert_id for _, r in run._records())
    # Not a TTY: plain progress lines.
    assert "connectés 50/50" in out.getvalue() and "\r" not in out.getvalue()
    write_json(report, tmp_path / "load.json")
    data = json.loads((tmp_path / "load.json").read_text())
    assert data["alerts_lost"] == 0 and data["press_to_received"]["p99_ms"] is not None
    assert "Alertes" in report.summary()
