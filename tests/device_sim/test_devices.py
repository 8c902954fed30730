"""Simulated devices against a real Mosquitto and the real server: the offline queue across a
broker outage, heartbeats, presence, commands and how the device reacts to them."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from device_sim.device import UI_CANCELLED, BrokerTarget, DeviceConfig, SimDevice
from device_sim.geo import CommuneIndex, FixedSite, NurseRound
from device_sim.reactor import Reactor
from tests.device_sim.conftest import Stack
from tests.device_sim.helpers import ServerAccount
from tests.support import wait_until


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    r = Reactor(1).start()
    try:
        yield r
    finally:
        r.stop()


def _nurse(
    stack: Stack, reactor: Reactor, communes: CommuneIndex, device_id: str, **config: object
) -> SimDevice:
    password = stack.add_device(device_id, pin="2468", duress_pin="1357")
    rng = random.Random(device_id)
    return SimDevice(
        device_id,
        password,
        role="nurse",
        mobility=NurseRound(communes, communes.find("Aubagne"), rng, datetime.now(UTC)),
        shard=reactor.pick(),
        broker=BrokerTarget(port=stack.broker.port),
        config=DeviceConfig(hb_interval_s=3600, **config),  # type: ignore[arg-type]
        rng=rng,
        pin="2468",
        duress_pin="1357",
    )


def test_offline_queue_survives_a_broker_outage_and_is_stored_once(
    outage_stack: Stack, reactor: Reactor, communes: CommuneIndex
) -> None:
    dev = _nurse(
        outage_stack, reactor, communes, "nurse-outage", resend_min_s=0.5, resend_max_s=1.0
    )
    dev.start()
    assert dev.ready.wait(10), dev.last_connect_error
    before = dev.press()
    wait_until(lambda: dev.alerts[before].state == "received", 10, "receipt before the outage")

    outage_stack.broker.kill()
    wait_until(lambda: not dev.connected.is_set(), 10, "device sees the broker gone")
    alert_id = dev.press()
    rec = dev.alerts[alert_id]
    # Pressed with no connection: kept in the device's queue, nothing could leave.
    wait_until(lambda: rec.payload != b"", 5, "alert queued")
    assert rec.state == "queued" and rec.sends == 0

    outage_stack.broker.start()  # same ports, same data folder
    wait_until(lambda: rec.state == "received", 40, "alert.received after the outage")
    assert rec.sends >= 1
    assert rec.timer is None  # re-sending stopped on alert.received
    # Exactly once in the database, however many times it was re-sent.
    assert len(outage_stack.store.alerts(alert_id=alert_id)) == 1
    mine = outage_stack.store.alerts(device_id="nurse-outage")
    assert sorted(a["alert_id"] for a in mine) == sorted([before, alert_id])
    # Every receipt answers one of the device's sends: none is a duplicate of its own.
    wait_until(lambda: rec.receipts >= 1, 5)
    assert rec.receipts <= rec.sends
    dev.stop()


def test_alert_resent_with_same_id_until_the_server_confirms(
    shared_stack: Stack, reactor: Reactor, communes: CommuneIndex
) -> None:
    dev = _nurse(
        shared_stack, reactor, communes, "nurse-resend", resend_min_s=0.3, resend_max_s=0.6
    )
    dev.start()
    assert dev.ready.wait(10)
    shared_stack.server.kill()  # broker up, server down: PUBACKs come, receipts do not
    alert_id = dev.press()
    rec = dev.alerts[alert_id]
    wait_until(lambda: rec.sends >= 3, 10, "at least three sends of the same alert")
    assert rec.state == "queued"
    shared_stack.server.start()
    wait_until(lambda: rec.state == "received", 30, "receipt once the server is back")
    assert len(shared_stack.store.alerts(alert_id=alert_id)) == 1
    dev.stop()


def test_device_speaks_the_protocol(
    shared_stack: Stack, reactor: Reactor, communes: CommuneIndex
) -> None:
    account = ServerAccount(shared_stack.broker.server_url(), "test-account-protocol")
    dev = _nurse(shared_stack, reactor, communes, "nurse-proto", on_session_warning="checkin")
    dev.start()
    assert dev.ready.wait(10)
    did = dev.device_id
    # Retained "online" status, and the socket has no Nagle.
    wait_until(lambda: account.uplinks(did, "status") == [{"v": 1, "state": "online"}], 5)
    assert dev.client is not None
    nodelay = reactor.shards[0].run_sync(
        lambda: dev.client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # type: ignore[union-attr]
    )
    assert nodelay != 0
    # A heartbeat carries battery, charging and a GPS fix with an honest accuracy.
    dev.send_heartbeat()
    wait_until(lambda: account.uplinks(did, "hb"), 5, "heartbeat")
    hb = account.uplinks(did, "hb")[0]
    assert 0 <= hb["batt"] <= 100 and isinstance(hb["charging"], bool)
    assert hb["pos"]["src"] == "gps" and 5 <= hb["pos"]["acc_m"] <= 30
    assert hb["ts"].endswith("Z")
    # locate → a fresh position on pos.
    account.command(did, "locate")
    wait_until(lambda: account.uplinks(did, "pos"), 5, "pos answering locate")
    assert account.uplinks(did, "pos")[0]["pos"]["src"] == "gps"
    # session.warning → this worker checks in.
    session_id = dev.session_start(2, "Visite, 3 rue Jean Jaurès, Aubagne")
    wait_until(lambda: account.uplinks(did, "session"), 5, "session start")
    account.command(did, "session.warning", session_id=session_id)
    wait_until(lambda: len(account.uplinks(did, "session")) == 2, 5, "check-in")
    start, checkin = account.uplinks(did, "session")
    assert start["action"] == "start" and start["expected_end"].endswith("Z")
    assert start["memo"].startswith("Visite")
    assert checkin["action"] == "checkin" and checkin["session_id"] == session_id
    # The server itself answers the session start (session.accepted, protocol 1.1).
    sent_by_us = [c.type for c in dev.commands() if c.type != "session.accepted"]
    assert sent_by_us == ["locate", "session.warning"]
    assert all(c.at_mono > 0 and c.at_wall > 0 for c in dev.commands())
    dev.stop()
    account.close()


def test_cancel_and_duress_look_the_same_on_the_device(
    shared_stack: Stack, reactor: Reactor, communes: CommuneIndex
) -> None:
    dev = _nurse(shared_stack, reactor, communes, "nurse-duress")
    dev.start()
    assert dev.ready.wait(10)
    screens = []
    for pin in ("2468", "1357"):
        alert_id = dev.press()
        wait_until(lambda a=alert_id: dev.alerts[a].state == "received", 10)
        dev.cancel(alert_id, pin)
        wait_until(lambda a=alert_id: bool(dev.commands("alert.cancelled", a)), 10)
        screens.append(dev.ui(alert_id))
        stored = shared_stack.store.alerts(alert_id=alert_id)[0]
        assert stored["duress"] == (pin == "1357")
    assert screens[0] == screens[1] and screens[0][-1] == UI_CANCELLED
    dev.stop()


def test_silent_alert_shows_nothing_and_fall_can_be_cancelled_locally(
    shared_stack: Stack, reactor: Reactor, communes: CommuneIndex
) -> None:
    dev = _nurse(shared_stack, reactor, communes, "nurse-silent", fall_cancel_window_s=60)
    dev.start()
    assert dev.ready.wait(10)
    silent = dev.press("sos_silent")
    wait_until(lambda: dev.alerts[silent].state == "received", 10)
    assert dev.ui(silent) == []
    fall = dev.fall()
    assert dev.cancel_fall(fall)
    assert dev.alerts[fall].state == "cancelled_locally"
    assert not dev.cancel_fall(fall)
    # Nothing of the cancelled fall ever left the device (its timer was cancelled, not run).
    assert [m.body["alert_id"] for m in dev.sent("alert")] == [silent]
    assert shared_stack.store.alerts(alert_id=fall) == []
    dev.stop()


def test_pharmacy_without_gps_reports_its_site_or_nothing(
    shared_stack: Stack, reactor: Reactor
) -> None:
    account = ServerAccount(shared_stack.broker.server_url(), "test-account-pharma")
    devices = []
    for i, report in enumerate((True, False)):
        did = f"pharma-site-{i}"
        password = shared_stack.add_device(did, role="pharmacist")
        dev = SimDevice(
            did,
            password,
            role="pharmacist",
            mobility=FixedSite(43.9493, 4.8055, "Pharmacie des Halles", report_position=report),
            shard=reactor.pick(),
            broker=BrokerTarget(port=shared_stack.broker.port),
            config=DeviceConfig(hb_interval_s=3600),
        )
        dev.start()
        assert dev.ready.wait(10)
        dev.send_heartbeat()
        alert_id = dev.press()
        wait_until(lambda d=dev, a=alert_id: d.alerts[a].state == "received", 10)
        devices.append((dev, alert_id, report))
    for dev, alert_id, report in devices:
        wait_until(lambda d=dev: bool(account.uplinks(d.device_id, "hb")), 5)
        hb = account.uplinks(dev.device_id, "hb")[0]
        assert hb["charging"] is True and hb["batt"] == 100  # on mains
        row = shared_stack.store.alerts(alert_id=alert_id)[0]
        if report:
            assert hb["pos"]["src"] == "fixed" and row["pos_src"] == "fixed"
        else:
            assert "pos" not in hb and "no_position" in row["flags"]
        dev.stop()
    account.close()


def test_one_thread_drives_many_devices(shared_stack: Stack, reactor: Reactor) -> None:
    from device_sim.provision import write_broker_passwords

    passwords = {f"many-{i:03d}": f"pw-{i:03d}-secret" for i in range(60)}
    write_broker_passwords(
        shared_stack.broker.passwd_file, passwords, reload=shared_stack.broker.reload
    )
    threads_before = threading.active_count()
    devices = [
        SimDevice(
            d,
            p,
            role="other",
            mobility=None,
            shard=reactor.pick(),
            broker=BrokerTarget(port=shared_stack.broker.port),
            config=DeviceConfig(hb_interval_s=3600, reconnect_min_s=0.2),
        )
        for d, p in passwords.items()
    ]
    for d in devices:
        d.start()
    wait_until(lambda: all(d.ready.is_set() for d in devices), 20, "60 devices connected")
    assert threading.active_count() == threads_before  # no thread per device
    ids = [d.press() for d in devices]
    wait_until(
        lambda: all(d.alerts[a].state == "received" for d, a in zip(devices, ids, strict=True)),
        # Eventual delivery is what is tested; latency is measured by the benchmarks.
        60,
        "60 receipts",
    )
    for d in devices:
        d.stop()


def test_alert_pressed_while_switched_off_leaves_at_next_start(
    shared_stack: Stack, reactor: Reactor, communes: CommuneIndex
) -> None:
    dev = _nurse(shared_stack, reactor, communes, "nurse-off", resend_min_s=0.3, resend_max_s=0.5)
    dev.start()
    assert dev.ready.wait(10)
    dev.stop()
    wait_until(lambda: not dev.connected.is_set(), 5, "switched off")
    alert_id = dev.press()
    rec = dev.alerts[alert_id]
    wait_until(lambda: rec.payload != b"", 5, "queued")
    assert rec.sends == 0 and rec.state == "queued"
    dev.start()
    wait_until(lambda: rec.state == "received", 30, "sent and confirmed after the restart")
    assert [a["alert_id"] for a in shared_stack.store.alerts(device_id="nurse-off")] == [alert_id]
    dev.stop()


def test_a_connect_never_answered_is_tried_again(reactor: Reactor) -> None:
    """A broker node that accepts the TCP connection and never sends its CONNACK (RabbitMQ
    3.10's MQTT plugin caught in a failover, tests/chaos/test_rabbit_cluster.py): the device
    gives that attempt up and connects again, instead of waiting for ever with its alerts."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            accepted.append(conn)  # kept open, never answered

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    dev = SimDevice(
        "dev-silent",
        "unused",
        role="pharmacist",
        mobility=FixedSite(43.29, 5.38, "Pharmacie du Vieux-Port"),
        shard=reactor.pick(),
        broker=BrokerTarget(port=port),
        config=DeviceConfig(
            hb_interval_s=3600, connack_timeout_s=0.5, reconnect_min_s=0.1, reconnect_max_s=0.2
        ),
        rng=random.Random(1),
    )
    try:
        dev.start()
        aid = dev.press("sos")
        wait_until(lambda: len(accepted) >= 3, 30, "three connection attempts")
        assert not dev.connected.is_set()
        assert dev.last_connect_error is not None and "CONNACK" in dev.last_connect_error
        assert [r.alert_id for r in dev.pending_alerts()] == [aid]  # still kept, to be sent
    finally:
        dev.stop(announce_offline=False)
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        srv.close()
