"""The stored directory, shared by every server: newest wins, bad files change nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from alert_server.referents.models import ReferentDirectory
from alert_server.referents.schemas import DirectoryError
from alert_server.referents.service import current_directory, import_directory, sync_from_file
from tests.referents.conftest import NIGHTS_AND_BORDER

T0 = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 22, 19, 0, tzinfo=UTC)


def _rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ReferentDirectory)).scalar_one())


def test_import_and_current(engine: Engine, spec_file: Path, tmp_path: Path) -> None:
    assert current_directory(engine) is None
    stored = import_directory(engine, spec_file, now=T0)
    current = current_directory(engine)
    assert current is not None
    assert current.sha256 == stored.sha256 and current.loaded_at == T0
    assert set(current.departements) == {"13", "53"}
    # A second directory, imported later, wins.
    other = tmp_path / "autre.yaml"
    other.write_text(NIGHTS_AND_BORDER, encoding="utf-8")
    import_directory(engine, other, now=T1)
    current = current_directory(engine)
    assert current is not None and set(current.departements) == {"13", "53", "84"}
    assert current.source == str(other) and current.loaded_at == T1


def test_bad_file_changes_nothing(engine: Engine, spec_file: Path, tmp_path: Path) -> None:
    import_directory(engine, spec_file, now=T0)
    bad = tmp_path / "bad.yaml"
    bad.write_text(NIGHTS_AND_BORDER.replace("+33490000084", "+3349"), encoding="utf-8")
    with pytest.raises(DirectoryError):
        import_directory(engine, bad, now=T1)
    assert _rows(engine) == 1
    current = current_directory(engine)
    assert current is not None and current.source == str(spec_file)


def test_sync_from_file_is_idempotent(engine: Engine, spec_file: Path) -> None:
    first = sync_from_file(engine, spec_file, now=T0)
    again = sync_from_file(engine, spec_file, now=T1)
    assert _rows(engine) == 1 and again.sha256 == first.sha256 and again.loaded_at == T0
