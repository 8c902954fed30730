"""``vigie geo import`` through typer's runner, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from alert_server.db import make_engine
from alert_server.geo.cli import app
from alert_server.geo.service import imported_kinds, load_index
from tests.geo.conftest import DEPS_FILE, ZONES_FILE, feature, square, write_fc

LAMBERT = [
    [[892000.0, 6247000.0], [895000.0, 6247000.0], [895000.0, 6250000.0], [892000.0, 6247000.0]]
]


@pytest.fixture
def runner(db_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("VIGIE_DATABASE_URL", db_url)
    return CliRunner()


def _kinds(db_url: str) -> dict[str, int]:
    engine = make_engine(db_url)
    try:
        return {k: v.feature_count for k, v in imported_kinds(engine).items()}
    finally:
        engine.dispose()


def test_import_real_files(runner: CliRunner, db_url: str, geo_dir: Path) -> None:
    result = runner.invoke(
        app,
        [
            "import",
            "--departements",
            str(geo_dir / DEPS_FILE),
            "--zones",
            str(geo_dir / ZONES_FILE),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "départements : 101 importés" in result.stdout
    assert "zones police/gendarmerie : 378 communes importées" in result.stdout
    assert "IGN – ADMIN EXPRESS COG 2018 / INSEE COG 2018" in result.stdout
    assert _kinds(db_url) == {"departements": 101, "zones": 378}
    engine = make_engine(db_url)
    try:
        index = load_index(engine)
        assert index is not None and index.departement_at(43.2965, 5.3698) == "13"
    finally:
        engine.dispose()


def test_bad_file_exit_2_one_line_nothing_written(
    runner: CliRunner, db_url: str, geo_dir: Path, tmp_path: Path
) -> None:
    ok = runner.invoke(app, ["import", "--departements", str(geo_dir / DEPS_FILE)])
    assert ok.exit_code == 0, ok.output
    bad = write_fc(
        tmp_path / "communes.geojson",
        [feature("13055", "Marseille", square(5.3, 43.2)), feature("13001", "Aix", LAMBERT)],
    )
    result = runner.invoke(
        app, ["import", "--zones", str(geo_dir / ZONES_FILE), "--communes", str(bad)]
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(bad) in lines[0] and "features[1] (code 13001)" in lines[0]
    assert result.stdout == ""
    # The good zone file given with the bad one was not written either.
    assert _kinds(db_url) == {"departements": 101}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "indiquez au moins"),
        (["--departements", "/nonexistent/departements.geojson"], "fichier introuvable"),
    ],
)
def test_usage_errors(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["import", *args])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_simplified_outlines_are_refused(runner: CliRunner, geo_dir: Path) -> None:
    simplified = geo_dir / "departements-version-simplifiee-avec-outre-mer.geojson"
    result = runner.invoke(app, ["import", "--departements", str(simplified)])
    assert result.exit_code == 2 and "simplifiés refusés" in result.stderr
