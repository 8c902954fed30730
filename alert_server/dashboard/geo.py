"""Département and commune outlines for the maps, as GeoJSON.

For DRAWING only (routing never uses this): the outlines come from the imported boundary
tables (``geo_departement``), simplified to ~100 m, or, when nothing was imported yet, from
the light ``departements-version-simplifiee…geojson`` of ``VIGIE_GEO_DIR``. A ``bbox`` keeps
the answer to the few départements around an alert.

Commune outlines are the maps' background when no tile server can be reached (a demo
without network, ``VIGIE_MAP_TILE_URL=none``): the communes of the view, from the loaded
boundaries (the routing index already holds them), simplified to ~20 m once each and kept in
a bounded cache, with their names (shown on hover).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import shapely
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from shapely.geometry import shape
from sqlalchemy import Engine, func, select

from alert_server.dashboard.auth import PageSession, dashboard_config, engine_of, page_session
from alert_server.dashboard.config import BOUNDARY_ATTRIBUTION
from alert_server.geo import service as geo_service

log = logging.getLogger(__name__)
router = APIRouter(prefix="/dashboard/geo", include_in_schema=False)

SIMPLIFY_DEG = 0.001  # ~100 m: invisible at the zoom levels where outlines matter
PRECISION_DEG = 0.00001
# Communes are drawn from zoom 10 (a view of ~0.7° at 1440 px): ~20 m is below a pixel there.
COMMUNE_SIMPLIFY_DEG = 0.0002
# A view larger than this gets no commune (the page asks from zoom 10 only; a bigger box is a
# mistake or a scraper, and would cost thousands of polygons).
COMMUNE_MAX_SPAN_DEG = 2.0
COMMUNE_MAX_FEATURES = 2000
COMMUNE_CACHE_SIZE = 6000  # simplified communes kept (a few départements' worth)


@dataclass(frozen=True, slots=True)
class Outlines:
    version: str
    codes: tuple[str, ...]
    names: tuple[str, ...]
    geoms: Any  # numpy array of shapely geometries


_cache: dict[str, Outlines] = {}
_lock = threading.Lock()


def _from_tables(engine: Engine) -> Outlines | None:
    try:
        from alert_server.geo.models import GeoDepartement, GeoImport
    except ImportError:  # the geo package is not there: file fallback
        return None
    dep_t = GeoDepartement.__table__  # type: ignore[attr-defined]
    imp_t = GeoImport.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        version = conn.execute(select(func.coalesce(func.max(imp_t.c.id), 0))).scalar_one()
        key = f"db:{version}"
        with _lock:
            if key in _cache:
                return _cache[key]
        rows = conn.execute(select(dep_t.c.code, dep_t.c.nom, dep_t.c.geom_wkb)).all()
    if not rows:
        return None
    geoms = shapely.from_wkb([bytes(r.geom_wkb) for r in rows])
    return _store(key, [r.code for r in rows], [r.nom for r in rows], geoms)


def _from_dir(geo_dir: Path | None) -> Outlines | None:
    if geo_dir is None or not geo_dir.is_dir():
        return None
    candidates = sorted(geo_dir.glob("departements-version-simplifiee*.geojson")) or sorted(
        geo_dir.glob("departements*.geojson")
    )
    if not candidates:
        return None
    path = candidates[0]
    key = f"file:{path}:{path.stat().st_mtime_ns}"
    with _lock:
        if key in _cache:
            return _cache[key]
    data = json.loads(path.read_text(encoding="utf-8"))
    features = [f for f in data.get("features", []) if f.get("geometry")]
    props = [f.get("properties") or {} for f in features]
    geoms = np.array([shape(f["geometry"]) for f in features], dtype=object)
    return _store(
        key, [str(p.get("code", "")) for p in props], [str(p.get("nom", "")) for p in props], geoms
    )


def _store(key: str, codes: list[str], names: list[str], geoms: Any) -> Outlines:
    simplified = shapely.set_precision(
        shapely.simplify(geoms, SIMPLIFY_DEG, preserve_topology=True), PRECISION_DEG
    )
    outlines = Outlines(key, tuple(codes), tuple(names), simplified)
    with _lock:
        _cache.clear()  # one version at a time
        _cache[key] = outlines
    return outlines


def load_outlines(engine: Engine, geo_dir: Path | None) -> Outlines | None:
    try:
        found = _from_tables(engine)
    except Exception:
        log.exception("could not read the boundary tables; trying VIGIE_GEO_DIR")
        found = None
    return found or _from_dir(geo_dir)


def _parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        return None
    if len(values) != 4 or not all(np.isfinite(values)):
        return None
    min_lon, min_lat, max_lon, max_lat = values
    if min_lon > max_lon or min_lat > max_lat:
        return None
    return min_lon, min_lat, max_lon, max_lat


def feature_collection(outlines: Outlines | None, bbox: tuple[float, ...] | None) -> str:
    if outlines is None:
        return json.dumps({"type": "FeatureCollection", "features": [], "attribution": None})
    mask = (
        shapely.intersects(outlines.geoms, shapely.box(*bbox))
        if bbox is not None
        else np.ones(len(outlines.codes), dtype=bool)
    )
    parts = []
    for i in np.flatnonzero(mask):
        props = json.dumps(
            {"code": outlines.codes[i], "nom": outlines.names[i]}, ensure_ascii=False
        )
        geometry = shapely.to_geojson(outlines.geoms[i])
        parts.append(f'{{"type":"Feature","properties":{props},"geometry":{geometry}}}')
    attribution = json.dumps(BOUNDARY_ATTRIBUTION, ensure_ascii=False)
    return (
        '{"type":"FeatureCollection","attribution":'
        + attribution
        + ',"features":['
        + ",".join(parts)
        + "]}"
    )


@router.get("/departements.geojson")
def departement_outlines(
    request: Request,
    sess: Annotated[PageSession, Depends(page_session)],
    bbox: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    outlines = load_outlines(engine_of(request), dashboard_config(request).geo_dir)
    body = feature_collection(outlines, _parse_bbox(bbox))
    return Response(
        body,
        media_type="application/geo+json",
        headers={"Cache-Control": "private, max-age=3600"},
    )


class CommuneFeatures:
    """Simplified commune features (GeoJSON text) of one boundary version, least recently
    used first out."""

    def __init__(self, size: int = COMMUNE_CACHE_SIZE) -> None:
        self.size = size
        self.version = ""
        self._features: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version: str, communes: list[tuple[str, str, Any]]) -> list[str]:
        with self._lock:
            if version != self.version:
                self._features.clear()
                self.version = version
            out: dict[str, str] = {}
            for code, _, _ in communes:
                hit = self._features.get(code)
                if hit is not None:
                    self._features.move_to_end(code)
                    out[code] = hit
        missing = [c for c in communes if c[0] not in out]
        if missing:
            geoms = shapely.set_precision(
                shapely.simplify(
                    np.array([g for _, _, g in missing], dtype=object),
                    COMMUNE_SIMPLIFY_DEG,
                    preserve_topology=True,
                ),
                PRECISION_DEG,
            )
            made = {
                code: '{"type":"Feature","properties":'
                + json.dumps({"code": code, "nom": nom}, ensure_ascii=False)
                + ',"geometry":'
                + shapely.to_geojson(geom)
                + "}"
                for (code, nom, _), geom in zip(missing, geoms, strict=True)
            }
            out.update(made)
            with self._lock:
                if version == self.version:
                    self._features.update(made)
                    while len(self._features) > self.size:
                        self._features.popitem(last=False)
        return [out[code] for code, _, _ in communes]


_communes = CommuneFeatures()


def commune_collection(engine: Engine, bbox: tuple[float, float, float, float] | None) -> str:
    """The communes of ``bbox`` as a FeatureCollection; ``"complete": false`` when the box is
    too large to be drawn commune by commune (or missing)."""
    index = geo_service.current_index(engine)
    attribution = json.dumps(BOUNDARY_ATTRIBUTION, ensure_ascii=False)
    features: list[str] = []
    complete = True
    if bbox is None or max(bbox[2] - bbox[0], bbox[3] - bbox[1]) > COMMUNE_MAX_SPAN_DEG:
        complete = False
    elif index is not None:
        found = index.communes_in_box(*bbox)
        if len(found) > COMMUNE_MAX_FEATURES:
            found, complete = found[:COMMUNE_MAX_FEATURES], False
        features = _communes.get(index.version, found)
    return (
        '{"type":"FeatureCollection","attribution":'
        + attribution
        + ',"complete":'
        + ("true" if complete else "false")
        + ',"features":['
        + ",".join(features)
        + "]}"
    )


@router.get("/communes.geojson")
def commune_outlines(
    request: Request,
    sess: Annotated[PageSession, Depends(page_session)],
    bbox: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    body = commune_collection(engine_of(request), _parse_bbox(bbox))
    return Response(
        body,
        media_type="application/geo+json",
        headers={"Cache-Control": "private, max-age=3600"},
    )
