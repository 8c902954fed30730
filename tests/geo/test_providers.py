"""Wi-Fi/cell providers against a real HTTP server on 127.0.0.1, and the offline table."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from alert_server.geo.boundaries import GeoDataError
from alert_server.geo.index import GeoIndex
from alert_server.geo.providers import HttpGeolocationProvider, OfflineRadioTable, normalize_bssid
from alert_server.geo.resolve import ask_providers, resolve_position
from alert_server.geo.schemas import (
    CellTower,
    Fix,
    PositionInputs,
    RadioScan,
    Site,
    WifiAccessPoint,
)

NOW = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
SCAN = RadioScan(
    wifi=(WifiAccessPoint("A4-2B-B0-11-22-33", -60), WifiAccessPoint("00:11:22:33:44:55", -80)),
    cells=(CellTower(208, 1, 1234, 56789, -81),),
    measured_at=NOW,
)


class FakeGeolocation:
    """A geolocation service: ``/ok`` answers Aubagne, ``/slow`` never answers in time,
    ``/error`` is a 500, ``/garbage`` is not JSON, ``/notfound`` is the usual 404."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append((self.path, body))
                if self.path == "/slow":
                    fake.release.wait(timeout=30)  # held until the test ends
                    self._send(200, {"location": {"lat": 43.0, "lng": 5.0}, "accuracy": 10})
                elif self.path == "/ok":
                    self._send(200, {"location": {"lat": 43.2927, "lng": 5.5708}, "accuracy": 35.5})
                elif self.path == "/error":
                    self._send(500, {"error": "boom"})
                elif self.path == "/notfound":
                    self._send(404, {"error": {"code": 404, "message": "notFound"}})
                else:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b"<html>not json")

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the slow case)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def provider(self, path: str) -> HttpGeolocationProvider:
        return HttpGeolocationProvider(self.base + path, name=path.strip("/"))


@pytest.fixture
def service() -> Iterator[FakeGeolocation]:
    fake = FakeGeolocation()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        fake.server.shutdown()
        fake.server.server_close()


def test_request_and_response_shapes(service: FakeGeolocation) -> None:
    with service.provider("/ok") as provider:
        found = provider.locate(SCAN, timeout_s=2)
    assert found is not None
    assert (found.lat, found.lon, found.acc_m, found.provider) == (43.2927, 5.5708, 35.5, "ok")
    path, body = service.requests[0]
    assert path == "/ok"
    assert body == {
        "considerIp": False,
        "wifiAccessPoints": [
            {"macAddress": "a4:2b:b0:11:22:33", "signalStrength": -60},
            {"macAddress": "00:11:22:33:44:55", "signalStrength": -80},
        ],
        "cellTowers": [
            {
                "mobileCountryCode": 208,
                "mobileNetworkCode": 1,
                "locationAreaCode": 1234,
                "cellId": 56789,
                "signalStrength": -81,
            }
        ],
    }


@pytest.mark.parametrize("path", ["/error", "/notfound", "/garbage"])
def test_failures_answer_none(service: FakeGeolocation, path: str) -> None:
    with service.provider(path) as provider:
        assert provider.locate(SCAN, timeout_s=2) is None


def test_unreachable_provider_answers_none() -> None:
    # Nothing listens on port 9 (discard) of the loopback in the test environment.
    with HttpGeolocationProvider("http://127.0.0.1:9/geolocate") as provider:
        assert provider.locate(SCAN, timeout_s=1) is None


def test_slow_provider_is_abandoned_and_the_next_one_answers(service: FakeGeolocation) -> None:
    slow, failing, ok = (service.provider(p) for p in ("/slow", "/error", "/ok"))
    inputs = PositionInputs(radio=SCAN, alert_id="a1", device_id="d1")
    started = time.monotonic()
    found = ask_providers([slow, failing, ok], inputs, timeout_s=0.3)
    elapsed = time.monotonic() - started
    assert found is not None and found.provider == "ok"
    # The slow server holds its answer until the test ends (30 s): we did not wait for it.
    assert elapsed < 3.0
    assert [p for p, _ in service.requests] == ["/slow", "/error", "/ok"]
    for p in (slow, failing, ok):
        p.close()


def test_resolution_falls_through_a_slow_provider(
    service: FakeGeolocation, france: GeoIndex
) -> None:
    slow = service.provider("/slow")
    started = time.monotonic()
    r = resolve_position(
        PositionInputs(radio=SCAN, site=Site(43.2965, 5.3698, "Pharmacie")),
        now=NOW,
        index=france,
        providers=[slow],
        provider_timeout_s=0.3,
    )
    assert time.monotonic() - started < 3.0
    assert (r.source, r.commune_code) == ("site", "13055")
    slow.close()


def test_resolution_uses_the_provider(service: FakeGeolocation, france: GeoIndex) -> None:
    with service.provider("/ok") as ok:
        r = resolve_position(
            PositionInputs(
                fix=Fix(43.2965, 5.3698, 10, datetime(2026, 11, 24, 20, 0, tzinfo=UTC)), radio=SCAN
            ),
            now=NOW,
            index=france,
            providers=[ok],
        )
    assert (r.source, r.provider, r.commune_code, r.acc_m) == ("provider", "ok", "13005", 35.5)


# -- offline table ---------------------------------------------------------------------------

TABLE = """\
# known emitters of the Marseille office
type,key,lat,lon,acc_m
wifi,A4:2B:B0:11:22:33,43.29650,5.36980,30
wifi,a42bb0112244,43.29700,5.37000,40
cell,208-1-1234-56789,43.30000,5.40000,1500
cell,208-01-99-1,48.07,-0.77,2000
"""


def test_offline_table(tmp_path: Path) -> None:
    path = tmp_path / "radio.csv"
    path.write_text(TABLE, encoding="utf-8")
    table = OfflineRadioTable.from_csv(path)
    assert len(table) == 4
    # One known AP among the scan: its position, its range.
    found = table.locate(SCAN, timeout_s=0.1)
    assert found is not None and found.provider == "offline"
    assert (found.lat, found.lon) == pytest.approx((43.2965, 5.3698))
    assert found.acc_m == pytest.approx(30)
    # Two APs: between them, the stronger one weighs more; the radius covers both.
    two = RadioScan(
        wifi=(WifiAccessPoint("a4:2b:b0:11:22:33", -50), WifiAccessPoint("a4:2b:b0:11:22:44", -70))
    )
    found = table.locate(two, timeout_s=0.1)
    assert found is not None and 43.2965 < found.lat < 43.29675
    assert found.acc_m is not None and found.acc_m > 40
    # No known AP: the cell (leading zeros in the key are normalised).
    cells = RadioScan(cells=(CellTower(208, 1, 99, 1, None),))
    found = table.locate(cells, timeout_s=0.1)
    assert found is not None and (found.lat, found.acc_m) == (48.07, 2000)
    assert (
        table.locate(RadioScan(wifi=(WifiAccessPoint("ff:ff:ff:ff:ff:ff"),)), timeout_s=0.1) is None
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "radio.csv:1: fichier vide"),
        ("kind,key,lat,lon\n", "radio.csv:1: en-tête"),
        ("type,key,lat,lon,acc_m\nwifi,zz:zz,43,5,30\n", "radio.csv:2: BSSID « zz:zz » invalide"),
        ("type,key,lat,lon,acc_m\ncell,208-1-1234,43,5,30\n", "radio.csv:2: cellule"),
        ("type,key,lat,lon,acc_m\nbeacon,x,43,5,30\n", "radio.csv:2: type « beacon » inconnu"),
        (
            "type,key,lat,lon,acc_m\nwifi,a42bb0112233,6247000,892000,30\n",
            "radio.csv:2: lat/lon hors bornes",
        ),
        ("type,key,lat,lon,acc_m\nwifi,a42bb0112233,43,5,0\n", "radio.csv:2: acc_m"),
        ("type,key,lat,lon,acc_m\nwifi,a42bb0112233,43,5\n", "radio.csv:2: 4 colonne(s)"),
    ],
)
def test_offline_table_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "radio.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(GeoDataError) as err:
        OfflineRadioTable.from_csv(path)
    assert message in str(err.value)


def test_normalize_bssid() -> None:
    assert normalize_bssid("A4-2B-B0-11-22-33") == "a4:2b:b0:11:22:33"
    assert normalize_bssid("a42bb0112233") == "a4:2b:b0:11:22:33"
    assert normalize_bssid("a4:2b:b0:11:22") is None
    assert normalize_bssid("g4:2b:b0:11:22:33") is None
