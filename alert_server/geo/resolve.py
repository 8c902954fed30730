"""Best position for an alert, and what it means for routing. Pure apart from provider calls.

Sources, best first:

1. a fresh fix in the alert (``pos``, src gps/wifi/cell/fixed/manual);
2. the alert's Wi-Fi/cell data through the providers, in order, each within
   ``provider_timeout_s`` (a slow provider never holds the alert longer than that);
3. a last known fix (heartbeat, ``pos`` message, session start) that is still fresh: it is a
   measurement of where the device was minutes ago, which beats the assumption that the device
   is at its registered site;
4. the device's registered site (a pharmacy);
5. the newest last known fix, however old, flagged ``stale_position`` with its age.

An alert is never held back for lack of a position (``no_position``: national fallback only).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime

from alert_server.geo.index import CommuneHit, GeoIndex, valid_lat_lon
from alert_server.geo.providers import RadioLocator
from alert_server.geo.schemas import (
    FIX_SOURCES,
    Fix,
    PositionInputs,
    PositionSource,
    ProviderFix,
    ResolvedPosition,
)

log = logging.getLogger(__name__)

# A fix measured more than 5 minutes before the alert is stale: in 5 minutes a walking worker
# covers ~400 m and a driving one several km, i.e. possibly another commune or across a
# département border; the position then says where the worker was, not where they are. Older
# fixes are still used (better than nothing) but flagged, and the device is asked to locate.
FRESH_FIX_S = 300.0
# Time one provider may take for one alert. Escalation starts only after the position is
# resolved, and operations.md wants the first notification "as soon as the alert is stored":
# 2 s is a Wi-Fi lookup's worst normal latency and is small next to a 30 s SMS-to-voice step.
PROVIDER_TIMEOUT_S = 2.0

# Daemon-like worker threads for provider calls: a provider that ignores its timeout is
# abandoned at the deadline (its thread finishes on its own), the alert goes on.
_provider_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="vigie-geo-provider")


def _usable(lat: float, lon: float) -> bool:
    # (0, 0) "null island" is what many trackers send when they have no fix (traccar#5062).
    return valid_lat_lon(lat, lon) and not (lat == 0.0 and lon == 0.0)


def _age_s(measured_at: datetime | None, now: datetime) -> float | None:
    if measured_at is None:
        return None
    # A device clock slightly ahead must not give a negative age.
    return max(0.0, (now - measured_at).total_seconds())


def _is_fresh(fix: Fix, now: datetime) -> bool:
    if fix.src == "fixed":
        return True  # a fixed installation does not move: its position never goes stale
    age = _age_s(fix.measured_at, now)
    return age is not None and age <= FRESH_FIX_S


def _acc(acc_m: float | None) -> float | None:
    return float(acc_m) if acc_m is not None and math.isfinite(acc_m) and acc_m > 0 else None


def ask_providers(
    providers: Sequence[RadioLocator],
    inputs: PositionInputs,
    *,
    timeout_s: float = PROVIDER_TIMEOUT_S,
) -> ProviderFix | None:
    """First answer of ``providers``, tried in order, each given at most ``timeout_s``.

    A provider that fails, answers nothing or overruns its time is skipped (the next one is
    asked). Worst case: ``len(providers) × timeout_s``; configure the instant offline table
    first and one web service after it.
    """
    scan = inputs.radio
    if scan is None or scan.empty or not providers:
        return None
    for provider in providers:
        name = getattr(provider, "name", type(provider).__name__)
        log_extra = {"alert_id": inputs.alert_id, "device_id": inputs.device_id, "provider": name}
        started = time.monotonic()
        future = _provider_pool.submit(provider.locate, scan, timeout_s=timeout_s)
        try:
            found = future.result(timeout=timeout_s)
        except FutureTimeout:
            log.warning("geolocation provider too slow", extra=log_extra)
            continue
        except Exception as exc:  # a provider bug must not cost the alert its routing
            log.warning("geolocation provider error", extra={**log_extra, "error": repr(exc)})
            continue
        if found is not None and _usable(found.lat, found.lon):
            log.info(
                "geolocation provider answered",
                extra={**log_extra, "elapsed_s": round(time.monotonic() - started, 3)},
            )
            return found
    return None


def _best_last_known(candidates: Iterable[Fix]) -> Fix | None:
    usable = [f for f in candidates if _usable(f.lat, f.lon)]
    if not usable:
        return None
    # Newest first; a fix without a time is the least trustworthy.
    return max(usable, key=lambda f: f.measured_at.timestamp() if f.measured_at else -math.inf)


def resolve_position(
    inputs: PositionInputs,
    *,
    now: datetime,
    index: GeoIndex | None,
    providers: Sequence[RadioLocator] = (),
    provider_timeout_s: float = PROVIDER_TIMEOUT_S,
    default_force: Callable[[str], str | None] | None = None,
) -> ResolvedPosition:
    """The best position for an alert (see the module docstring) and its routing.

    ``now``: the alert's time (aware). ``index``: the map (``service.current_index``); None
    means no boundary data, so no département (national fallback). ``default_force``: the
    force of a département when the zone table does not list the commune (the directory's only
    force there, or PN; ``referents.chains.default_force``).
    """
    lat: float | None = None
    lon: float | None = None
    acc: float | None = None
    source: PositionSource | None = None
    measured_at: datetime | None = None
    provider_name: str | None = None
    site_label: str | None = None
    stale = False

    fix = inputs.fix if inputs.fix is not None and _usable(inputs.fix.lat, inputs.fix.lon) else None
    # The alert's own fix without a time came with the alert: as fresh as the alert itself.
    fix_fresh = fix is not None and (fix.measured_at is None or _is_fresh(fix, now))
    last = _best_last_known((*inputs.last_known, *([fix] if fix and not fix_fresh else [])))
    if fix is not None and fix_fresh:
        lat, lon, acc, measured_at = fix.lat, fix.lon, _acc(fix.acc_m), fix.measured_at
        # The wire model only lets the five protocol sources through; anything else would still
        # be a device measurement.
        source = fix.src if fix.src in FIX_SOURCES else "gps"  # type: ignore[assignment]
    else:
        found = ask_providers(providers, inputs, timeout_s=provider_timeout_s)
        if found is not None:
            lat, lon, acc, source = found.lat, found.lon, _acc(found.acc_m), "provider"
            measured_at = inputs.radio.measured_at if inputs.radio is not None else None
            measured_at = measured_at or now
            provider_name = found.provider
        elif last is not None and _is_fresh(last, now):
            lat, lon, acc, measured_at = last.lat, last.lon, _acc(last.acc_m), last.measured_at
            source = "last_known"
        elif inputs.site is not None and _usable(inputs.site.lat, inputs.site.lon):
            lat, lon, acc = inputs.site.lat, inputs.site.lon, _acc(inputs.site.acc_m)
            source, site_label = "site", inputs.site.label
        elif last is not None:
            lat, lon, acc, measured_at = last.lat, last.lon, _acc(last.acc_m), last.measured_at
            source, stale = "last_known", True

    if lat is None or lon is None:
        return ResolvedPosition(
            lat=None, lon=None, acc_m=None, source=None, measured_at=None, age_s=None,
            commune_code=None, commune_nom=None, departement=None, force=None,
            departements=(), forces=(), flags=frozenset({"no_position"}),
        )  # fmt: skip

    flags: set[str] = {"stale_position"} if stale else set()
    commune_code = commune_nom = departement = None
    departements: tuple[str, ...] = ()
    forces: list[tuple[str, str | None]] = []
    if index is None or index.empty:
        log.error(
            "no boundary data: alert routed to the national fallback",
            extra={"alert_id": inputs.alert_id, "device_id": inputs.device_id},
        )
    else:
        place = index.locate(lat, lon, acc)
        if not place.inside:
            flags.add("outside_france")
        if place.ambiguous:
            flags.add("ambiguous_border")
        departement, departements = place.departement, place.departements
        if place.commune is not None:
            commune_code, commune_nom = place.commune.code, place.commune.nom
        for dep in departements:
            commune: CommuneHit | None
            if place.commune is not None and place.commune.departement == dep:
                commune = place.commune
            else:
                # Another département the person may be in: its part nearest to them decides
                # between police and gendarmerie.
                commune = index.nearest_commune_in(lat, lon, dep, place.radius_m)
            force = index.zone(commune.code) if commune is not None else None
            if force is None and default_force is not None:
                force = default_force(dep)
            forces.append((dep, force))
    return ResolvedPosition(
        lat=lat,
        lon=lon,
        acc_m=acc,
        source=source,
        measured_at=measured_at,
        age_s=_age_s(measured_at, now),
        commune_code=commune_code,
        commune_nom=commune_nom,
        departement=departement,
        force=dict(forces).get(departement) if departement else None,
        departements=departements,
        forces=tuple(forces),
        flags=frozenset(flags),
        provider=provider_name,
        site_label=site_label,
    )


# -- moving alerts --------------------------------------------------------------------------


def departements_to_add(current: Iterable[str], resolved: ResolvedPosition) -> tuple[str, ...]:
    """Départements of a new position that the alert does not notify yet.

    Never removes any: a référent already alerted stays in the loop (the first acknowledgement
    wins), and a worker running from an aggressor may come back across the border.
    """
    known = set(current)
    return tuple(d for d in resolved.departements if d not in known)


def needs_locate(resolved: ResolvedPosition) -> bool:
    """Should the server ask the device for a fresh position (``locate`` command)?

    Yes when the only position is stale, when there is none, and when it is the registered
    site (an assumption, not a measurement).
    """
    return (
        "stale_position" in resolved.flags
        or "no_position" in resolved.flags
        or resolved.source == "site"
    )
