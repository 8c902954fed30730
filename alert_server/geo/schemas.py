"""What crosses the geo package's boundary: plain, frozen values (never ORM rows).

The pipeline builds ``PositionInputs`` from the alert payload and the device's stored data, and
gets back a ``ResolvedPosition``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

FixSource = Literal["gps", "wifi", "cell", "fixed", "manual"]
PositionSource = Literal["gps", "wifi", "cell", "fixed", "manual", "provider", "site", "last_known"]
Flag = Literal["no_position", "stale_position", "ambiguous_border", "outside_france"]

FIX_SOURCES: tuple[str, ...] = ("gps", "wifi", "cell", "fixed", "manual")
FLAGS: tuple[str, ...] = ("no_position", "stale_position", "ambiguous_border", "outside_france")


@dataclass(frozen=True, slots=True)
class Fix:
    """A position measured by the device (the alert's ``pos``, a heartbeat's, a session's)."""

    lat: float
    lon: float
    acc_m: float | None  # 68 % radius in metres; None or <= 0 = unknown
    measured_at: datetime | None  # aware; None = unknown (taken as old)
    src: str = "gps"  # gps | wifi | cell | fixed | manual (protocol.md ``pos.src``)


@dataclass(frozen=True, slots=True)
class WifiAccessPoint:
    bssid: str  # "a4:2b:b0:11:22:33" (any case, ":" or "-" separators)
    rssi: int | None = None  # dBm


@dataclass(frozen=True, slots=True)
class CellTower:
    mcc: int
    mnc: int
    lac: int
    cid: int
    rssi: int | None = None  # dBm


@dataclass(frozen=True, slots=True)
class RadioScan:
    """Wi-Fi access points and cells seen by the device when it raised the alert."""

    wifi: tuple[WifiAccessPoint, ...] = ()
    cells: tuple[CellTower, ...] = ()
    measured_at: datetime | None = None  # usually the alert's ``ts``

    @property
    def empty(self) -> bool:
        return not self.wifi and not self.cells


@dataclass(frozen=True, slots=True)
class Site:
    """The device's registered place (a pharmacy, a cabinet)."""

    lat: float
    lon: float
    label: str | None = None
    acc_m: float | None = None


@dataclass(frozen=True, slots=True)
class ProviderFix:
    """A position estimated from Wi-Fi/cell data by a provider."""

    lat: float
    lon: float
    acc_m: float | None
    provider: str  # "offline", the provider's host…


@dataclass(frozen=True, slots=True)
class PositionInputs:
    """Everything known about where the device may be. All optional."""

    fix: Fix | None = None  # the alert's own ``pos``
    radio: RadioScan | None = None  # the alert's ``wifi`` / ``cells``
    site: Site | None = None
    last_known: tuple[Fix, ...] = ()  # heartbeats, ``pos`` messages, session start… any order
    alert_id: str | None = None  # for the logs only
    device_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResolvedPosition:
    """The best position for an alert and what it means for routing."""

    lat: float | None
    lon: float | None
    acc_m: float | None
    source: PositionSource | None  # None when there is no position at all
    measured_at: datetime | None
    age_s: float | None  # relative to ``now`` given to the resolver
    commune_code: str | None
    commune_nom: str | None
    departement: str | None  # routed first; None = national fallback only
    force: str | None  # PN | GN for ``departement``
    departements: tuple[str, ...]  # every département to notify, ``departement`` first
    forces: tuple[tuple[str, str | None], ...]  # (département, PN|GN|None) for each of them
    flags: frozenset[str]  # subset of FLAGS
    provider: str | None = None  # which provider answered, when source == "provider"
    site_label: str | None = None  # when source == "site"

    def force_for(self, departement: str) -> str | None:
        for dep, force in self.forces:
            if dep == departement:
                return force
        return None

    @property
    def has_position(self) -> bool:
        return self.lat is not None and self.lon is not None
