"""``vigie server`` with ``VIGIE_GEO_DIR`` on a bad boundary file: it refuses to start, naming
the file, and stores nothing (run as a real process, as an operator would)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from alert_server.geo.service import imported_kinds
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


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_server_refuses_to_start_on_a_bad_boundary_file(
    engine: Engine,
    db_url: str,
    tmp_path: Path,
    small_geo: dict[str, Path],
) -> None:
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
