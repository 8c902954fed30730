"""The console's version 1.1 promises in Debian's Chromium (issue "a console no dispatcher can
miss"): the SMS link on a phone, the alarm that cannot go silent, sessions that do not drop a
watch, pages that fit 390 px and 1366/1440 px, the queue by urgency.

One app (uvicorn thread, SQLite) and one browser for the whole module; alerts are written
straight into the database, as the pipeline would, and reach the pages through the live stream.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from alert_server.db import write_scope
from alert_server.users.models import WebSession
from tests.api.conftest import PASSWORD, ApiStack, close_stack, make_stack
from tests.conftest import GEO_DIR
from tests.dashboard.conftest import CHROMIUM, CHROMIUM_ARGS, artifact, assert_accessible
from tests.fakes import ban
from tests.fakes.app_server import ThreadedServer, free_port
from tests.support import wait_until
from vigie.timeutil import as_utc, utcnow

DESKTOP = {"width": 1440, "height": 900}
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
VIEWPORTS = {"1440": DESKTOP, "1366": LAPTOP, "390": PHONE}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiStack]:
    tmp: Path = tmp_path_factory.mktemp("console11")
    ban_app, _ = ban.make_app()
    ban_server = ThreadedServer(ban_app).start()
    saved = os.environ.get("VIGIE_GEOCODER_URL")
    os.environ["VIGIE_GEOCODER_URL"] = ban_server.url + "/reverse"
    try:
        stack, server = make_stack(f"sqlite:///{tmp / 'vigie.db'}", tmp, geo_dir=GEO_DIR)
    finally:
        if saved is None:
            os.environ.pop("VIGIE_GEOCODER_URL", None)
        else:
            os.environ["VIGIE_GEOCODER_URL"] = saved
    stack.add_user("regulation")
    stack.add_user("admin", role="admin")
    stack.add_device("nurse-001")
    try:
        yield stack
    finally:
        close_stack(stack, server)
        ban_server.stop()


@pytest.fixture(scope="module")
def quiet_browser(chromium: Any) -> Iterator[Any]:
    """Chromium with its default autoplay policy: no sound before a click."""
    args = [a for a in CHROMIUM_ARGS if not a.startswith("--autoplay-policy")]
    browser = chromium.browser_type.launch(executable_path=str(CHROMIUM), headless=True, args=args)
    try:
        yield browser
    finally:
        browser.close()


def new_page(browser: Any, viewport: dict[str, int] = DESKTOP, **kw: Any) -> tuple[Any, Any]:
    context = browser.new_context(
        viewport=viewport, locale="fr-FR", timezone_id="Europe/Paris", **kw
    )
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.errors = errors
    return context, pg


OVERFLOWING = """() => Array.from(document.querySelectorAll('body *'))
  .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
  .slice(0, 8).map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' +
    Math.round(e.getBoundingClientRect().right))"""


def assert_fits(pg: Any, width: int, what: str = "") -> None:
    scroll = pg.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, (what, scroll, pg.evaluate(OVERFLOWING))


def login(pg: Any, base: str, path: str = "/dashboard/", user: str = "regulation") -> None:
    pg.goto(base + path)
    assert "/dashboard/login" in pg.url
    pg.fill("input[name=username]", user)
    pg.fill("input[name=password]", PASSWORD)
    pg.click("button[type=submit]")
    pg.wait_for_load_state()


def close_open_alerts(stack: ApiStack) -> None:
    from alert_server.alerts.models import Alert

    with write_scope(stack.runtime.engine) as s:
        for a in s.exec(select(Alert).where(Alert.state == "open")):
            a.state = "resolved"
            a.resolved_at = utcnow()
            s.add(a)
    # One timeline row so that the open consoles hear of it (the stream follows the rows).
    from alert_server.alerts import service as alerts_service

    with write_scope(stack.runtime.engine) as s:
        for a in s.exec(select(Alert).where(Alert.state == "resolved")):
            alerts_service.add_event(s, alert_id=a.alert_id, at=utcnow(), type_="resolved")


# -- 1. the SMS link ----------------------------------------------------------------------


def test_sms_link_on_a_phone_goes_through_login_back_to_the_alert(
    stack: ApiStack, chromium: Any
) -> None:
    alert_id = stack.add_alert(
        "13", commune_nom="Marseille", device_ts=utcnow() - timedelta(seconds=40)
    )
    context, pg = new_page(chromium, PHONE, is_mobile=True, has_touch=True)
    try:
        pg.goto(f"{stack.url}/alerts/{alert_id}")  # as in the SMS
        assert "/dashboard/login" in pg.url
        pg.screenshot(path=str(artifact("v11-login-390.png")))
        pg.fill("input[name=username]", "regulation")
        pg.fill("input[name=password]", PASSWORD)
        pg.click("button[type=submit]")
        pg.wait_for_url(f"{stack.url}/dashboard/alerts/{alert_id}")
        essentials = pg.inner_text("#essentials")
        assert "Inès" in essentials  # who
        assert "Marseille" in essentials and "(13)" in essentials  # where
        assert re.search(r"appui à \d\d:\d\d:\d\d", essentials)  # since when
        # "Je prends en charge" within the first screen, no scrolling.
        box = pg.locator("#ack-button").bounding_box()
        assert box is not None and box["y"] + box["height"] <= PHONE["height"], box
        assert pg.inner_text("#ack-button") == "Je prends en charge"
        assert_fits(pg, PHONE["width"])
        pg.screenshot(path=str(artifact("v11-alert-390-first-screen.png")))
        pg.click("#ack-button")
        pg.wait_for_selector("#alert-status[data-state=acknowledged]")
        assert "regulation" in pg.inner_text("#alert-status")
        assert pg.errors == []
    finally:
        context.close()
    # Logged in on a desktop: the same link opens the alert at once.
    context, pg = new_page(chromium)
    try:
        login(pg, stack.url)
        pg.goto(f"{stack.url}/alerts/{alert_id}")
        assert pg.url == f"{stack.url}/dashboard/alerts/{alert_id}"
    finally:
        context.close()


# -- 2. the unmissable alarm --------------------------------------------------------------

SPY = """
(() => {
  const N = window.Notification;
  if (!N) return;
  class Spy extends N {
    constructor(title, options) {
      super(title, options);
      const shown = JSON.parse(sessionStorage.getItem('shown') || '[]');
      shown.push(title);
      sessionStorage.setItem('shown', JSON.stringify(shown));
    }
  }
  Spy.requestPermission = function (...args) {
    sessionStorage.setItem('asks', String(Number(sessionStorage.getItem('asks') || 0) + 1));
    return N.requestPermission(...args);
  };
  window.Notification = Spy;
})();
"""


def test_sound_gate_blocks_until_a_click_unlocks_the_alarm(
    stack: ApiStack, quiet_browser: Any
) -> None:
    context, pg = new_page(quiet_browser)
    try:
        login(pg, stack.url)
        # Loaded without a click that counts for the autoplay policy (a navigation after the
        # login submit): reload to be sure no gesture is left.
        pg.reload()
        pg.wait_for_selector("#sound-gate:not([hidden])")
        assert "Cliquez pour activer l'alarme sonore" in pg.inner_text("#sound-gate")
        assert pg.get_attribute("body", "data-sound") == "off"
        pg.screenshot(path=str(artifact("v11-sound-gate-1440.png")))
        pg.click("#sound-gate-button")
        pg.wait_for_selector("#sound-gate", state="hidden")
        assert pg.get_attribute("body", "data-sound") == "on"
    finally:
        context.close()


def test_notifications_asked_once_title_favicon_blink_and_alarm_repeats(
    stack: ApiStack, chromium: Any
) -> None:
    close_open_alerts(stack)
    context, pg = new_page(chromium)
    try:
        pg.add_init_script(SPY)
        login(pg, stack.url)
        wait_until(lambda: pg.evaluate("sessionStorage.getItem('asks')") == "1", 5, "asked")
        pg.reload()
        pg.wait_for_selector("#live-status[data-state=live]")
        assert pg.evaluate("sessionStorage.getItem('asks')") == "1"  # asked once only
        context.grant_permissions(["notifications"], origin=stack.url)
        assert pg.title() == "Alertes — Vigie"

        first = stack.add_alert("13", commune_nom="Aubagne")
        pg.wait_for_selector(f'tr[data-alert-id="{first}"]')
        wait_until(
            lambda: "Nouvelle alerte — SOS — Aubagne" in pg.evaluate("sessionStorage.shown"),
            5,
            "a notification for the new alert",
        )
        duress = stack.add_alert("13", duress=True)
        pg.wait_for_selector(f'tr[data-alert-id="{duress}"]')
        wait_until(
            lambda: "CONTRAINTE" in pg.evaluate("sessionStorage.shown"), 5, "duress notified"
        )
        # Title and favicon blink while anything waits.
        titles, icons = set(), set()

        def seen_both() -> bool:
            titles.add(pg.title())
            icons.add(pg.get_attribute("#favicon", "href"))
            return len(titles) >= 2 and len(icons) >= 2

        wait_until(seen_both, 5, "title and favicon blinking")
        assert any("ALERTE" in t for t in titles)
        assert any("favicon-alert" in (i or "") for i in icons)
        # The alarm repeats until someone takes the alerts.
        beeps = pg.evaluate("Vigie.alarm.beeps")
        wait_until(lambda: pg.evaluate("Vigie.alarm.beeps") >= beeps + 2, 10, "repeated beeps")
        for alert_id in (duress, first):
            pg.locator(f'tr[data-alert-id="{alert_id}"] button.btn-ack').click()
            pg.wait_for_selector("#alert-status[data-state=acknowledged]")
            pg.goto(stack.url + "/dashboard/")
        pg.wait_for_selector("#alarm-banner", state="hidden")
        beeps = pg.evaluate("Vigie.alarm.beeps")
        pg.wait_for_timeout(3000)
        assert pg.evaluate("Vigie.alarm.beeps") == beeps
        assert pg.title() == "Alertes — Vigie"
        assert "favicon-alert" not in (pg.get_attribute("#favicon", "href") or "")
        assert pg.errors == []
    finally:
        context.close()


# -- 3. sessions ------------------------------------------------------------------------------


def _sessions(stack: ApiStack) -> list[WebSession]:
    with write_scope(stack.runtime.engine) as s:
        return list(s.exec(select(WebSession).where(WebSession.revoked_at.is_(None))))  # type: ignore[union-attr]


def test_session_renewed_while_open_and_a_real_expiry_is_loud(
    stack: ApiStack, chromium: Any
) -> None:
    close_open_alerts(stack)
    context, pg = new_page(chromium)
    try:
        before = {s.id for s in _sessions(stack)}
        login(pg, stack.url)
        pg.wait_for_selector("#live-status[data-state=live]")
        (mine,) = [s for s in _sessions(stack) if s.id not in before]
        # Near its end: the page's renewal pushes it back to a full term.
        with write_scope(stack.runtime.engine) as s:
            row = s.get(WebSession, mine.id)
            assert row is not None
            row.expires_at = utcnow() + timedelta(minutes=2)
            s.add(row)
        pg.evaluate("Vigie.session.renew()")
        wait_until(lambda: pg.evaluate("Vigie.session.renewals") >= 1, 5, "a renewal")
        with write_scope(stack.runtime.engine) as s:
            row = s.get(WebSession, mine.id)
            assert row is not None
            assert as_utc(row.expires_at) > utcnow() + timedelta(hours=11)
        # A renewal needs the page's anti-forgery token.
        status = pg.evaluate("fetch('/dashboard/session', {method: 'POST'}).then(r => r.status)")
        assert status == 403

        alert_id = stack.add_alert("13", commune_nom="Cassis")
        pg.wait_for_selector(f'tr[data-alert-id="{alert_id}"]')
        # Really expired (e.g. the account's tokens revoked): loud, and the page stays.
        with write_scope(stack.runtime.engine) as s:
            row = s.get(WebSession, mine.id)
            assert row is not None
            row.expires_at = utcnow() - timedelta(seconds=1)
            s.add(row)
        pg.evaluate("Vigie.session.renew()")
        pg.wait_for_selector("#session-banner:not([hidden])")
        assert "SESSION EXPIRÉE" in pg.inner_text("#session-banner")
        assert "/dashboard/login" not in pg.url
        assert pg.locator(f'tr[data-alert-id="{alert_id}"]').count() == 1  # still shown
        beeps = pg.evaluate("Vigie.alarm.beeps")
        wait_until(lambda: pg.evaluate("Vigie.alarm.beeps") > beeps, 5, "the expiry alarm")
        pg.screenshot(path=str(artifact("v11-session-expired-1440.png")))
        assert pg.errors == []
    finally:
        context.close()
    close_open_alerts(stack)


# -- 5. the queue -----------------------------------------------------------------------------


def test_queue_by_urgency_and_timers_from_the_press(stack: ApiStack, chromium: Any) -> None:
    close_open_alerts(stack)
    now = utcnow()
    # Five presses 9–69 s before they were all received at once (a restart).
    pressed = {
        s: stack.add_alert("13", created_at=now, device_ts=now - timedelta(seconds=s))
        for s in (9, 24, 39, 54, 69)
    }
    duress = stack.add_alert(
        "13", created_at=now, device_ts=now - timedelta(seconds=5), duress=True
    )
    skewed = stack.add_alert(
        "13", created_at=now, device_ts=now + timedelta(hours=3), flags=["clock_skew"]
    )
    taken = stack.add_alert(
        "13",
        created_at=now - timedelta(minutes=5),
        state="acknowledged",
        acknowledged_by="x",
        acknowledged_at=now,
    )
    context, pg = new_page(chromium)
    try:
        login(pg, stack.url)
        pg.wait_for_selector("#live-status[data-state=live]")
        order = pg.eval_on_selector_all("tr.alert-row", "rs => rs.map(r => r.dataset.alertId)")
        expected = [duress] + [pressed[s] for s in (69, 54, 39, 24, 9)] + [skewed]
        assert order[: len(expected)] == expected
        assert order.index(taken) > order.index(skewed)
        oldest = pg.inner_text(f'tr[data-alert-id="{pressed[69]}"] .timer')
        assert oldest.startswith("1 min"), oldest  # from the press, not from reception
        assert "horloge du boîtier décalée" in pg.inner_text(f'tr[data-alert-id="{skewed}"]')
        # A new press arriving live goes where its press time puts it, not on top.
        late = stack.add_alert("13", device_ts=utcnow() - timedelta(seconds=45))
        pg.wait_for_selector(f'tr[data-alert-id="{late}"]')
        order = pg.eval_on_selector_all("tr.alert-row", "rs => rs.map(r => r.dataset.alertId)")
        assert (
            order.index(late) == order.index(pressed[39]) + 1
            or order.index(late) == order.index(pressed[54]) + 1
        )
        assert order.index(pressed[69]) < order.index(late) < order.index(pressed[9])
        pg.screenshot(path=str(artifact("v11-queue-1440.png")), full_page=True)
    finally:
        context.close()


# -- 4. every page fits -----------------------------------------------------------------------

PAGES = [
    "/dashboard/",
    "/dashboard/devices",
    "/dashboard/coverage",
    "/dashboard/stats",
    "/dashboard/audit",
    "/dashboard/history",
]


def test_every_page_fits_390_1366_1440_without_horizontal_scroll(
    stack: ApiStack, chromium: Any
) -> None:
    alert_id = stack.add_alert(
        "13", commune_nom="Marseille", kind="sos_silent", device_id="nurse-001"
    )
    for name, viewport in VIEWPORTS.items():
        # axe-core is injected into the page: the console's own CSP would refuse it.
        context, pg = new_page(chromium, viewport, bypass_csp=True)
        try:
            pg.goto(stack.url + "/dashboard/login")
            assert_fits(pg, viewport["width"], f"login at {name}")
            assert_accessible(pg, f"login at {name}")
            login(pg, stack.url, user="admin")
            pg.wait_for_selector("#live-status[data-state=live]")
            for path in [*PAGES, f"/dashboard/alerts/{alert_id}"]:
                pg.goto(stack.url + path)
                pg.wait_for_selector("#live-status[data-state=live]")
                assert_fits(pg, viewport["width"], f"{path} at {name}")
                if name != "1366":
                    assert_accessible(pg, f"{path} at {name}")
                slug = path.strip("/").replace("/", "-").replace(alert_id, "alert") or "board"
                pg.screenshot(path=str(artifact(f"v11-{slug}-{name}.png")), full_page=True)
            assert pg.errors == []
        finally:
            context.close()


# -- 6, 7. summary, notes, incident number, caution, the worker's other alerts, history -------


def test_alert_page_summary_notes_incident_number_caution_and_history(
    stack: ApiStack, chromium: Any
) -> None:
    older = stack.add_alert(
        "13", created_at=utcnow() - timedelta(days=3), state="resolved", device_id="nurse-077"
    )
    alert_id = stack.add_alert("13", kind="sos_silent", device_id="nurse-077")
    for i in range(120):  # more than a page, more than the old 200-row cap is not needed
        stack.add_alert("84", created_at=utcnow() - timedelta(hours=i + 1), device_id=f"d-{i}")
    context, pg = new_page(chromium)
    try:
        login(pg, stack.url, f"/dashboard/alerts/{alert_id}")
        pg.wait_for_selector("#live-status[data-state=live]")
        # The escalation summary is at the top, in French (no escalation in this app).
        summary = pg.inner_text("#summary")
        assert summary == "Aucun référent n'a encore été prévenu par Vigie."
        # Silent SOS: do not call the device back.
        assert "NE PAS RAPPELER LE BOÎTIER" in pg.inner_text("#caution").upper()
        # The worker's other recent alerts.
        assert pg.locator(f'#others a[href$="{older}"]').count() == 1
        # A note at any time, and the police's incident number: in the timeline, live.
        pg.fill("#note-text", "Patrouille demandée au CIC, arrivée estimée 8 min.")
        pg.click("#note-button")
        pg.wait_for_selector("text=Note ajoutée à la chronologie.")
        assert "Note : Patrouille demandée au CIC" in pg.inner_text("#alert-timeline")
        pg.fill("#police-ref", "PV 2026/013/004512")
        pg.click("#police-ref-button")
        pg.wait_for_selector("#police-ref-current")
        assert "PV 2026/013/004512" in pg.inner_text("#police-ref-current")
        assert "PV 2026/013/004512" in pg.inner_text("#alert-timeline")
        actions = [a.action for a in stack.audit()]
        assert "alert.note" in actions and "alert.police_ref" in actions
        pg.screenshot(path=str(artifact("v11-alert-annotated-1440.png")), full_page=True)
        # History: search, and pages with no cap.
        pg.goto(stack.url + "/dashboard/history")
        count = pg.inner_text("#history-count")
        total = int(count.split(" ")[0])
        assert total >= 122
        pg.click("#history-next")
        assert "page 2 sur" in pg.inner_text("#history-count")
        pg.goto(stack.url + "/dashboard/history?q=d-119")
        assert pg.inner_text("#history-count").startswith("1 alerte(s)")
        assert pg.errors == []
    finally:
        context.close()


# -- 8. where, for real -----------------------------------------------------------------------


def test_address_map_links_and_new_positions_drawn_live(stack: ApiStack, chromium: Any) -> None:
    from alert_server.alerts import service as alerts_service

    alert_id = stack.add_alert("13", commune_nom="Marseille")  # at 43.2965, 5.3698
    nowhere = stack.add_alert("13", commune_nom="Cassis", pos_lat=43.25, pos_lon=5.6)
    context, pg = new_page(chromium)
    try:
        login(pg, stack.url, f"/dashboard/alerts/{alert_id}")
        pg.wait_for_selector("#detail[data-address=found]")
        where = pg.inner_text("#essential-where")
        assert "2 Quai du Port 13002 Marseille" in where and "Marseille" in where
        assert "43.2965" in (pg.get_attribute("#link-geoportail", "href") or "")
        assert "www.geoportail.gouv.fr/carte" in (
            pg.get_attribute("#link-geoportail", "href") or ""
        )
        osm = pg.get_attribute("#link-osm", "href") or ""
        assert osm.startswith("https://www.openstreetmap.org/?mlat=43.2965&mlon=5.3698")
        pg.wait_for_selector("#map[data-outlines]")
        assert pg.get_attribute("#map", "data-positions") == "1"
        # The worker moves: the new position is drawn without reloading.
        with write_scope(stack.runtime.engine) as s:
            alerts_service.add_event(
                s,
                alert_id=alert_id,
                at=utcnow(),
                type_="position",
                lat=43.2990,
                lon=5.3720,
                acc_m=15,
                source="gps",
            )
        pg.wait_for_selector("#map[data-positions='2']")
        assert pg.locator(".leaflet-tooltip-pane, path.leaflet-interactive").count() >= 1
        assert "2 Quai du Port" in pg.inner_text("#essential-where")  # kept after refresh
        pg.screenshot(path=str(artifact("v11-alert-where-1440.png")), full_page=True)
        # No address found (or the service unreachable): the commune alone.
        pg.goto(f"{stack.url}/dashboard/alerts/{nowhere}")
        pg.wait_for_selector("#detail[data-address=none]")
        assert pg.inner_text("#where-address") == ""
        assert "Cassis" in pg.inner_text("#essential-where")
        assert pg.errors == []
    finally:
        context.close()


def test_fleet_map_devices_online_and_visits_in_progress(stack: ApiStack, chromium: Any) -> None:
    from alert_server.devices.models import Device
    from alert_server.sessions.models import ACTIVE, VisitSession

    now = utcnow()
    with write_scope(stack.runtime.engine) as s:
        device = (
            s.get(Device, "nurse-001")
            or s.exec(select(Device).where(Device.device_id == "nurse-001")).one()
        )
        device.online = True
        device.last_seen_at = now
        device.last_lat, device.last_lon, device.last_acc_m = 43.30, 5.40, 20.0
        device.last_pos_at = now
        s.add(device)
        s.add(
            VisitSession(
                device_id="nurse-001",
                session_id="visit-1",
                state=ACTIVE,
                memo="12 rue du Patient (jamais envoyé à la carte)",
                started_at=now - timedelta(minutes=25),
                expected_end=now + timedelta(minutes=20),
                pos_lat=43.301,
                pos_lon=5.401,
                updated_at=now,
            )
        )
    context, pg = new_page(chromium)
    try:
        login(pg, stack.url, "/dashboard/devices", user="admin")
        pg.wait_for_selector("#fleet-map[data-devices='1'][data-visits='1']")
        # No tiles in tests: the same outlines background as the alert page.
        assert pg.get_attribute("#fleet-map", "data-basemap") == "outlines"
        visits = pg.inner_text("#visits")
        assert "nurse-001" in visits and "25 min" in visits and "en cours" in visits
        assert "Patient" not in pg.content()  # the memo never reaches the map
        pg.screenshot(path=str(artifact("v11-fleet-1440.png")), full_page=True)
        assert pg.errors == []
    finally:
        context.close()
    # An account restricted to départements does not see the fleet (as the devices page).
    stack.add_user("bdr", departements=("13",))
    context, pg = new_page(chromium)
    try:
        login(pg, stack.url, user="bdr")
        status = pg.evaluate("fetch('/dashboard/fleet.json').then(r => r.status)")
        assert status == 403
    finally:
        context.close()


def test_history_search_and_paging_in_the_browser(stack: ApiStack, chromium: Any) -> None:
    """Typed in the search box, as a referent would on her phone: the matches only, newest
    first, 50 a page; the next and previous pages keep the search; "_" and "%" are searched
    as typed, not as wildcards."""
    now = utcnow()
    ids = [
        stack.add_alert(
            "84",
            created_at=now - timedelta(days=2, minutes=i),
            device_id=f"tour_vaison-{i:02d}",
            commune_nom="Vaison-la-Romaine",
        )
        for i in range(55)
    ]
    # "tour_vaison" with "_" as a wildcard would find this one too.
    decoy = stack.add_alert("84", created_at=now - timedelta(days=3), device_id="tour-vaison-x")
    context, pg = new_page(chromium, PHONE, is_mobile=True, has_touch=True)
    try:
        login(pg, stack.url, "/dashboard/history")

        def search(term: str) -> str:
            pg.fill("#history-q", term)
            pg.click("form[role=search] button[type=submit]")
            pg.wait_for_load_state()
            return pg.inner_text("#history-count")

        def rows() -> list[str]:
            return pg.eval_on_selector_all(
                "#history tr.alert-row", "rs => rs.map(r => r.dataset.alertId)"
            )

        assert search("tour_vaison") == "55 alerte(s) pour « tour_vaison » — page 1 sur 2"
        assert rows() == ids[:50]  # newest first
        assert pg.locator("#history-prev").count() == 0
        assert_fits(pg, PHONE["width"], "history search at 390")
        pg.screenshot(path=str(artifact("v11-history-search-390.png")))  # the first screen
        pg.locator("#history-next").scroll_into_view_if_needed()
        pg.screenshot(path=str(artifact("v11-history-pager-390.png")))
        pg.click("#history-next")
        pg.wait_for_load_state()
        assert pg.inner_text("#history-count") == (
            "55 alerte(s) pour « tour_vaison » — page 2 sur 2"
        )
        assert rows() == ids[50:]
        assert pg.input_value("#history-q") == "tour_vaison"  # the search is kept
        assert pg.locator("#history-next").count() == 0
        pg.click("#history-prev")
        pg.wait_for_load_state()
        assert "page 1 sur 2" in pg.inner_text("#history-count")
        assert rows() == ids[:50]
        # A commune, in any case; one alert by its identifier.
        assert search("VAISON-LA-ROMAINE").startswith("55 alerte(s)")
        assert search(ids[7]).startswith("1 alerte(s)")
        assert rows() == [ids[7]]
        # "_" is a letter, not "any character"; "%" matches nothing here, not everything.
        assert search("tour-vaison").startswith("1 alerte(s)")
        assert rows() == [decoy]
        assert search("%").startswith("0 alerte(s)")
        assert pg.inner_text("#history tbody") == "Aucune alerte."
        pg.screenshot(path=str(artifact("v11-history-none-390.png")), full_page=True)
        assert pg.errors == []
    finally:
        context.close()


# -- the map's background: Plan IGN tiles, or commune outlines without network ----------------


def _png(rgb: tuple[int, int, int] = (236, 230, 214)) -> bytes:
    """A plain 256×256 tile."""
    raw = b"".join(b"\x00" + bytes(rgb) * 256 for _ in range(256))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 256, 256, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@contextmanager
def tiles_from(stack: ApiStack, url: str | None) -> Iterator[None]:
    """The running app with another tile setting (as VIGIE_MAP_TILE_URL would give)."""
    saved = stack.app.state.dashboard
    stack.app.state.dashboard = dataclasses.replace(
        saved, tile_url=url, tile_attribution="Tuiles de test" if url else ""
    )
    try:
        yield
    finally:
        stack.app.state.dashboard = saved


def _attr(pg: Any, selector: str, name: str) -> str:
    return pg.get_attribute(selector, name) or ""


def import_communes_of_13(stack: ApiStack, tmp: Path) -> None:
    """The communes of the Bouches-du-Rhône (119) from the shared boundary data, imported as
    `vigie geo import` would (the whole country costs ~15 s; the module's app imports none)."""
    from alert_server.geo.service import import_files

    with gzip.open(GEO_DIR / "communes-avec-outre-mer.geojson.gz", "rt", encoding="utf-8") as f:
        text = f.read()
    features = []
    for piece in text.split('{"type":"Feature",')[1:]:
        if '"code":"13' not in piece:
            continue
        body = piece.rstrip()
        body = body[:-1] if body.endswith(",") else body[:-2]  # "}," or the last "}]}"
        features.append(json.loads('{"type":"Feature",' + body))
    path = tmp / "communes-13.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    import_files(stack.runtime.engine, communes=path)


def communes_drawn(pg: Any, at_least: int = 5) -> None:
    """The communes around the Vieux-Port (at zoom 12: Marseille and its neighbours on a
    desktop; on a phone's small map, Marseille alone may fill the view)."""
    wait_until(
        lambda: (
            _attr(pg, "#map", "data-communes").isdigit()
            and int(_attr(pg, "#map", "data-communes")) >= at_least
        ),
        15,
        "the communes in view",
    )


def test_map_over_tiles_or_commune_outlines_when_tiles_are_out_of_reach(
    stack: ApiStack, chromium: Any, tmp_path: Path
) -> None:
    """Plan IGN is the default (tests/dashboard/test_pages.py); here: tiles that load are the
    background; tiles out of reach (a demo without network) or none at all give the outlines
    of the communes in view, served by Vigie from the loaded boundaries, names on hover."""
    import_communes_of_13(stack, tmp_path)
    alert_id = stack.add_alert("13", commune_nom="Marseille")  # the Vieux-Port
    served: list[str] = []
    png = _png()

    async def tile_app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        served.append(scope["path"])
        headers = [(b"content-type", b"image/png")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": png})

    tile_server = ThreadedServer(tile_app).start()
    try:
        # Tiles load: they are the background, no commune is drawn over the streets.
        with tiles_from(stack, tile_server.url + "/{z}/{x}/{y}.png"):
            context, pg = new_page(chromium, bypass_csp=True)  # the test's tile origin
            try:
                login(pg, stack.url, f"/dashboard/alerts/{alert_id}")
                pg.wait_for_selector("#map[data-basemap=tiles]")
                pg.wait_for_selector("#map[data-outlines]")
                assert re.fullmatch(r"/16/\d+/\d+\.png", served[0]), served[:3]
                assert _attr(pg, "#map", "data-communes") == ""
                assert "Tuiles de test" in pg.inner_text(".leaflet-control-attribution")
                pg.screenshot(path=str(artifact("v11-map-tiles-1440.png")), full_page=True)
            finally:
                context.close()
        # Out of reach (nothing listens there): outlines of the communes, and it says so.
        dead = f"http://127.0.0.1:{free_port()}/{{z}}/{{x}}/{{y}}.png"
        for name, viewport in (("1440", DESKTOP), ("390", PHONE)):
            with tiles_from(stack, dead):
                context, pg = new_page(chromium, viewport, bypass_csp=True)
                try:
                    login(pg, stack.url, f"/dashboard/alerts/{alert_id}")
                    pg.wait_for_selector("#map[data-basemap=outlines]")
                    assert "Fond de carte injoignable" in pg.inner_text(".map-note")
                    least = 5 if name == "1440" else 1
                    communes_drawn(pg, least)
                    assert pg.locator(".leaflet-communes-pane path").count() >= least
                    # The name of a commune on hover: 2-3 km north of the Vieux-Port.
                    pg.locator("#map").scroll_into_view_if_needed()
                    box = pg.locator("#map").bounding_box()
                    assert box is not None
                    pg.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2 - 90)
                    pg.wait_for_selector(".commune-label")
                    assert pg.inner_text(".commune-label") == "Marseille"
                    assert_fits(pg, viewport["width"], f"map fallback at {name}")
                    pg.screenshot(
                        path=str(artifact(f"v11-map-offline-communes-{name}.png")), full_page=True
                    )
                    pg.locator("#map").screenshot(
                        path=str(artifact(f"v11-map-offline-communes-{name}-map.png"))
                    )
                    assert pg.errors == []
                finally:
                    context.close()
    finally:
        tile_server.stop()
    # No tiles at all (VIGIE_MAP_TILE_URL=none, as in these tests): outlines at once, no note.
    context, pg = new_page(chromium)
    try:
        login(pg, stack.url, f"/dashboard/alerts/{alert_id}")
        pg.wait_for_selector("#map[data-basemap=outlines]")
        assert pg.locator(".map-note").count() == 0
        communes_drawn(pg)
        # The server's answer: the view's communes, simplified; a box too large gets none.
        near = pg.evaluate(
            """() => fetch(Vigie.prefix + '/geo/communes.geojson?bbox=5.30,43.25,5.45,43.35')
                .then(r => r.json())"""
        )
        assert near["complete"] is True
        names = {f["properties"]["nom"] for f in near["features"]}
        assert "Marseille" in names and len(names) < 40, names
        assert near["attribution"] == "IGN – ADMIN EXPRESS COG 2018 / INSEE COG 2018"
        wide = pg.evaluate(
            """() => fetch(Vigie.prefix + '/geo/communes.geojson?bbox=0,40,8,48')
                .then(r => r.json())"""
        )
        assert wide["complete"] is False and wide["features"] == []
        assert pg.errors == []
    finally:
        context.close()
