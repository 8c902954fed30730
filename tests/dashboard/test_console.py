"""The dispatcher console in a real browser: an alert published over MQTT appears live, rings,
is taken in charge from the page (the device hears it), duress is unmistakable, and the
console notices by itself when the server goes away and catches up when it comes back."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tests.dashboard.conftest import PASSWORD, PageProblems, RestartableServer, artifact
from tests.support import Device, add_device, alert_payload, wait_until
from vigie.brokers.mosquitto import LocalMosquitto

MARSEILLE = {"lat": 43.2965, "lon": 5.3698, "acc_m": 12, "src": "gps"}
LAVAL = {"lat": 48.0706, "lon": -0.7734, "acc_m": 150, "src": "gps"}


def login(pg: Any, base_url: str, username: str = "regulation") -> None:
    pg.goto(base_url + "/dashboard/")
    assert "/dashboard/login" in pg.url  # not logged in: sent to the login page
    pg.fill("input[name=username]", username)
    pg.fill("input[name=password]", PASSWORD)
    pg.click("button[type=submit]")
    pg.wait_for_url(base_url + "/dashboard/")
    pg.wait_for_selector("#live-status[data-state=live]")


def row(alert_id: str) -> str:
    return f'tr.alert-row[data-alert-id="{alert_id}"]'


def test_live_board_ack_duress_and_detail(
    broker: LocalMosquitto,
    console_env: dict[str, str],
    console_server: RestartableServer,
    page: tuple[Any, PageProblems],
) -> None:
    pg, problems = page
    base = console_server.url
    dev = Device(
        "nurse-0042", add_device(console_env, "nurse-0042", worker="Inès Durand"), broker.port
    )
    assert dev.connect()
    login(pg, base)
    assert pg.locator("#alarm-banner").is_hidden()
    pg.evaluate("window.__notReloaded = true")

    # 1. An alert over MQTT appears on the open board, without reloading, within a second.
    a1 = str(uuid.uuid4())
    started = time.monotonic()
    dev.publish("alert", alert_payload(a1, pos=MARSEILLE, batt=71))
    pg.wait_for_selector(row(a1), timeout=5000)
    latency_s = time.monotonic() - started
    assert latency_s < 2.0, f"alert took {latency_s:.2f}s to reach the board"
    assert pg.evaluate("window.__notReloaded") is True
    r1 = pg.locator(row(a1))
    assert r1.get_attribute("data-state") == "open"
    assert "non prise en charge" in r1.inner_text().lower()
    assert r1.locator(".timer").count() == 1
    # The alarm: banner, title, and the Web Audio beep running.
    pg.wait_for_selector("#alarm-banner:not([hidden])")
    assert "1 ALERTE(S) EN ATTENTE" in pg.inner_text("#alarm-banner")
    assert pg.title().startswith("(1) ALERTE")
    wait_until(lambda: pg.evaluate("window.Vigie.alarm.beeps") > 0, 5, "an alarm beep")

    # 2. Taken in charge from the page: the device is told, the alarm stops.
    r1.get_by_role("button", name="Prendre en charge").click()
    pg.wait_for_selector("#alert-status[data-state=acknowledged]")
    assert "regulation" in pg.inner_text("#alert-status")
    wait_until(
        lambda: dev.received("alert.acknowledged", a1), 5, "alert.acknowledged on the device"
    )
    assert "Prise en charge" in pg.inner_text("#alert-timeline")
    assert pg.locator("#alarm-banner").is_hidden()

    # 3. Back on the board: a second alert, then the duress PIN: marked CONTRAINTE, on top.
    pg.goto(base + "/dashboard/")
    pg.wait_for_selector("#live-status[data-state=live]")
    a2 = str(uuid.uuid4())
    # Another kind: a second SOS from the same device while the first is still in charge
    # would join its incident (one row, one escalation), as it should.
    dev.publish("alert", alert_payload(a2, kind="sos_silent", pos=LAVAL))
    pg.wait_for_selector(row(a2))
    dev.publish("cancel", {"v": 1, "alert_id": a2, "ts": "2026-11-22T18:04:20Z", "pin": "9999"})
    wait_until(
        lambda: dev.received("alert.cancelled", a2), 5, "the duress cancel looks like a cancel"
    )
    pg.wait_for_selector(f'{row(a2)}[data-duress="true"]')
    r2 = pg.locator(row(a2))
    assert "CONTRAINTE" in r2.inner_text()
    assert r2.get_attribute("data-state") == "open"  # the escalation goes on
    first = pg.locator("tr.alert-row").first
    assert first.get_attribute("data-alert-id") == a2  # unacknowledged on top
    assert pg.locator(row(a1)).get_attribute("data-state") == "acknowledged"
    pg.wait_for_selector("#alarm-banner:not([hidden])")
    pg.screenshot(path=str(artifact("dashboard-board.png")), full_page=True)

    # 4. The detail page: map with département outlines and the accuracy circle, worker
    # call-back details, timeline, attribution.
    pg.locator(row(a2)).get_by_role("link", name="Détails").click()
    pg.wait_for_selector("#alert-status[data-state=open]")
    pg.wait_for_selector(".leaflet-container")
    pg.wait_for_selector("#map[data-outlines]")
    assert int(pg.get_attribute("#map", "data-outlines") or 0) > 0
    assert pg.locator("path.leaflet-interactive").count() >= 1  # the accuracy circle
    assert "IGN – ADMIN EXPRESS COG 2018 / INSEE COG 2018" in pg.inner_text(
        ".leaflet-control-attribution"
    )
    status = pg.inner_text("#alert-status")
    assert "CONTRAINTE" in status and "code de contrainte" in status
    side = pg.inner_text("aside")
    assert "Inès" in side and "Durand" not in side  # first name only
    assert "+33612345678" in side
    timeline = pg.inner_text("#alert-timeline")
    assert "Alerte reçue du boîtier" in timeline and "CODE DE CONTRAINTE" in timeline
    pg.screenshot(path=str(artifact("dashboard-detail.png")), full_page=True)

    # 5. Close it from the page, with an outcome and a note.
    pg.select_option("#outcome", "physical_assault")
    pg.fill("#note", "Patrouille sur place à 03:12, travailleuse en sécurité.")
    pg.click("#resolve-button")
    pg.wait_for_selector("#alert-status[data-state=resolved]")
    assert "Agression physique" in pg.inner_text("#alert-status")
    # The device is not told: after the duress PIN its screen must keep showing "cancelled"
    # (alert_server.downlink: "not telling the device (cancelled by it)").
    problems.assert_none()
    dev.close()


def test_banner_when_the_server_stops_and_catch_up_when_it_returns(
    broker: LocalMosquitto,
    console_env: dict[str, str],
    console_server: RestartableServer,
    page: tuple[Any, PageProblems],
) -> None:
    pg, problems = page
    base = console_server.url
    dev = Device("pharma-13", add_device(console_env, "pharma-13", role="pharmacist"), broker.port)
    assert dev.connect()
    login(pg, base)
    assert pg.locator("#connection-banner").is_hidden()
    pg.evaluate("window.__notReloaded = true")

    # An open live stream must not keep the server from stopping.
    started = time.monotonic()
    console_server.terminate()
    assert time.monotonic() - started < 10
    pg.wait_for_selector("#connection-banner:not([hidden])", timeout=5000)
    assert "Connexion perdue — reconnexion…" in pg.inner_text("#connection-banner")
    assert pg.get_attribute("#live-status", "data-state") == "lost"

    # Published while no server runs: the broker keeps it for the server's session.
    missed = str(uuid.uuid4())
    dev.publish("alert", alert_payload(missed, pos=MARSEILLE))
    assert not dev.received("alert.received", missed)

    console_server.start()
    pg.wait_for_selector("#connection-banner", state="hidden", timeout=15_000)
    pg.wait_for_selector(row(missed), timeout=5000)
    assert pg.get_attribute("#live-status", "data-state") == "live"
    assert pg.locator(row(missed)).get_attribute("data-state") == "open"
    assert pg.evaluate("window.__notReloaded") is True
    wait_until(lambda: dev.received("alert.received", missed), 5, "alert.received after restart")
    problems.assert_none()
    dev.close()
