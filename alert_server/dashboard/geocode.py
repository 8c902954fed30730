"""The address of a position: reverse geocoding through one adapter.

In production the national address service answers (Géoplateforme, the IGN's reverse
geocoding API over the Base Adresse Nationale: ``https://data.geopf.fr/geocodage/reverse``);
``VIGIE_GEOCODER_URL`` points elsewhere (a local mirror, the test suite's fake) or, set to
``none``, turns it off. Answers are cached (positions rounded to ~1 m), and failures are
cached briefly, so that a busy console never hammers the service.

Nothing waits on it: the alert page is rendered with the commune (known from Vigie's own
boundaries) and asks ``/dashboard/geo/address`` afterwards; when the service is unreachable
or finds nothing the commune alone stays.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from alert_server.dashboard.auth import PageSession, page_session

log = logging.getLogger(__name__)
router = APIRouter(prefix="/dashboard/geo", include_in_schema=False)

BAN_REVERSE_URL = "https://data.geopf.fr/geocodage/reverse"
TIMEOUT_S = 2.5
CACHE_SIZE = 5000
FAILURE_TTL_S = 60.0
# An address farther than this from the position is not "the" address (a field, a forest).
MAX_DISTANCE_M = 150


@dataclass(frozen=True, slots=True)
class Address:
    label: str
    distance_m: float | None


class Geocoder:
    """Reverse geocoding against a BAN-compatible ``/reverse`` endpoint, cached."""

    def __init__(self, url: str | None, *, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._cache: OrderedDict[tuple[float, float], tuple[Address | None, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.requests = 0

    @classmethod
    def from_env(cls) -> Geocoder:
        value = os.environ.get("VIGIE_GEOCODER_URL")
        if value is None:
            return cls(BAN_REVERSE_URL)
        value = value.strip()
        if value.lower() in ("", "none", "off"):
            return cls(None)
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"VIGIE_GEOCODER_URL : {value!r} n'est pas une URL http(s)")
        return cls(value)

    def reverse(self, lat: float, lon: float) -> Address | None:
        if self.url is None:
            return None
        key = (round(lat, 5), round(lon, 5))
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and (hit[0] is not None or now - hit[1] < FAILURE_TTL_S):
                self._cache.move_to_end(key)
                return hit[0]
        found = self._ask(lat, lon)
        with self._lock:
            self._cache[key] = (found, now)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return found

    def _ask(self, lat: float, lon: float) -> Address | None:
        assert self.url is not None
        self.requests += 1
        # Imported at the first question rather than at every server start (httpx and what it
        # imports cost a tenth of a second or more).
        import httpx

        try:
            r = httpx.get(
                self.url,
                params={"lat": f"{lat:.6f}", "lon": f"{lon:.6f}", "limit": 1, "index": "address"},
                timeout=self.timeout_s,
            )
            r.raise_for_status()
            return parse(r.json())
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("reverse geocoding unavailable: %s", exc)
            return None


def parse(body: Any) -> Address | None:
    """The first feature of a BAN/Géoplateforme answer, if close enough."""
    features = body.get("features") if isinstance(body, dict) else None
    if not isinstance(features, list) or not features:
        return None
    props = features[0].get("properties") if isinstance(features[0], dict) else None
    if not isinstance(props, dict) or not isinstance(props.get("label"), str):
        return None
    distance = props.get("distance")
    if isinstance(distance, int | float) and distance > MAX_DISTANCE_M:
        return None
    return Address(
        label=props["label"][:200],
        distance_m=float(distance) if isinstance(distance, int | float) else None,
    )


def geocoder_of(request: Request) -> Geocoder:
    app_state = request.app.state
    found = getattr(app_state, "geocoder", None)
    if found is None:
        found = Geocoder.from_env()
        app_state.geocoder = found
    assert isinstance(found, Geocoder)
    return found


@router.get("/address")
def address(
    request: Request,
    _sess: Annotated[PageSession, Depends(page_session)],
    lat: Annotated[float, Query(ge=-90, le=90)],
    lon: Annotated[float, Query(ge=-180, le=180)],
) -> JSONResponse:
    found = geocoder_of(request).reverse(lat, lon)
    if found is None:
        return JSONResponse({"address": None})
    return JSONResponse({"address": found.label, "distance_m": found.distance_m})
