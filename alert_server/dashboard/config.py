"""Dashboard settings derived from ``Settings`` and from the dashboard's own environment
variables (read here so that ``settings.py`` stays the core's):

- ``VIGIE_MAP_TILE_URL``: the tile server of the maps' street background. Unset: IGN's public
  Plan IGN layer from the Géoplateforme (``PLAN_IGN_URL``), no key needed. ``none`` (or empty):
  no tiles. Whatever the setting, when no tile can be loaded (no network, as in a demo on a
  laptop) the maps fall back to département and commune outlines with names, drawn from the
  boundaries loaded in Vigie (``dashboard/geo.py``).
- ``VIGIE_MAP_TILE_ATTRIBUTION``: the attribution that tile server requires (Plan IGN's by
  default).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from alert_server.settings import Settings

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
TEMPLATES_DIR = PACKAGE_DIR / "templates"
BOUNDARY_ATTRIBUTION = "IGN – ADMIN EXPRESS COG 2018 / INSEE COG 2018"
# IGN's public Plan IGN (v2) layer, WMTS on the Géoplateforme in Web Mercator ("PM"): free,
# without a key, under the Licence Ouverte Etalab 2.0.
PLAN_IGN_URL = (
    "https://data.geopf.fr/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0"
    "&LAYER=GEOGRAPHICALGRIDSYSTEMS.PLANIGNV2&STYLE=normal&TILEMATRIXSET=PM"
    "&FORMAT=image/png&TILEMATRIX={z}&TILEROW={y}&TILECOL={x}"
)
PLAN_IGN_ATTRIBUTION = "Plan IGN © IGN – Géoplateforme"
NO_TILES = ("", "none", "aucun")


def _static_version() -> str:
    """A short hash of the static files, appended to their URLs so a new release is never
    served from a stale browser cache (a console with last week's JavaScript is a hazard)."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(STATIC_DIR).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def tile_origin(url: str) -> str | None:
    """The CSP source for a tile URL template: ``https://{s}.tile.x.org/{z}/…`` →
    ``https://*.tile.x.org``. None when the URL is not http(s)."""
    parts = urlsplit(url.replace("{s}", "sub"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.netloc.replace("sub", "*", 1) if "{s}" in url else parts.netloc
    return f"{parts.scheme}://{host}"


def ws_origin(url: str) -> str | None:
    """The CSP source for the broker's WebSocket URL (``wss://mqtt.x.fr:8084/mqtt`` →
    ``wss://mqtt.x.fr:8084``). None when empty or not ws(s)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        return None
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    secure_cookies: bool
    tile_url: str | None
    tile_attribution: str
    static_version: str
    geo_dir: Path | None
    # "simulated": the permanent red banner (no SMS nor call goes out); "demo": the discreet
    # one of `vigie demo`; None with real telephony.
    telephony_banner: str | None = None
    prefix: str = "/dashboard"
    # The worker's app (/app/) connects to the broker over WebSocket: its origin, for the CSP.
    broker_ws_origin: str | None = None

    @property
    def static_prefix(self) -> str:
        return f"{self.prefix}/static"

    @property
    def session_cookie(self) -> str:
        # The __Host- prefix makes the browser refuse the cookie unless it is Secure, for "/",
        # and without a Domain: no sibling subdomain can set or overwrite it.
        return "__Host-vigie_session" if self.secure_cookies else "vigie_session"

    @property
    def login_cookie(self) -> str:
        return "__Host-vigie_login" if self.secure_cookies else "vigie_login"

    @classmethod
    def from_settings(cls, settings: Settings) -> DashboardConfig:
        raw = os.environ.get("VIGIE_MAP_TILE_URL")
        tile_url: str | None = PLAN_IGN_URL if raw is None else raw.strip()
        if tile_url is not None and tile_url.lower() in NO_TILES:
            tile_url = None
        if tile_url is not None and tile_origin(tile_url) is None:
            raise ValueError(
                f"VIGIE_MAP_TILE_URL : {tile_url!r} n'est pas une URL http(s) "
                "(« none » pour une carte sans fond de plan)"
            )
        attribution = os.environ.get("VIGIE_MAP_TILE_ATTRIBUTION", "").strip()
        if not attribution and tile_url == PLAN_IGN_URL:
            attribution = PLAN_IGN_ATTRIBUTION
        geo_dir = settings.geo_dir
        if geo_dir is None and os.environ.get("VIGIE_GEO_DIR"):
            geo_dir = Path(os.environ["VIGIE_GEO_DIR"])
        return cls(
            secure_cookies=settings.public_url.lower().startswith("https://"),
            tile_url=tile_url,
            tile_attribution=attribution,
            static_version=_static_version(),
            geo_dir=geo_dir,
            telephony_banner=(
                None if settings.telephony == "twilio" else "demo" if settings.demo else "simulated"
            ),
            broker_ws_origin=ws_origin(settings.mqtt_ws_url),
        )

    def app_content_security_policy(self) -> str:
        """The worker's app: the console's policy, plus the broker's WebSocket origin."""
        connect = "connect-src 'self'" + (
            f" {self.broker_ws_origin}" if self.broker_ws_origin else ""
        )
        return self.content_security_policy().replace("connect-src 'self'", connect)

    def content_security_policy(self) -> str:
        img = "'self' data:"
        if self.tile_url:
            img += " " + str(tile_origin(self.tile_url))
        # No 'unsafe-inline' anywhere: every script is a static file, every style a stylesheet.
        return "; ".join(
            [
                "default-src 'self'",
                "script-src 'self'",
                "style-src 'self'",
                f"img-src {img}",
                "connect-src 'self'",
                "font-src 'self'",
                "object-src 'none'",
                "base-uri 'none'",
                "form-action 'self'",
                "frame-ancestors 'none'",
            ]
        )
