"""The OsmAnd HTTP gateway: Traccar Client (v9 and v10), and Traccar's event forwarding.

Traccar Client and the trackers Traccar decodes cannot speak protocol.md; they can send one HTTP
request. Three request shapes are read (operations.md 1.1):

- v10 and the older native clients: form or query fields ``id`` (or ``deviceid``), ``lat``,
  ``lon`` (or ``location=lat,lon``), ``timestamp`` (epoch seconds or milliseconds, ISO 8601, or
  ``yyyy-MM-dd HH:mm:ss``), ``accuracy``, ``altitude``, ``speed`` (knots), ``bearing``, ``batt``
  (0–100), ``charge``, ``alarm``;
- v9: a JSON body ``{"location": {"timestamp", "coords": {...}, "battery": {"level": 0–1,
  "is_charging"}, "extras": {"alarm"}}, "device_id"}``;
- Traccar's event forwarding: ``{"event": {"type": "alarm", "attributes": {"alarm": "sos"}},
  "position": {...}, "device": {"uniqueId", "attributes": {"vigie_id"}}}``.

``alarm=sos`` is an SOS, ``fall``/``fallDown`` a fall; anything else is a position and a sign of
life. An alert is answered 200 only once it is committed (a client that retries on failure
retries); its ``alert_id`` is derived from the device, the kind and the device's own timestamp,
so that a retry of the same request is a repeat, never a second alert. The device's identifier
is a long random secret given at registration (its only credential: no password travels);
unknown identifiers get 404 and are counted; positions are rate-limited per identifier, alarms
never (their repeats are merged by the ingest path's flood rule).

Traccar Client's own SOS is a single request, not retried when it fails: the README and the
console's device page say so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import anyio
from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Engine
from sqlmodel import Session

from alert_server.db import read_scope
from alert_server.gateways.intake import GatewayAlert, Intake
from alert_server.gateways.models import OsmandIdentity
from alert_server.positions import LastPosition
from vigie.timeutil import utcnow
from vigie.vocabulary import AlertKind

log = logging.getLogger(__name__)

PATH = "/gateway/osmand"
MAX_BODY_BYTES = 65_536
# Alarm names (Traccar's and the apps') that are alerts, and their protocol.md kind.
ALARM_KINDS = {"sos": AlertKind.SOS, "fall": AlertKind.FALL, "falldown": AlertKind.FALL}
KNOTS_TO_MS = 0.514444


class OsmandInputError(ValueError):
    """A request that cannot be read; the message (French) names the field."""


@dataclass(frozen=True)
class OsmandReport:
    """One request, whatever its shape."""

    ident: str
    shape: str  # "form" | "v9" | "event"
    ts: datetime | None = None
    lat: float | None = None
    lon: float | None = None
    acc_m: float | None = None
    batt: int | None = None
    charging: bool | None = None
    alarm: str | None = None
    # Event forwarding: deviceOnline / deviceOffline become presence.
    online: bool | None = None

    @property
    def kind(self) -> str | None:
        return alarm_kind(self.alarm)


def alarm_kind(alarm: str | None) -> str | None:
    """The alert kind of an alarm (Traccar joins several with commas: "sos,lowBattery")."""
    kinds = [ALARM_KINDS.get(a.strip().lower()) for a in (alarm or "").split(",")]
    # An SOS outranks a fall when both are reported at once.
    return AlertKind.SOS if AlertKind.SOS in kinds else next((k for k in kinds if k), None)


# -- parsing ----------------------------------------------------------------------------------


def _number(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise OsmandInputError(f"{name}: {value!r} n'est pas un nombre")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise OsmandInputError(f"{name}: {str(value)[:40]!r} n'est pas un nombre") from exc
    if not math.isfinite(number):
        raise OsmandInputError(f"{name}: {str(value)[:40]!r} n'est pas un nombre fini")
    return number


def _bool(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def parse_timestamp(value: Any) -> datetime | None:
    """Epoch seconds or milliseconds, ISO 8601, or ``yyyy-MM-dd HH:mm:ss`` (UTC)."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        number = None
    try:
        if number is not None:
            if not math.isfinite(number):
                raise ValueError(text)
            # Traccar's rule: above 10^11 it is milliseconds.
            seconds = number / 1000 if number > 1e11 else number
            return datetime.fromtimestamp(seconds, UTC)
        iso = text.replace(" ", "T", 1)
        iso = iso[:-1] + "+00:00" if iso[-1:] in "Zz" else iso
        parsed = datetime.fromisoformat(iso)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise OsmandInputError(f"timestamp: {text[:40]!r} n'est pas une date lisible") from exc


def _position(lat: Any, lon: Any) -> tuple[float | None, float | None]:
    la, lo = _number(lat, "lat"), _number(lon, "lon")
    if la is None or lo is None:
        return None, None
    if not -90 <= la <= 90:
        raise OsmandInputError(f"lat: {la} hors de [-90, 90]")
    if not -180 <= lo <= 180:
        raise OsmandInputError(f"lon: {lo} hors de [-180, 180]")
    return la, lo


def _batt(value: Any, scale: float = 1.0) -> int | None:
    number = _number(value, "batt")
    if number is None:
        return None
    pct = round(number * scale)
    if not 0 <= pct <= 100:
        raise OsmandInputError(f"batt: {value!r} hors de 0–100 %")
    return pct


def _accuracy(value: Any, name: str = "accuracy") -> float | None:
    acc = _number(value, name)
    if acc is not None and not 0 <= acc <= 1_000_000:
        raise OsmandInputError(f"{name}: {acc} hors de [0, 1000000] m")
    return acc


def _from_fields(fields: dict[str, str]) -> OsmandReport:
    ident = fields.get("id") or fields.get("deviceid") or ""
    lat_s, lon_s = fields.get("lat"), fields.get("lon")
    if (lat_s is None or lon_s is None) and "location" in fields:
        lat_s, _, lon_s = fields["location"].partition(",")
    return _report(
        ident,
        "form",
        alarm=fields.get("alarm"),
        ts=lambda: parse_timestamp(fields.get("timestamp")),
        pos=lambda: _position(lat_s, lon_s),
        acc=lambda: _accuracy(fields.get("accuracy")),
        batt=lambda: _batt(fields.get("batt")),
        charging=_bool(fields.get("charge")),
    )


def _report(
    ident: str,
    shape: str,
    *,
    alarm: Any,
    ts: Callable[[], datetime | None],
    pos: Callable[[], tuple[float | None, float | None]],
    acc: Callable[[], float | None],
    batt: Callable[[], int | None],
    charging: bool | None,
    online: bool | None = None,
) -> OsmandReport:
    """Read every field; an alarm is never refused for a bad field (it is kept without it)."""
    ident = str(ident).strip()
    if not ident:
        raise OsmandInputError("id: identifiant de l'appareil manquant")
    if len(ident) > 200:
        raise OsmandInputError("id: identifiant trop long (200 caractères au plus)")
    alarm_s = str(alarm)[:64] if isinstance(alarm, str | int) and str(alarm) else None
    is_alarm = alarm_kind(alarm_s) is not None
    values: dict[str, Any] = {}
    for name, read in (("ts", ts), ("pos", pos), ("acc", acc), ("batt", batt)):
        try:
            values[name] = read()
        except OsmandInputError:
            if not is_alarm:
                raise
            values[name] = (None, None) if name == "pos" else None
    lat, lon = values["pos"]
    return OsmandReport(
        ident=ident,
        shape=shape,
        ts=values["ts"],
        lat=lat,
        lon=lon,
        acc_m=values["acc"],
        batt=values["batt"],
        charging=charging,
        alarm=alarm_s,
        online=online,
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _from_v9(data: dict[str, Any]) -> OsmandReport:
    location = _dict(data.get("location"))
    coords = _dict(location.get("coords"))
    battery = _dict(location.get("battery"))
    extras = _dict(location.get("extras"))
    return _report(
        str(data.get("device_id") or ""),
        "v9",
        alarm=location.get("alarm") or extras.get("alarm"),
        ts=lambda: parse_timestamp(location.get("timestamp")),
        pos=lambda: _position(coords.get("latitude"), coords.get("longitude")),
        acc=lambda: _accuracy(coords.get("accuracy")),
        # v9 reports the battery as a fraction (0–1); -1 means unknown.
        batt=lambda: (
            None
            if _number(battery.get("level"), "battery.level") in (None, -1.0)
            else _batt(battery.get("level"), 100)
        ),
        charging=_bool(battery.get("is_charging")),
    )


def _from_event(data: dict[str, Any]) -> OsmandReport:
    event = _dict(data.get("event"))
    position = _dict(data.get("position"))
    device = _dict(data.get("device"))
    ident = _dict(device.get("attributes")).get("vigie_id") or device.get("uniqueId") or ""
    etype = event.get("type")
    alarm = _dict(event.get("attributes")).get("alarm") if etype == "alarm" else None
    online = {"deviceOnline": True, "deviceOffline": False}.get(str(etype))
    attributes = _dict(position.get("attributes"))
    return _report(
        str(ident),
        "event",
        alarm=alarm,
        ts=lambda: parse_timestamp(position.get("fixTime") or event.get("eventTime")),
        pos=lambda: _position(position.get("latitude"), position.get("longitude")),
        acc=lambda: _accuracy(position.get("accuracy"), "position.accuracy") or None,
        batt=lambda: _batt(attributes.get("batteryLevel")),
        charging=_bool(attributes.get("charge")),
        online=online,
    )


def parse_request(content_type: str, query: list[tuple[str, str]], body: bytes) -> OsmandReport:
    """One request, in any of the three shapes; ``OsmandInputError`` names what is wrong."""
    if len(body) > MAX_BODY_BYTES:
        raise OsmandInputError(f"corps de requête trop long ({MAX_BODY_BYTES} octets au plus)")
    if content_type.split(";")[0].strip().lower() == "application/json" or (
        body.lstrip()[:1] == b"{" and not query
    ):
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise OsmandInputError(f"JSON illisible : {str(exc)[:80]}") from exc
        if not isinstance(data, dict):
            raise OsmandInputError("JSON : un objet est attendu (un tableau n'est pas lu)")
        if "event" in data:
            return _from_event(data)
        if "location" in data:
            return _from_v9(data)
        raise OsmandInputError("JSON : ni « location » (Traccar Client 9) ni « event » (Traccar)")
    fields = dict(query)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OsmandInputError("corps de requête : UTF-8 attendu") from exc
    if text.strip():
        fields.update(parse_qsl(text, keep_blank_values=True))
    return _from_fields(fields)


# -- identities -------------------------------------------------------------------------------


def new_identifier() -> str:
    """256 random bits, URL-safe (typed or scanned into the app as its device identifier)."""
    return secrets.token_urlsafe(32)


def _digest(ident: str) -> str:
    return hashlib.sha256(ident.encode()).hexdigest()


def register(session: Session, *, device_id: str, now: datetime) -> str:
    """Give a registered device its OsmAnd identifier (shown once, stored as a hash)."""
    ident = new_identifier()
    session.add(OsmandIdentity(id_sha256=_digest(ident), device_id=device_id, created_at=now))
    session.flush()
    return ident


def alert_id_for(device_id: str, kind: str, ts: datetime | None, received_at: datetime) -> str:
    """The same request (the device's own timestamp) always gives the same alert_id; without
    a timestamp, the second of arrival (and the flood rule merges what follows)."""
    moment = (ts or received_at.replace(microsecond=0)).isoformat()
    digest = hashlib.sha256(f"{device_id}\0{kind}\0{moment}".encode()).hexdigest()
    return f"osmand-{digest[:40]}"


class Identities:
    """Identifier → device_id, cached (an identifier never changes its device)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    def device_for(self, ident: str) -> str | None:
        key = _digest(ident)
        with self._lock:
            found = self._known.get(key)
        if found is not None:
            return found
        with read_scope(self.engine) as session:
            row = session.get(OsmandIdentity, key)
        if row is None:
            return None
        with self._lock:
            self._known[key] = row.device_id
        return row.device_id


class RateLimiter:
    """A token bucket per key (``rate`` per second, up to ``burst``), on an injectable clock."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.rate, self.burst, self.clock, self.max_keys = rate, burst, clock, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            allowed = tokens >= 1
            self._buckets[key] = (tokens - 1 if allowed else tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return allowed


# -- the gateway ------------------------------------------------------------------------------


class OsmandMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "vigie_osmand_requests",
            "OsmAnd gateway requests, by shape and outcome",
            ["shape", "outcome"],
            registry=registry,
        )
        self.unknown = Counter(
            "vigie_osmand_unknown_ids",
            "OsmAnd requests whose identifier is not registered (answered 404)",
            registry=registry,
        )
        self.rate_limited = Counter(
            "vigie_osmand_rate_limited",
            "OsmAnd requests refused for their rate (429), never an alarm",
            registry=registry,
        )


@dataclass(frozen=True)
class Answer:
    status: int
    text: str = ""


class OsmandGateway:
    def __init__(
        self,
        intake: Intake,
        identities: Identities,
        limiter: RateLimiter,
        metrics: OsmandMetrics,
        *,
        commit_timeout_s: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.intake = intake
        self.identities = identities
        self.limiter = limiter
        self.metrics = metrics
        self.commit_timeout_s = commit_timeout_s
        self.clock = clock

    def handle(self, report: OsmandReport) -> Answer:
        now = self.clock()
        try:
            device_id = self.identities.device_for(report.ident)
        except Exception:
            log.exception("OsmAnd: identifier lookup failed")
            return self._count(report, "unavailable", Answer(503, "base de données indisponible"))
        if device_id is None:
            self.metrics.unknown.inc()
            log.warning("OsmAnd: unknown identifier (%s request)", report.shape)
            return self._count(report, "unknown", Answer(404, "appareil inconnu"))
        kind = report.kind
        if kind is None and not self.limiter.allow(device_id):
            self.metrics.rate_limited.inc()
            return self._count(report, "rate_limited", Answer(429, "trop de requêtes"))
        position = None
        if report.lat is not None and report.lon is not None:
            position = LastPosition(report.lat, report.lon, report.acc_m, report.ts or now, "gps")
        if kind is not None:
            alert = GatewayAlert(
                device_id=device_id,
                alert_id=alert_id_for(device_id, kind, report.ts, now),
                kind=kind,
                ts=report.ts or now,
                lat=report.lat,
                lon=report.lon,
                acc_m=report.acc_m,
                pos_ts=report.ts,
                batt=report.batt,
            )
            if not self.intake.store_and_wait(alert, now, self.commit_timeout_s):
                log.error(
                    "OsmAnd alert alert_id=%s device_id=%s not committed within %.1f s: 503",
                    alert.alert_id,
                    device_id,
                    self.commit_timeout_s,
                )
                return self._count(report, "not_committed", Answer(503, "alerte non enregistrée"))
            log.info("OsmAnd alert committed alert_id=%s device_id=%s", alert.alert_id, device_id)
        self.intake.seen(
            device_id,
            now,
            online=report.online if report.online is not None else True,
            batt=report.batt,
            charging=report.charging,
            position=position,
            heartbeat=kind is None and report.online is None,
        )
        return self._count(report, "alert" if kind else "position", Answer(200))

    def _count(self, report: OsmandReport, outcome: str, answer: Answer) -> Answer:
        self.metrics.requests.labels(report.shape, outcome).inc()
        return answer


def make_router(gateway: OsmandGateway) -> APIRouter:
    router = APIRouter()

    @router.api_route(PATH, methods=["GET", "POST"], include_in_schema=False)
    async def osmand(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return Response("corps de requête trop long", status_code=413, media_type="text/plain")
        body = await request.body()
        try:
            report = parse_request(
                request.headers.get("content-type", ""),
                list(request.query_params.multi_items()),
                body,
            )
        except OsmandInputError as exc:
            gateway.metrics.requests.labels("unreadable", "bad_request").inc()
            return Response(f"requête illisible : {exc}", status_code=400, media_type="text/plain")
        # The wait for the commit blocks: off the event loop.
        answer = await anyio.to_thread.run_sync(gateway.handle, report)
        return Response(answer.text, status_code=answer.status, media_type="text/plain")

    return router
