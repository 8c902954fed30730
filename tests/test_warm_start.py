"""``alert_server.warm_start``: the boundaries loaded while ``vigie server`` imports. It does
what the start would do, on a migrated database only, and never hides a failure: the start
meets it again and refuses."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect

from alert_server.db import make_engine, migrate
from alert_server.geo import service
from alert_server.geo.boundaries import GeoDataError
from alert_server.geo.service import current_index, data_version, imported_kinds, load_from_dir
from alert_server.warm_start import WarmStart
from tests.geo.conftest import small_geo  # noqa: F401  (fixture)
from tests.support import REPO


def _folder(tmp_path: Path, data: dict[str, Path]) -> Path:
    folder = tmp_path / "geo"
    folder.mkdir()
    for kind, name in (
        ("departements", "departements.geojson"),
        ("communes", "communes.geojson"),
        ("zones", "zones.csv"),
    ):
        (folder / name).write_bytes(data[kind].read_bytes())
    return folder


def test_a_migrated_database_gets_its_boundaries_and_index(
    engine: Engine,
    tmp_path: Path,
    small_geo: dict[str, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warm = WarmStart(engine, _folder(tmp_path, small_geo)).start()
    warm.wait()
    assert warm.error is None
    assert warm.summary is not None
    assert (warm.summary.departements, warm.summary.communes, warm.summary.zones) == (2, 3, 3)
    # What Runtime.start does next finds it done: nothing imported again, the index not rebuilt.
    loads: list[Engine] = []
    real = service.load_index
    monkeypatch.setattr(service, "load_index", lambda e: loads.append(e) or real(e))
    version = data_version(engine)
    assert load_from_dir(engine, tmp_path / "geo").empty
    index = current_index(engine)
    assert index is not None and index.departement_at(43.5, 5.0) == "13"
    assert loads == [] and data_version(engine) == version


def test_a_database_to_migrate_is_left_to_the_start(
    tmp_path: Path,
    small_geo: dict[str, Path],  # noqa: F811
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        warm = WarmStart(engine, _folder(tmp_path, small_geo)).start()
        warm.wait()
        assert warm.error is None and warm.summary is None
        # Not a table created: migrations run first, in Runtime.start, as before.
        assert inspect(engine).get_table_names() == []
        migrate(engine)
        summary = load_from_dir(engine, tmp_path / "geo")
        assert (summary.departements, summary.communes, summary.zones) == (2, 3, 3)
    finally:
        engine.dispose()


def test_a_bad_boundary_file_is_left_for_the_start_to_refuse(
    engine: Engine,
    tmp_path: Path,
    small_geo: dict[str, Path],  # noqa: F811
) -> None:
    folder = _folder(tmp_path, small_geo)
    (folder / "departements.geojson").write_text('{"type": "FeatureCollection"', encoding="utf-8")
    warm = WarmStart(engine, folder).start()
    warm.wait()
    assert isinstance(warm.error, GeoDataError)
    assert imported_kinds(engine) == {}  # nothing stored
    with pytest.raises(GeoDataError, match=r"departements\.geojson"):
        load_from_dir(engine, folder)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_server_still_refuses_to_start_on_a_bad_boundary_file(
    engine: Engine,
    db_url: str,
    tmp_path: Path,
    small_geo: dict[str, Path],  # noqa: F811
) -> None:
    """Through ``vigie server`` on a migrated database (the warm start's case)."""
    folder = _folder(tmp_path, small_geo)
    (folder / "communes.geojson").write_text("pas du JSON", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
    env.update(
        VIGIE_DATABASE_URL=db_url,
        VIGIE_GEO_DIR=str(folder),
        VIGIE_SECRET_KEY=secrets.token_hex(32),
        VIGIE_TELEPHONY="simulated",
        # Never reached: the boundaries are loaded before the broker connection.
        VIGIE_MQTT_URL="mqtt://127.0.0.1:9",
    )
    out = subprocess.run(
        [sys.executable, "-m", "alert_server.cli", "server", "--port", "9"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert out.returncode != 0
    assert "communes.geojson" in out.stderr and "GeoDataError" in out.stderr, out.stderr[-3000:]
    assert imported_kinds(engine) == {}
