"""Geolocation benchmark: lookup latency, index memory, start-up time, naive baseline.

    uv run python benchmarks/geo.py [--geo-dir ../shared/geo] [--points 20000] [--pg-url URL]
                                    [--naive-points 200] [--json FILE]

Measures, with the real 35,357 communes and 101 départements loaded:

* start-up: parsing + checking the GeoJSON files vs loading the stored import (WKB rows) from
  SQLite (and PostgreSQL with ``--pg-url``), each followed by building the index;
* index memory: resident set size (RSS) growth for the geometries and for the index (trees,
  prepared polygons, border pieces) once every lookup path has been warmed; GEOS allocates
  outside Python, so ``tracemalloc`` alone would miss most of it (it is shown too);
* lookup latency per call, p50/p99/max, on seeded random points (commune interior points and
  uniform points over metropolitan France): commune, département, ``locate`` without and with
  an accuracy, border distance, full ``resolve_position``;
* baseline in the same run: a naive loop over every commune polygon (prepared, as an honest
  baseline) and over every département polygon.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import shapely

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alert_server.db import make_engine, migrate
from alert_server.geo.boundaries import Area, parse_boundaries
from alert_server.geo.index import GeoIndex
from alert_server.geo.resolve import resolve_position
from alert_server.geo.schemas import Fix, PositionInputs
from alert_server.geo.service import load_index, store
from alert_server.geo.zones import parse_zones
from benchmarks.benchlib import machine_info, write_json

REPO = Path(__file__).resolve().parent.parent


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(samples_s: list[float]) -> tuple[float, float, float]:
    us = sorted(s * 1e6 for s in samples_s)
    p50 = statistics.median(us)
    p99 = us[min(len(us) - 1, int(len(us) * 0.99))]
    return p50, p99, us[-1]


def timed(fn: Callable[[float, float], object], points: list[tuple[float, float]]) -> list[float]:
    out = []
    clock = time.perf_counter
    for lat, lon in points:
        t0 = clock()
        fn(lat, lon)
        out.append(clock() - t0)
    return out


def memory_probe(db_path: Path, geo: Path) -> None:
    """Child process: RSS growth of each stage of a server start from the stored import."""
    tracemalloc.start()
    start = rss_mib()
    con = sqlite3.connect(db_path)
    dep_rows = con.execute("SELECT code, nom, geom_wkb FROM geo_departement").fetchall()
    com_rows = con.execute("SELECT code, nom, geom_wkb FROM geo_commune").fetchall()
    con.close()
    rows = rss_mib()
    dep_geoms = shapely.from_wkb([r[2] for r in dep_rows])
    com_geoms = shapely.from_wkb([r[2] for r in com_rows])
    geoms = rss_mib()
    index = GeoIndex(
        [Area(r[0], r[1], g) for r, g in zip(dep_rows, dep_geoms, strict=True)],
        [Area(r[0], r[1], g) for r, g in zip(com_rows, com_geoms, strict=True)],
    )
    built = rss_mib()
    with (geo / "communes-index.csv").open(encoding="utf-8") as f:
        for r in csv.DictReader(f):
            lat, lon = float(r["lat"]), float(r["lon"])
            index.locate(lat, lon)
    warm = rss_mib()
    traced = tracemalloc.get_traced_memory()[0] / 2**20
    print(
        json.dumps(
            {
                "start": start,
                "rows": rows - start,
                "geoms": geoms - rows,
                "index": built - geoms,
                "warm": warm - built,
                "total": warm,
                "traced": traced,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--geo-dir",
        type=Path,
        default=Path(os.environ.get("VIGIE_GEO_DIR", REPO.parent / "shared" / "geo")),
    )
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--naive-points", type=int, default=200)
    parser.add_argument("--pg-url", default=None, help="also time the start-up from PostgreSQL")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument("--memory-probe", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    geo = args.geo_dir
    if args.memory_probe is not None:
        memory_probe(args.memory_probe, geo)
        return

    print(
        f"# geo benchmark {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"Python {platform.python_version()}, shapely {shapely.__version__} "
        f"(GEOS {shapely.geos_version_string})"
    )

    # -- start-up: parse GeoJSON ----------------------------------------------------------------
    t0 = time.perf_counter()
    deps = parse_boundaries(geo / "departements-avec-outre-mer.geojson", "departements")
    communes = parse_boundaries(geo / "communes-avec-outre-mer.geojson.gz", "communes")
    zones = parse_zones(geo / "zones-competence-EXEMPLE.csv")
    t_parse = time.perf_counter() - t0
    t0 = time.perf_counter()
    GeoIndex(deps.areas, communes.areas, zones.zones)
    t_build = time.perf_counter() - t0
    startup = [
        ("parse GeoJSON (46 MB communes + 3.7 MB départements) + build index", t_parse + t_build)
    ]

    # -- start-up: from the stored import ---------------------------------------------------------
    tmp = Path(tempfile.mkdtemp(prefix="vigie-geo-bench-"))
    sqlite_db = tmp / "bench.db"
    urls = [("SQLite", f"sqlite:///{sqlite_db}")]
    if args.pg_url:
        urls.append(("PostgreSQL", args.pg_url))
    for label, url in urls:
        engine = make_engine(url)
        migrate(engine)
        t0 = time.perf_counter()
        store(engine, departements=deps, communes=communes, zones=zones)
        t_store = time.perf_counter() - t0
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            loaded = load_index(engine)
            times.append(time.perf_counter() - t0)
            assert loaded is not None and loaded.commune_count == 35_357
        del loaded
        startup.append((f"load stored import from {label} + build index (best of 3)", min(times)))
        startup.append((f"(one-off) write the import into {label}", t_store))
        engine.dispose()
    gc.collect()

    # -- memory (in a fresh process: freed memory of the parse above would hide it) ------------
    memory = json.loads(
        subprocess.run(
            [sys.executable, __file__, "--memory-probe", str(sqlite_db), "--geo-dir", str(geo)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )

    wkb_deps = shapely.to_wkb([a.geometry for a in deps.areas])
    wkb_com = shapely.to_wkb([a.geometry for a in communes.areas])
    names = [(a.code, a.nom) for a in communes.areas]
    dep_names = [(a.code, a.nom) for a in deps.areas]
    dep_geoms = shapely.from_wkb(wkb_deps)
    com_geoms = shapely.from_wkb(wkb_com)
    t0 = time.perf_counter()
    index = GeoIndex(
        [Area(c, n, g) for (c, n), g in zip(dep_names, dep_geoms, strict=True)],
        [Area(c, n, g) for (c, n), g in zip(names, com_geoms, strict=True)],
        zones.zones,
    )
    t_index_only = time.perf_counter() - t0
    shutil.rmtree(tmp, ignore_errors=True)

    # Points: commune interior points (where people are) and uniform metropolitan points.
    rng = random.Random(20261122)
    with (geo / "communes-index.csv").open(encoding="utf-8") as f:
        interior = [(float(r["lat"]), float(r["lon"])) for r in csv.DictReader(f)]
    half = args.points // 2
    points = rng.sample(interior, half) + [
        (rng.uniform(42.4, 51.0), rng.uniform(-4.7, 8.2)) for _ in range(args.points - half)
    ]
    # Warm every lazy structure (GEOS prepares a polygon on its first query).
    for lat, lon in interior:
        index.commune_at(lat, lon)
        index.departement_at(lat, lon)
    for lat, lon in points[:2000]:
        index.locate(lat, lon, 50)

    # -- latency ------------------------------------------------------
    now = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    rows = [
        ("commune_at", timed(index.commune_at, points)),
        ("departement_at", timed(index.departement_at, points)),
        ("locate (no accuracy → 1 km rule)", timed(lambda la, lo: index.locate(la, lo), points)),
        ("locate (acc 50 m)", timed(lambda la, lo: index.locate(la, lo, 50), points)),
        ("locate (acc 5 km, cell)", timed(lambda la, lo: index.locate(la, lo, 5000), points)),
        ("border_distance_m", timed(index.border_distance_m, points)),
        (
            "resolve_position (fresh GPS fix)",
            timed(
                lambda la, lo: resolve_position(
                    PositionInputs(fix=Fix(la, lo, 12, now, "gps")), now=now, index=index
                ),
                points,
            ),
        ),
    ]

    # -- naive baseline ------------------------------------------------------
    naive_pts = points[: args.naive_points]

    def naive_commune(lat: float, lon: float) -> int | None:
        for i, g in enumerate(com_geoms):
            if shapely.intersects_xy(g, lon, lat):
                return i
        return None

    def naive_dep(lat: float, lon: float) -> int | None:
        for i, g in enumerate(dep_geoms):
            if shapely.intersects_xy(g, lon, lat):
                return i
        return None

    shapely.prepare(com_geoms)  # same prepared polygons as the index: only the search differs
    baseline = [
        (
            f"naive loop over 35,357 communes ({len(naive_pts)} points)",
            timed(naive_commune, naive_pts),
        ),
        (
            f"naive loop over 101 départements ({len(naive_pts)} points)",
            timed(naive_dep, naive_pts),
        ),
    ]

    # -- report ------------------------------------------------------
    print()
    print("| start-up | seconds |")
    print("|---|---|")
    for label, s in startup:
        print(f"| {label} | {s:.2f} |")
    print(f"| build the index alone from loaded geometries | {t_index_only:.2f} |")
    print()
    print("| memory | MiB |")
    print("|---|---|")
    print(f"| fresh process after imports | {memory['start']:.0f} |")
    print(f"| WKB rows read from SQLite (35 MB of WKB) | +{memory['rows']:.0f} |")
    print(f"| geometries (101 départements + 35,357 communes) | +{memory['geoms']:.0f} |")
    print(f"| index: trees, border pieces | +{memory['index']:.0f} |")
    print(f"| prepared polygons, after warming every lookup | +{memory['warm']:.0f} |")
    print(f"| total RSS with the warmed index | {memory['total']:.0f} |")
    print(f"| Python objects among it (tracemalloc) | {memory['traced']:.0f} |")
    print()
    print(f"| lookup ({len(points):,} points) | p50 µs | p99 µs | max µs |")
    print("|---|---|---|---|")
    for label, samples in rows:
        p50, p99, mx = percentiles(samples)
        print(f"| {label} | {p50:.1f} | {p99:.1f} | {mx:.0f} |")
    for label, samples in baseline:
        p50, p99, mx = percentiles(samples)
        print(f"| baseline: {label} | {p50:.1f} | {p99:.1f} | {mx:.0f} |")

    def dist(samples: list[float]) -> dict[str, float | int]:
        p50, p99, mx = percentiles(samples)
        return {"n": len(samples), "p50_us": p50, "p99_us": p99, "max_us": mx}

    write_json(
        args.json,
        {
            "benchmark": "geo",
            "machine": {
                **machine_info(),
                "shapely": shapely.__version__,
                "geos": shapely.geos_version_string,
            },
            "config": {"points": len(points), "naive_points": len(naive_pts)},
            "startup_s": {
                **dict(startup),
                "build the index alone from loaded geometries": t_index_only,
            },
            # Keys: the parse row first, then "load stored import from SQLite…".
            "startup_parse_s": startup[0][1],
            "startup_sqlite_s": startup[1][1],
            "memory_mib": memory,
            "lookups": {label: dist(samples) for label, samples in rows},
            "baseline": {
                "naive_communes": dist(baseline[0][1]),
                "naive_departements": dist(baseline[1][1]),
            },
        },
    )


if __name__ == "__main__":
    main()
