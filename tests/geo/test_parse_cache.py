"""The parse cache returns exactly what a parse gives, for this exact file only; a damaged entry
or a changed file means a new parse, never other data."""

from __future__ import annotations

from pathlib import Path

import pytest
import shapely

from alert_server.geo import boundaries, parse_cache
from alert_server.geo.boundaries import BoundarySet, GeoDataError
from alert_server.geo.parse_cache import entry_path, parse_boundaries_cached
from tests.geo.conftest import feature, square, write_fc


def _same(a: BoundarySet, b: BoundarySet) -> None:
    assert (a.kind, a.source, a.sha256, a.repaired) == (b.kind, b.source, b.sha256, b.repaired)
    assert [(x.code, x.nom) for x in a.areas] == [(x.code, x.nom) for x in b.areas]
    assert all(
        shapely.equals_exact(x.geometry, y.geometry, 0)
        for x, y in zip(a.areas, b.areas, strict=True)
    )


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every real parse."""
    seen: list[Path] = []
    real = boundaries.parse_boundaries

    def counting(path: Path, kind: boundaries.BoundaryKind) -> BoundarySet:
        seen.append(path)
        return real(path, kind)

    monkeypatch.setattr(boundaries, "parse_boundaries", counting)
    return seen


def _deps(path: Path, x: float = 5.0) -> Path:
    return write_fc(
        path,
        [
            feature("13", "Bouches-du-Rhône", square(x, 43.5)),
            feature("84", "Vaucluse", square(x, 44.0)),
        ],
    )


def test_second_read_comes_from_the_cache_and_is_identical(
    tmp_path: Path, parses: list[Path]
) -> None:
    src, cache = _deps(tmp_path / "departements.geojson"), tmp_path / "cache"
    first = parse_boundaries_cached(src, "departements", cache_dir=cache)
    second = parse_boundaries_cached(src, "departements", cache_dir=cache)
    assert parses == [src]  # parsed once
    _same(first, second)
    _same(first, boundaries.parse_boundaries(src, "departements"))


def test_a_changed_source_file_is_parsed_again(tmp_path: Path, parses: list[Path]) -> None:
    src, cache = _deps(tmp_path / "departements.geojson"), tmp_path / "cache"
    parse_boundaries_cached(src, "departements", cache_dir=cache)
    _deps(src, x=6.0)  # same name, other polygons
    changed = parse_boundaries_cached(src, "departements", cache_dir=cache)
    assert parses == [src, src]
    assert changed.areas[0].geometry.bounds[0] == 6.0
    assert changed.sha256 == boundaries.file_sha256(src)


@pytest.mark.parametrize("damage", ["truncate", "flip_payload_byte", "garbage", "empty"])
def test_a_damaged_entry_means_a_new_parse_never_other_data(
    tmp_path: Path, parses: list[Path], damage: str
) -> None:
    src, cache = _deps(tmp_path / "departements.geojson"), tmp_path / "cache"
    good = parse_boundaries_cached(src, "departements", cache_dir=cache)
    entry = entry_path(cache, "departements", good.sha256)
    raw = entry.read_bytes()
    damaged = {
        "truncate": raw[: len(raw) - 7],
        "flip_payload_byte": raw[:-5] + bytes([raw[-5] ^ 0xFF]) + raw[-4:],
        "garbage": b"not a cache entry",
        "empty": b"",
    }[damage]
    entry.write_bytes(damaged)
    again = parse_boundaries_cached(src, "departements", cache_dir=cache)
    assert parses == [src, src]
    _same(good, again)
    assert entry.read_bytes() == raw  # rewritten whole


def test_a_refused_file_is_refused_every_time_and_never_cached(
    tmp_path: Path, parses: list[Path]
) -> None:
    src, cache = tmp_path / "departements.geojson", tmp_path / "cache"
    src.write_text('{"type": "FeatureCollection", "features": []}')
    for _ in range(2):
        with pytest.raises(GeoDataError, match="vide"):
            parse_boundaries_cached(src, "departements", cache_dir=cache)
    assert len(parses) == 2
    assert not cache.exists() or not any(cache.iterdir())


def test_the_default_folder_follows_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert parse_cache.default_cache_dir() == tmp_path / "vigie" / "geo"
