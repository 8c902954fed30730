"""``vigie referents import|check`` through typer's runner, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from alert_server.db import make_engine, migrate
from alert_server.referents.cli import app
from alert_server.referents.models import ReferentDirectory
from tests.referents.conftest import NIGHTS_AND_BORDER
from tests.referents.test_parser import BAD


@pytest.fixture
def runner(db_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("VIGIE_DATABASE_URL", db_url)
    monkeypatch.delenv("VIGIE_REFERENTS_FILE", raising=False)
    return CliRunner()


def _rows(db_url: str) -> int:
    engine = make_engine(db_url)
    try:
        migrate(engine)  # a refused import never even opens the database
        with engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(ReferentDirectory)).scalar_one()
            )
    finally:
        engine.dispose()


def test_import_then_check(runner: CliRunner, db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "annuaire.yaml"
    path.write_text(NIGHTS_AND_BORDER, encoding="utf-8")
    result = runner.invoke(app, ["import", str(path)])
    assert result.exit_code == 0, result.output
    assert "annuaire chargé : 3 département(s)" in result.stdout
    assert _rows(db_url) == 1

    result = runner.invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    # 13 GN has day and weekday-night referents only: the weekend is uncovered.
    assert "13 GN : personne de joignable sam. 08:00–24:00" in out
    assert "13 GN : personne de joignable dim. 00:00–24:00" in out
    assert "Départements sans entrée, repli national uniquement (98)" in out


def test_import_bad_file_lists_every_error(runner: CliRunner, db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "annuaire.yaml"
    path.write_text(BAD, encoding="utf-8")
    result = runner.invoke(app, ["import", str(path)])
    assert result.exit_code == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 14
    assert all(line.startswith(f"{path}:") for line in errors)
    assert result.stdout == ""
    assert _rows(db_url) == 0


def test_import_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["import", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"{tmp_path / 'absent.yaml'}: fichier introuvable"
    ]


def test_check_without_directory(runner: CliRunner) -> None:
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "aucun annuaire" in result.stderr


def test_check_reads_the_configured_file_when_nothing_is_stored(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, spec_file: Path
) -> None:
    monkeypatch.setenv("VIGIE_REFERENTS_FILE", str(spec_file))
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    assert f"Annuaire : {spec_file}" in result.stdout
    assert "13 PN" not in result.stdout  # CIC Marseille is always reachable
