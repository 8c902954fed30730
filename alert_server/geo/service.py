"""Stored boundary data: import (one transaction), load at start, the cached index.

Every server of a deployment reads the same tables, so an import done on one machine reaches
the others: ``current_index`` notices the new version (one small query) and rebuilds.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import shapely
from sqlalchemy import Connection, Engine, Table, delete, func, insert, select, text
from sqlmodel import Session

from alert_server.geo.boundaries import Area, BoundarySet, GeoDataError
from alert_server.geo.index import GeoIndex
from alert_server.geo.models import GeoCommune, GeoDepartement, GeoImport, GeoZone
from alert_server.geo.parse_cache import parse_boundaries_cached
from alert_server.geo.zones import Zone, ZoneSet, parse_zones
from vigie.persistence import write_transaction
from vigie.timeutil import utcnow

log = logging.getLogger(__name__)

# Serialises imports when several servers start on one PostgreSQL ("VGEO").
_PG_IMPORT_LOCK = 0x5647454F
_INSERT_BATCH = 2_000

_dep_t = GeoDepartement.__table__  # type: ignore[attr-defined]
_com_t = GeoCommune.__table__  # type: ignore[attr-defined]
_zone_t = GeoZone.__table__  # type: ignore[attr-defined]
_imp_t = GeoImport.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What an import stored (None: that kind was not part of it)."""

    departements: int | None = None
    communes: int | None = None
    zones: int | None = None
    sources: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())  # repairs, warnings (French)

    @property
    def empty(self) -> bool:
        return self.departements is None and self.communes is None and self.zones is None


def parse_files(
    *,
    departements: Path | None = None,
    communes: Path | None = None,
    zones: Path | None = None,
) -> tuple[BoundarySet | None, BoundarySet | None, ZoneSet | None]:
    """Read and check every given file; ``GeoDataError`` at the first bad one.

    A boundary file already checked on this machine comes from the parse cache (same bytes,
    same result; ``alert_server.geo.parse_cache``)."""
    dep_set = parse_boundaries_cached(departements, "departements") if departements else None
    com_set = parse_boundaries_cached(communes, "communes") if communes else None
    zone_set = parse_zones(zones) if zones else None
    return dep_set, com_set, zone_set


def import_files(
    engine: Engine,
    *,
    departements: Path | None = None,
    communes: Path | None = None,
    zones: Path | None = None,
    now: datetime | None = None,
) -> ImportSummary:
    """Check every file first, then replace the stored data of those kinds in ONE transaction.

    A bad file raises ``GeoDataError`` before anything is written, and a database failure
    rolls the whole import back: the previous data stays in place either way.
    """
    dep_set, com_set, zone_set = parse_files(
        departements=departements, communes=communes, zones=zones
    )
    return store(engine, departements=dep_set, communes=com_set, zones=zone_set, now=now)


def store(
    engine: Engine,
    *,
    departements: BoundarySet | None = None,
    communes: BoundarySet | None = None,
    zones: ZoneSet | None = None,
    now: datetime | None = None,
    only_if_missing: bool = False,
) -> ImportSummary:
    """Write already-checked data in one transaction (see ``import_files``).

    ``only_if_missing``: skip the kinds that already have an import (server start, where
    several servers may race: on PostgreSQL the check runs under an advisory lock).
    """
    for given, kind in ((departements, "departements"), (communes, "communes")):
        if given is not None and given.kind != kind:
            raise GeoDataError(f"{given.source}: fichier de {given.kind}, attendu {kind}")
    at = now or utcnow()
    # The write lock from the first statement (BEGIN IMMEDIATE on SQLite): this transaction
    # reads what is there, then replaces it. Begun as a read, it failed with "database is
    # locked" whenever another writer committed in between (a read snapshot made stale cannot
    # become a write), as the WAL checkpointer may at a server's first start.
    with write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_IMPORT_LOCK})
        if only_if_missing:
            present = set(conn.execute(select(_imp_t.c.kind).distinct()).scalars())
            departements = None if "departements" in present else departements
            communes = None if "communes" in present else communes
            zones = None if "zones" in present else zones
        sources: list[str] = []
        notes: list[str] = []
        n_dep = n_com = n_zone = None
        if departements is not None:
            n_dep = _replace_areas(conn, _dep_t, departements, with_departement=False)
            _log_import(
                conn, departements.kind, departements.source, departements.sha256, n_dep, at
            )
            sources.append(departements.source)
            notes.extend(departements.repaired)
        if communes is not None:
            n_com = _replace_areas(conn, _com_t, communes, with_departement=True)
            _log_import(conn, communes.kind, communes.source, communes.sha256, n_com, at)
            sources.append(communes.source)
            notes.extend(communes.repaired)
        if zones is not None:
            n_zone = _replace_zones(conn, zones)
            _log_import(conn, "zones", zones.source, zones.sha256, n_zone, at)
            sources.append(zones.source)
            if zones.format == "exemple":
                notes.append(
                    f"{zones.source}: format d'exemple (non officiel) ; importez le fichier du "
                    "ministère de l'Intérieur pour la production"
                )
    summary = ImportSummary(n_dep, n_com, n_zone, tuple(sources), tuple(notes))
    if not summary.empty:
        log.info(
            "geo import stored",
            extra={"departements": n_dep, "communes": n_com, "zones": n_zone, "sources": sources},
        )
    return summary


def _replace_areas(
    conn: Connection, table: Table, data: BoundarySet, *, with_departement: bool
) -> int:
    conn.execute(delete(table))
    wkb = shapely.to_wkb([a.geometry for a in data.areas])
    rows: list[dict[str, object]] = []
    for area, blob in zip(data.areas, wkb, strict=True):
        row: dict[str, object] = {"code": area.code, "nom": area.nom[:100], "geom_wkb": blob}
        if with_departement:
            row["departement"] = area.departement
        rows.append(row)
        if len(rows) >= _INSERT_BATCH:
            conn.execute(insert(table), rows)
            rows = []
    if rows:
        conn.execute(insert(table), rows)
    return len(data.areas)


def _replace_zones(conn: Connection, data: ZoneSet) -> int:
    conn.execute(delete(_zone_t))
    rows = [
        {
            "code_commune": z.code_commune,
            "libelle_commune": z.libelle_commune[:100],
            "institution": z.institution,
            "departement": z.departement,
            "id_service": z.id_service[:32] if z.id_service else None,
            "service": z.service[:200] if z.service else None,
            "code_postal": z.code_postal[:10] if z.code_postal else None,
        }
        for z in data.zones
    ]
    for start in range(0, len(rows), _INSERT_BATCH):
        conn.execute(insert(_zone_t), rows[start : start + _INSERT_BATCH])
    return len(rows)


def _log_import(
    conn: Connection, kind: str, source: str, sha256: str, count: int, at: datetime
) -> None:
    conn.execute(
        insert(_imp_t).values(
            kind=kind, source=source[:255], sha256=sha256, feature_count=count, imported_at=at
        )
    )


# -- server start ---------------------------------------------------------------------------


def find_files(directory: Path) -> dict[str, Path]:
    """The files ``load_from_dir`` would use in ``directory`` (kind → path).

    Département outlines: ``departements-avec-outre-mer.geojson`` when present, else another
    ``departements*.geojson``; never a ``version-simplifiee`` file, which is wrong for ~10 % of
    points within 1 km of a border (shared/geo/README.md).
    """
    found: dict[str, Path] = {}

    def candidates(patterns: tuple[str, ...]) -> list[Path]:
        paths = {p for pattern in patterns for p in directory.glob(pattern) if p.is_file()}
        return sorted(p for p in paths if "simplifi" not in p.name.lower())

    def prefer(paths: list[Path], best: tuple[str, ...]) -> Path | None:
        for name in best:
            for p in paths:
                if p.name == name:
                    return p
        with_drom = [p for p in paths if "outre-mer" in p.name]
        ordered = with_drom or paths
        return ordered[0] if ordered else None

    deps = prefer(
        candidates(("departements*.geojson", "departements*.geojson.gz")),
        ("departements-avec-outre-mer.geojson", "departements-avec-outre-mer.geojson.gz"),
    )
    communes = prefer(
        candidates(("communes*.geojson", "communes*.geojson.gz")),
        ("communes-avec-outre-mer.geojson", "communes-avec-outre-mer.geojson.gz"),
    )
    zone_files = candidates(("zones*.csv",))
    # A real ministry file beats the hand-made sample when both are there.
    zone_files.sort(key=lambda p: ("exemple" in p.name.lower(), p.name))
    if deps:
        found["departements"] = deps
    if communes:
        found["communes"] = communes
    if zone_files:
        found["zones"] = zone_files[0]
    return found


def load_from_dir(engine: Engine, directory: Path, *, now: datetime | None = None) -> ImportSummary:
    """At server start: import from ``directory`` (``VIGIE_GEO_DIR``) each kind not yet stored.

    Kinds already imported are left alone (an explicit ``vigie geo import`` wins over the
    folder). Raises ``GeoDataError`` when a file of the folder is bad.
    """
    if not directory.is_dir():
        raise GeoDataError(f"{directory}: dossier introuvable")
    present = imported_kinds(engine)
    files = {k: p for k, p in find_files(directory).items() if k not in present}
    if not files:
        return ImportSummary()
    dep_set, com_set, zone_set = parse_files(
        departements=files.get("departements"),
        communes=files.get("communes"),
        zones=files.get("zones"),
    )
    return store(
        engine,
        departements=dep_set,
        communes=com_set,
        zones=zone_set,
        now=now,
        only_if_missing=True,
    )


def imported_kinds(engine: Engine) -> dict[str, GeoImport]:
    """The newest import of each kind."""
    with engine.connect() as conn:
        rows = conn.execute(select(_imp_t).order_by(_imp_t.c.id)).mappings().all()
    return {row["kind"]: GeoImport.model_validate(dict(row)) for row in rows}


# -- the index ------------------------------------------------------------------------------


def data_version(engine: Engine) -> int:
    """Id of the newest import (0: nothing imported). Cheap: checked on every lookup."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(_imp_t.c.id), 0))).scalar_one())


def load_index(engine: Engine) -> GeoIndex | None:
    """Build the index from the stored import; None when no boundary was ever imported."""
    with engine.connect() as conn:
        version = int(conn.execute(select(func.coalesce(func.max(_imp_t.c.id), 0))).scalar_one())
        deps = conn.execute(select(_dep_t.c.code, _dep_t.c.nom, _dep_t.c.geom_wkb)).all()
        communes = conn.execute(select(_com_t.c.code, _com_t.c.nom, _com_t.c.geom_wkb)).all()
        zone_rows = conn.execute(select(_zone_t)).mappings().all()
    if not deps and not communes:
        return None
    dep_geoms = shapely.from_wkb([bytes(r.geom_wkb) for r in deps]) if deps else []
    com_geoms = shapely.from_wkb([bytes(r.geom_wkb) for r in communes]) if communes else []
    zones = [
        Zone(
            code_commune=r["code_commune"],
            libelle_commune=r["libelle_commune"],
            institution=r["institution"],
            departement=r["departement"],
            id_service=r["id_service"],
            service=r["service"],
            code_postal=r["code_postal"],
        )
        for r in zone_rows
    ]
    return GeoIndex(
        [Area(r.code, r.nom, g) for r, g in zip(deps, dep_geoms, strict=True)],
        [Area(r.code, r.nom, g) for r, g in zip(communes, com_geoms, strict=True)],
        zones,
        version=str(version),
    )


class IndexCache:
    """The current index of one database, rebuilt when a newer import is stored.

    Holds no reference to the engine, so it can live in a weak-keyed cache.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._index: GeoIndex | None = None
        self._version = -1

    def get(self, engine: Engine) -> GeoIndex | None:
        version = data_version(engine)
        if version == self._version:
            return self._index
        with self._lock:
            if version != self._version:
                self._index = load_index(engine)
                self._version = version
                log.info("geo index loaded", extra={"geo_version": version})
            return self._index


# Weak keys: a disposed engine (tests create many) takes its index with it.
_caches: weakref.WeakKeyDictionary[Engine, IndexCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def current_index(engine: Engine) -> GeoIndex | None:
    """The index for ``engine``'s database, loaded once and refreshed after a new import."""
    with _caches_lock:
        cache = _caches.get(engine)
        if cache is None:
            cache = _caches[engine] = IndexCache()
    return cache.get(engine)


def zone_counts(engine: Engine) -> dict[tuple[str, str], int]:
    """(département, PN|GN) → number of communes in that zone, from the stored zone table."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(_zone_t.c.departement, _zone_t.c.institution, func.count()).group_by(
                _zone_t.c.departement, _zone_t.c.institution
            )
        ).all()
    return {(dep, inst): int(n) for dep, inst, n in rows}


def postal_code(conn: Connection | Session, commune_code: str | None) -> str | None:
    """The commune's postal code from the stored zone table (the first one when it lists
    several), or None."""
    if not commune_code:
        return None
    raw = conn.execute(
        select(_zone_t.c.code_postal).where(_zone_t.c.code_commune == commune_code)
    ).scalar()
    if not raw:
        return None
    # The zone file may list several codes ("13400;13401"): ONVS wants one.
    first = str(raw).replace(",", ";").split(";")[0].strip()
    return first or None
