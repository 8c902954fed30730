"""Where simulated workers are: real communes, plausible rounds, GPS fixes with honest noise.

A home-care nurse drives a round of nearby communes of one département (a commune's interior
point from ``communes-index.csv`` stands for the patient's home), at driving speed, and stays
for each visit. A pharmacy button sits at its site, indoors, with no satellite fix.

Positions follow protocol.md: ``acc_m`` is the 68 % radius. For a 2-D Gaussian error with the
same standard deviation σ on each axis, the 68 % radius is σ·√(2·ln(1/0.32)) ≈ 1.51·σ, so a fix
announcing ``acc_m`` is drawn with σ = acc_m / 1.51: the announced accuracy is then true.
"""

from __future__ import annotations

import csv
import math
import os
import random
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from vigie.timeutil import rfc3339

EARTH_RADIUS_M = 6_371_000.0
SIGMA_PER_ACC = 1.0 / math.sqrt(2.0 * math.log(1.0 / 0.32))  # ≈ 0.662
# Road distance ≈ 1.3 × straight line on French secondary networks (a usual detour index).
ROAD_DETOUR = 1.3
_REPO = Path(__file__).resolve().parent.parent


def default_index_path() -> Path:
    """``$VIGIE_GEO_DIR/communes-index.csv``, else ``../shared/geo`` beside the repository."""
    env = os.environ.get("VIGIE_GEO_DIR")
    if env:
        return Path(env) / "communes-index.csv"
    return _REPO.parent / "shared" / "geo" / "communes-index.csv"


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def offset_m(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """The point ``north_m`` / ``east_m`` metres away (flat-earth, fine below a few km)."""
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon


def _fold(text: str) -> str:
    norm = unicodedata.normalize("NFKD", text)
    return "".join(c for c in norm if not unicodedata.combining(c)).casefold().replace("-", " ")


@dataclass(frozen=True, slots=True)
class Commune:
    code: str  # INSEE
    nom: str
    departement: str
    lat: float
    lon: float

    @property
    def metropolitan(self) -> bool:
        return not self.departement.startswith("97")


class CommuneIndex:
    """The communes of ``communes-index.csv`` with a coarse grid for neighbour queries."""

    _CELL_DEG = 0.1  # ~11 km of latitude

    def __init__(self, communes: Iterable[Commune]) -> None:
        self.communes: list[Commune] = list(communes)
        self.by_code = {c.code: c for c in self.communes}
        self._by_name: dict[str, list[Commune]] = {}
        self._grid: dict[tuple[int, int], list[Commune]] = {}
        self._pools: dict[tuple[str, ...], list[Commune]] = {}
        for c in self.communes:
            self._by_name.setdefault(_fold(c.nom), []).append(c)
            self._grid.setdefault(self._cell(c.lat, c.lon), []).append(c)

    @classmethod
    def load(cls, path: Path | None = None) -> CommuneIndex:
        path = path or default_index_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: index des communes introuvable (réglez VIGIE_GEO_DIR)"
            )
        with path.open(encoding="utf-8", newline="") as fh:
            rows = [
                Commune(
                    r["code_insee"],
                    r["nom"],
                    r["code_departement"],
                    float(r["lat"]),
                    float(r["lon"]),
                )
                for r in csv.DictReader(fh)
            ]
        return cls(rows)

    def _cell(self, lat: float, lon: float) -> tuple[int, int]:
        return math.floor(lat / self._CELL_DEG), math.floor(lon / self._CELL_DEG)

    def find(self, ref: str) -> Commune:
        """A commune by INSEE code (``84007``), name (``Avignon``) or ``name (dep)``
        (``Laval (53)``) when the name exists in several départements."""
        ref = ref.strip()
        if ref in self.by_code:
            return self.by_code[ref]
        dep = None
        if ref.endswith(")") and "(" in ref:
            ref, dep = ref[:-1].split("(", 1)
            ref, dep = ref.strip(), dep.strip()
        found = self._by_name.get(_fold(ref), [])
        if dep is not None:
            found = [c for c in found if c.departement == dep]
        if not found:
            raise KeyError(f"commune inconnue : {ref!r}")
        if len(found) > 1:
            deps = ", ".join(sorted(c.departement for c in found))
            raise KeyError(
                f"commune ambiguë : {ref!r} existe dans {deps} ; écrivez « {ref} (dép) »"
            )
        return found[0]

    def nearby(
        self, origin: Commune, radius_m: float, *, same_departement: bool = True
    ) -> list[Commune]:
        """Communes within ``radius_m`` of ``origin`` (origin excluded), nearest first."""
        reach = math.ceil(radius_m / (self._CELL_DEG * 111_000))
        ci, cj = self._cell(origin.lat, origin.lon)
        # Longitude cells shrink with latitude: widen the search accordingly.
        reach_j = math.ceil(reach / max(0.2, math.cos(math.radians(origin.lat))))
        out: list[tuple[float, Commune]] = []
        for i in range(ci - reach, ci + reach + 1):
            for j in range(cj - reach_j, cj + reach_j + 1):
                for c in self._grid.get((i, j), ()):
                    if c.code == origin.code:
                        continue
                    if same_departement and c.departement != origin.departement:
                        continue
                    d = haversine_m(origin.lat, origin.lon, c.lat, c.lon)
                    if d <= radius_m:
                        out.append((d, c))
        out.sort(key=lambda t: t[0])
        return [c for _, c in out]

    def random_commune(
        self, rng: random.Random, departements: Iterable[str] | None = None
    ) -> Commune:
        key = tuple(sorted(set(departements or ())))
        pool = self._pools.get(key)
        if pool is None:
            pool = (
                [c for c in self.communes if c.departement in key]
                if key
                else [c for c in self.communes if c.metropolitan]
            )
            self._pools[key] = pool
        if not pool:
            raise KeyError(f"aucune commune dans les départements {list(key)}")
        return rng.choice(pool)


@dataclass(frozen=True, slots=True)
class Fix:
    """One position as a device reports it (protocol.md ``Position``)."""

    lat: float
    lon: float
    acc_m: float
    src: str
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "lat": round(self.lat, 6),
            "lon": round(self.lon, 6),
            "acc_m": round(self.acc_m, 1),
            "ts": rfc3339(self.at),
            "src": self.src,
        }


def noisy_fix(
    rng: random.Random, lat: float, lon: float, acc_m: float, src: str, at: datetime
) -> Fix:
    """A fix around the true point whose error matches the announced 68 % radius."""
    sigma = acc_m * SIGMA_PER_ACC
    nlat, nlon = offset_m(lat, lon, rng.gauss(0.0, sigma), rng.gauss(0.0, sigma))
    return Fix(nlat, nlon, acc_m, src, at)


class Mobility(ABC):
    """Where a device truly is at a given (simulated) time, and what fix it reports."""

    indoor_no_gps: bool = False

    @abstractmethod
    def true_position(self, at: datetime) -> tuple[float, float]: ...

    @abstractmethod
    def fix(self, rng: random.Random, at: datetime) -> Fix | None: ...

    @abstractmethod
    def describe(self) -> str: ...


@dataclass
class FixedSite(Mobility):
    """A pharmacy's fixed button: indoors, no satellite fix. It reports its configured site
    (``src: fixed``) or, with ``report_position=False``, no position at all (the server then
    uses the site registered with the device)."""

    lat: float
    lon: float
    label: str = ""
    report_position: bool = True
    acc_m: float = 15.0
    indoor_no_gps: bool = True

    def true_position(self, at: datetime) -> tuple[float, float]:
        return self.lat, self.lon

    def fix(self, rng: random.Random, at: datetime) -> Fix | None:
        if not self.report_position:
            return None
        # A configured site is exact by construction; acc_m is the size of the premises.
        return Fix(self.lat, self.lon, self.acc_m, "fixed", at)

    def describe(self) -> str:
        return f"site fixe {self.label or f'{self.lat:.5f},{self.lon:.5f}'}"


@dataclass
class Pinned(Mobility):
    """A worker standing at one point (scenario override), with a chosen accuracy."""

    lat: float
    lon: float
    acc_m: float = 10.0
    src: str = "gps"

    def true_position(self, at: datetime) -> tuple[float, float]:
        return self.lat, self.lon

    def fix(self, rng: random.Random, at: datetime) -> Fix | None:
        return noisy_fix(rng, self.lat, self.lon, self.acc_m, self.src, at)

    def describe(self) -> str:
        return f"point {self.lat:.5f},{self.lon:.5f} ±{self.acc_m:.0f} m"


@dataclass(frozen=True, slots=True)
class _Leg:
    start: datetime
    end: datetime
    a: Commune
    b: Commune | None  # None: a visit at ``a``
    wobble_m: float  # roads are not straight lines: lateral deviation amplitude


@dataclass
class NurseRound(Mobility):
    """A home-care round: home → nearby communes of the same département → home, repeated.

    Driving: 35–65 km/h average door to door (road distance = 1.3 × straight line), GPS
    5–15 m. Visiting: 20–45 min at the patient's, indoors, GPS 15–30 m.
    """

    index: CommuneIndex
    home: Commune
    rng: random.Random
    start: datetime
    stops: int = 5
    radius_m: float = 15_000.0
    legs: list[_Leg] = field(default_factory=list)
    route: list[Commune] = field(default_factory=list)

    def __post_init__(self) -> None:
        candidates = self.index.nearby(self.home, self.radius_m)
        if not candidates:  # an isolated commune: allow the neighbouring département
            candidates = self.index.nearby(self.home, self.radius_m * 2, same_departement=False)
        picks = self.rng.sample(candidates, min(self.stops, len(candidates))) if candidates else []
        # Greedy nearest-neighbour ordering from home: a plausible round, not an optimal one.
        route, here, left = [self.home], self.home, list(picks)
        while left:
            nxt = min(left, key=lambda c: haversine_m(here.lat, here.lon, c.lat, c.lon))
            left.remove(nxt)
            route.append(nxt)
            here = nxt
        route.append(self.home)
        self.route = route
        self._extend_until(self.start + timedelta(hours=12))

    def _extend_until(self, until: datetime) -> None:
        t = self.legs[-1].end if self.legs else self.start
        while t < until:
            for a, b in zip(self.route, self.route[1:], strict=False):
                # A short stop at home (leaving, coming back), a real visit elsewhere.
                stay_min = self.rng.uniform(5, 15) if a is self.home else self.rng.uniform(20, 45)
                self.legs.append(_Leg(t, t + timedelta(minutes=stay_min), a, None, 0.0))
                t += timedelta(minutes=stay_min)
                dist = haversine_m(a.lat, a.lon, b.lat, b.lon) * ROAD_DETOUR
                speed_ms = self.rng.uniform(35, 65) / 3.6
                drive = timedelta(seconds=max(60.0, dist / speed_ms))
                wobble = self.rng.uniform(-0.08, 0.08) * dist / ROAD_DETOUR
                self.legs.append(_Leg(t, t + drive, a, b, wobble))
                t += drive

    def _leg_at(self, at: datetime) -> _Leg:
        if at >= self.legs[-1].end:
            self._extend_until(at + timedelta(hours=1))
        if at <= self.legs[0].start:
            return self.legs[0]
        lo, hi = 0, len(self.legs) - 1
        while lo < hi:  # the first leg ending after ``at``
            mid = (lo + hi) // 2
            if self.legs[mid].end <= at:
                lo = mid + 1
            else:
                hi = mid
        return self.legs[lo]

    def driving(self, at: datetime) -> bool:
        return self._leg_at(at).b is not None

    def true_position(self, at: datetime) -> tuple[float, float]:
        leg = self._leg_at(at)
        if leg.b is None:
            return leg.a.lat, leg.a.lon
        span = (leg.end - leg.start).total_seconds()
        f = min(1.0, max(0.0, (at - leg.start).total_seconds() / span)) if span > 0 else 1.0
        lat = leg.a.lat + (leg.b.lat - leg.a.lat) * f
        lon = leg.a.lon + (leg.b.lon - leg.a.lon) * f
        # A smooth sideways bend (zero at both ends) so tracks look like roads, not rulers.
        side = leg.wobble_m * math.sin(math.pi * f)
        heading = math.atan2(leg.b.lat - leg.a.lat, leg.b.lon - leg.a.lon)
        return offset_m(lat, lon, side * math.cos(heading), -side * math.sin(heading))

    def fix(self, rng: random.Random, at: datetime) -> Fix | None:
        lat, lon = self.true_position(at)
        # Open sky in a car; under a roof at the patient's home the fix degrades.
        acc = rng.uniform(5, 15) if self.driving(at) else rng.uniform(15, 30)
        return noisy_fix(rng, lat, lon, acc, "gps", at)

    def current_commune(self, at: datetime) -> Commune:
        leg = self._leg_at(at)
        return leg.a if leg.b is None else (leg.a if (at - leg.start) < (leg.end - at) else leg.b)

    def describe(self) -> str:
        return "tournée " + " → ".join(f"{c.nom} ({c.departement})" for c in self.route)
