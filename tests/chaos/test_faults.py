"""Faults under load: while a simulated fleet presses alerts, the server is killed, the broker
restarted, PostgreSQL crashed, Twilio down, SQLite's disk full or locked. Afterwards every alert
pressed is stored exactly once and every escalation step sent exactly once (``harness.check``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from device_sim.geo import CommuneIndex
from device_sim.load import LoadConfig
from tests.chaos.harness import (
    ChaosStack,
    Fault,
    OwnPostgres,
    RunHandle,
    SmallDisk,
    SqliteLock,
    check,
    run_load_with_faults,
)
from tests.fakes.fake_twilio import FakeTwilio
from vigie.brokers.mosquitto import LocalMosquitto

NewStack = Callable[..., ChaosStack]


def fleet(seed: int, **kw: float) -> LoadConfig:
    """60 devices in Bouches-du-Rhône and Vaucluse, heartbeats every 2 s, ~3 alerts/s for 8 s."""
    cfg = LoadConfig(
        devices=60,
        hb_interval_s=2.0,
        alert_rate=3.0,
        duration_s=8.0,
        drain_s=90.0,
        departements=["13", "84"],
        id_prefix=f"chaos{seed}-",
        seed=seed,
        progress_interval_s=1.0,
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_server_sigkill_mid_run(
    database: str, new_stack: NewStack, communes: CommuneIndex, request: pytest.FixtureRequest
) -> None:
    stack = new_stack(None if database == "sqlite" else request.getfixturevalue("pg_database"))
    (server,) = stack.servers
    faults = [
        Fault(2.5, "SIGKILL server", server.kill),
        Fault(3.5, "server restarted", lambda: server.start(wait_healthy=False)),
    ]
    report, pressed, log = run_load_with_faults(stack, fleet(1), faults, communes)
    check(f"SIGKILL of the server ({database})", stack, report, pressed, log)


def test_mosquitto_restart_mid_run(
    new_stack: NewStack, broker: LocalMosquitto, communes: CommuneIndex
) -> None:
    stack = new_stack()
    # SIGTERM: Mosquitto writes its persistence file (the server's queued messages and
    # session); it comes back on the same ports with the same accounts.
    handle = RunHandle()
    faults = [
        # Alerts in flight at the stop: pressed on a quarter of the fleet just before.
        Fault(2.4, "burst of alerts", handle.press_on_all_devices),
        Fault(2.5, "Mosquitto stopped", broker.stop),
        Fault(3.0, "alerts pressed without a broker", handle.press_on_all_devices),
        Fault(5.0, "Mosquitto restarted", broker.start),
    ]
    report, pressed, log = run_load_with_faults(stack, fleet(2), faults, communes, handle)
    acc = check("Mosquitto restart", stack, report, pressed, log)
    assert report.reconnects >= 50, "the devices did not see the broker go"
    # Alerts pressed while the broker was down waited for it, and got through.
    slowest = report.press_to_received["max_ms"]
    assert slowest is not None and slowest > 1500, slowest
    assert acc.stored == acc.pressed


def test_postgresql_crash_and_restart_mid_run(
    new_stack: NewStack, communes: CommuneIndex, own_postgres: OwnPostgres
) -> None:
    stack = new_stack(own_postgres.url)
    (server,) = stack.servers
    faults = [
        Fault(2.5, "PostgreSQL crashed (immediate stop)", lambda: own_postgres.stop("immediate")),
        Fault(5.5, "PostgreSQL restarted", own_postgres.start),
    ]
    report, pressed, log = run_load_with_faults(stack, fleet(3), faults, communes)
    check("PostgreSQL crash and restart", stack, report, pressed, log)
    assert server.proc is not None and server.proc.poll() is None, "the server died"
    assert server.metric("vigie_db_errors_total") > 0, "the outage was not seen"


def test_twilio_outage_mid_run(
    new_stack: NewStack, twilio: FakeTwilio, communes: CommuneIndex
) -> None:
    stack = new_stack()
    # 500s, then 429s, then requests held and dropped unanswered, each for a while.
    faults = [
        Fault(1.0, "Twilio 500 ×15", lambda: twilio.inject("500", times=15)),
        Fault(3.0, "Twilio 429 ×15", lambda: twilio.inject("429", times=15)),
        Fault(5.0, "Twilio time-outs ×6", lambda: twilio.inject("timeout", times=6)),
    ]
    report, pressed, log = run_load_with_faults(stack, fleet(4), faults, communes)
    acc = check("Twilio outage (500, 429, time-outs)", stack, report, pressed, log)
    failed = acc.provider_requests - acc.provider_accepted
    assert failed >= 36, f"only {failed} provider requests failed: the outage did not bite"
    assert acc.retried_steps > 0


def test_sqlite_disk_full_mid_run(
    new_stack: NewStack, communes: CommuneIndex, tmp_path: Path
) -> None:
    disk = SmallDisk(tmp_path / "small-disk").mount()
    db = disk.mountpoint / "vigie.db"
    stack = new_stack(f"sqlite:///{db}")
    (server,) = stack.servers
    try:
        faults = [
            Fault(2.5, "disk full", lambda: print(f"filled {disk.fill(db)} bytes")),
            Fault(5.5, "disk space back", disk.free),
        ]
        report, pressed, log = run_load_with_faults(stack, fleet(5), faults, communes)
        check("SQLite disk full", stack, report, pressed, log)
        assert server.metric("vigie_db_errors_total") > 0, "the disk-full was not seen"
    finally:
        stack.stop()
        disk.free()
        disk.unmount()


def test_sqlite_locked_by_another_process_mid_run(
    new_stack: NewStack, communes: CommuneIndex, tmp_path: Path
) -> None:
    stack = new_stack()
    lock = SqliteLock(tmp_path / "vigie.db")
    try:
        faults = [
            Fault(2.5, "write lock taken by another process", lock.take),
            Fault(6.5, "write lock released", lock.release),
        ]
        report, pressed, log = run_load_with_faults(stack, fleet(6), faults, communes)
        acc = check("SQLite locked by another process", stack, report, pressed, log)
        # The lock bit: alerts pressed while it was held waited for it (and none was lost).
        slowest = report.press_to_received["max_ms"]
        assert slowest is not None and slowest > 2500, slowest
        assert acc.stored == acc.pressed
    finally:
        lock.release()
