"""Wi-Fi / cell positioning providers, behind one protocol with one method.

* ``OfflineRadioTable``: known access points and cells, imported from a CSV.
* ``HttpGeolocationProvider``: any service speaking the common geolocation request shape
  (Google Geolocation API v1, BeaconDB, the former Mozilla Location Service, Unwired/"universal"
  in Traccar): ``POST`` ``{"wifiAccessPoints": [...], "cellTowers": [...]}`` →
  ``{"location": {"lat", "lng"}, "accuracy"}``.

Offline table CSV (``,`` or ``;`` separated, UTF-8, header required, ``#`` lines ignored)::

    type,key,lat,lon,acc_m
    wifi,a4:2b:b0:11:22:33,43.29650,5.36980,30
    cell,208-1-1234-56789,43.30000,5.40000,1500

``type`` is ``wifi`` (``key`` = BSSID, any case, ``:``/``-``/no separator) or ``cell`` (``key`` =
``MCC-MNC-LAC-CID`` in decimal); ``acc_m`` is the radius within which a device that sees this
emitter is (typical range: ~50 m for Wi-Fi, 0.5–5 km for a cell).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from alert_server.geo.boundaries import GeoDataError, read_bytes
from alert_server.geo.index import haversine_m, valid_lat_lon
from alert_server.geo.schemas import CellTower, ProviderFix, RadioScan

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

_BSSID_RE = re.compile(r"^[0-9a-f]{12}$")
# Signal strength assumed for an emitter reported without one (a middling value).
_DEFAULT_RSSI_DBM = -75


class RadioLocator(Protocol):
    """Estimates a position from Wi-Fi access points and cells."""

    def locate(self, scan: RadioScan, *, timeout_s: float) -> ProviderFix | None:
        """A position, or None when the provider cannot tell. May raise; callers fall through."""
        ...


def normalize_bssid(bssid: str) -> str | None:
    """``"A4-2B-B0-11-22-33"`` → ``"a4:2b:b0:11:22:33"``; None when not a MAC address."""
    hexa = re.sub(r"[^0-9a-f]", "", bssid.lower())
    if not _BSSID_RE.match(hexa) or len(re.sub(r"[:\-. ]", "", bssid)) != 12:
        return None
    return ":".join(hexa[i : i + 2] for i in range(0, 12, 2))


def cell_key(cell: CellTower) -> str:
    return f"{cell.mcc}-{cell.mnc}-{cell.lac}-{cell.cid}"


@dataclass(frozen=True, slots=True)
class _Emitter:
    lat: float
    lon: float
    acc_m: float


class OfflineRadioTable:
    """Known emitters, in memory. Wi-Fi wins over cells (tens of metres against kilometres)."""

    name = "offline"

    def __init__(self, wifi: Mapping[str, _Emitter], cells: Mapping[str, _Emitter]) -> None:
        self._wifi = dict(wifi)
        self._cells = dict(cells)

    def __len__(self) -> int:
        return len(self._wifi) + len(self._cells)

    @classmethod
    def from_csv(cls, path: Path) -> OfflineRadioTable:
        """Load the CSV described in the module docstring; ``GeoDataError`` ``FILE:LINE : …``."""
        text = read_bytes(path).decode("utf-8-sig", errors="replace")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            raise GeoDataError(f"{path}:1: fichier vide (en-tête type,key,lat,lon,acc_m attendu)")
        delimiter = ";" if lines[0].count(";") > lines[0].count(",") else ","
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        header: list[str] | None = None
        wifi: dict[str, _Emitter] = {}
        cells: dict[str, _Emitter] = {}
        for row in reader:
            line = reader.line_num
            if not row or not any(c.strip() for c in row) or row[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [c.strip().lower() for c in row]
                if header != ["type", "key", "lat", "lon", "acc_m"]:
                    raise GeoDataError(
                        f"{path}:{line}: en-tête « {delimiter.join(row)} », "
                        f"attendu type{delimiter}key{delimiter}lat{delimiter}lon{delimiter}acc_m"
                    )
                continue
            if len(row) != 5:
                raise GeoDataError(f"{path}:{line}: {len(row)} colonne(s) au lieu de 5")
            kind, key = row[0].strip().lower(), row[1].strip()
            try:
                lat, lon, acc = float(row[2]), float(row[3]), float(row[4])
            except ValueError as exc:
                raise GeoDataError(f"{path}:{line}: lat, lon ou acc_m non numérique") from exc
            if not valid_lat_lon(lat, lon):
                raise GeoDataError(f"{path}:{line}: lat/lon hors bornes ({lat}, {lon})")
            if not (math.isfinite(acc) and acc > 0):
                raise GeoDataError(f"{path}:{line}: acc_m doit être un nombre > 0")
            emitter = _Emitter(lat, lon, acc)
            if kind == "wifi":
                bssid = normalize_bssid(key)
                if bssid is None:
                    raise GeoDataError(f"{path}:{line}: BSSID « {key} » invalide")
                wifi[bssid] = emitter
            elif kind == "cell":
                parts = key.split("-")
                if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
                    raise GeoDataError(
                        f"{path}:{line}: cellule « {key} » invalide (attendu MCC-MNC-LAC-CID)"
                    )
                cells["-".join(str(int(p)) for p in parts)] = emitter
            else:
                raise GeoDataError(
                    f"{path}:{line}: type « {row[0].strip()} » inconnu (attendu wifi ou cell)"
                )
        if header is None:
            raise GeoDataError(f"{path}:1: en-tête type,key,lat,lon,acc_m absent")
        return cls(wifi, cells)

    def locate(self, scan: RadioScan, *, timeout_s: float) -> ProviderFix | None:
        seen_wifi = [
            (self._wifi[b], ap.rssi)
            for ap in scan.wifi
            if (b := normalize_bssid(ap.bssid)) is not None and b in self._wifi
        ]
        if seen_wifi:
            return _weighted(seen_wifi, self.name)
        seen_cells = [
            (self._cells[cell_key(c)], c.rssi) for c in scan.cells if cell_key(c) in self._cells
        ]
        if seen_cells:
            return _weighted(seen_cells, self.name)
        return None


def _weighted(seen: Sequence[tuple[_Emitter, int | None]], name: str) -> ProviderFix:
    """Signal-weighted centroid; the radius covers every emitter's own range (conservative)."""
    # Received power in mW-like units: a 10 dB stronger emitter is 10 times as close a bet.
    weights = [10 ** ((rssi if rssi is not None else _DEFAULT_RSSI_DBM) / 10) for _, rssi in seen]
    total = sum(weights)
    lat = sum(e.lat * w for (e, _), w in zip(seen, weights, strict=True)) / total
    lon = sum(e.lon * w for (e, _), w in zip(seen, weights, strict=True)) / total
    acc = max(haversine_m(lat, lon, e.lat, e.lon) + e.acc_m for e, _ in seen)
    return ProviderFix(lat=lat, lon=lon, acc_m=acc, provider=name)


class HttpGeolocationProvider:
    """A geolocation web service (Google-compatible request and response shapes).

    ``url`` includes any key (``https://www.googleapis.com/geolocation/v1/geolocate?key=…``,
    ``https://api.beacondb.net/v1/geolocate``). Every failure (timeout, HTTP error, unexpected
    body) is logged and answers None, so the resolver falls through to the next source.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        import httpx  # here: only a server with VIGIE_GEO_PROVIDER_URL needs it at all

        self.url = url
        self.name = name or (urlsplit(url).hostname or "http")
        self._client = httpx.Client(
            headers={"User-Agent": "vigie-alert-server", **(headers or {})},
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpGeolocationProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def request_body(scan: RadioScan) -> dict[str, Any]:
        body: dict[str, Any] = {"considerIp": False}
        aps = [
            {"macAddress": b, **({"signalStrength": ap.rssi} if ap.rssi is not None else {})}
            for ap in scan.wifi
            if (b := normalize_bssid(ap.bssid)) is not None
        ]
        cells = [
            {
                "mobileCountryCode": c.mcc,
                "mobileNetworkCode": c.mnc,
                "locationAreaCode": c.lac,
                "cellId": c.cid,
                **({"signalStrength": c.rssi} if c.rssi is not None else {}),
            }
            for c in scan.cells
        ]
        if aps:
            body["wifiAccessPoints"] = aps
        if cells:
            body["cellTowers"] = cells
        return body

    def locate(self, scan: RadioScan, *, timeout_s: float) -> ProviderFix | None:
        if scan.empty:
            return None
        import httpx

        try:
            resp = self._client.post(
                self.url, json=self.request_body(scan), timeout=httpx.Timeout(timeout_s)
            )
        except httpx.HTTPError as exc:
            log.warning(
                "geolocation provider failed", extra={"provider": self.name, "error": repr(exc)}
            )
            return None
        if resp.status_code != 200:
            # 404 is the usual "no position for these emitters".
            log.info(
                "geolocation provider answered no position",
                extra={"provider": self.name, "status": resp.status_code},
            )
            return None
        try:
            data = resp.json()
            lat = float(data["location"]["lat"])
            lon = float(data["location"]["lng"])
            acc_raw = data.get("accuracy")
            acc = float(acc_raw) if acc_raw is not None else None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "geolocation provider sent an unexpected body",
                extra={"provider": self.name, "error": repr(exc)},
            )
            return None
        if not valid_lat_lon(lat, lon) or (
            acc is not None and not (math.isfinite(acc) and acc > 0)
        ):
            return None
        return ProviderFix(lat=lat, lon=lon, acc_m=acc, provider=self.name)
