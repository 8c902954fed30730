"""``import_directory`` (``vigie referents import``) against a database: all or nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from alert_server.db import make_engine, migrate
from alert_server.referents.models import ReferentDirectory
from alert_server.referents.schemas import Directory, DirectoryError
from alert_server.referents.service import current_directory, import_directory
from tests.property.common import fast
from tests.property.directory import YAMLISH, DirectoryDoc, directory_docs, perturbed_directories


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path_factory.mktemp('referents') / 'vigie.db'}")
    migrate(eng)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("annuaires")


def _rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ReferentDirectory)).scalar_one())


def _summary(d: Directory | None) -> object:
    if d is None:
        return None
    deps = {
        code: {f: [(c.name, c.phone, c.line) for c in cs] for f, cs in forces.items()}
        for code, forces in d.departements.items()
    }
    return d.sha256, deps, [(c.name, c.phone) for c in d.national_fallback], d.escalation


@fast(25)
@given(directory_docs(), perturbed_directories() | YAMLISH.map(lambda t: (t, [])))
def test_bad_import_leaves_the_current_directory(
    engine: Engine, workdir: Path, good: DirectoryDoc, bad: tuple[DirectoryDoc | str, list]
) -> None:
    """After a valid import, the stored directory reads back as the file; a later import of a
    bad file (mistakes, or arbitrary YAML-like text) raises DirectoryError and leaves the
    current directory and the table exactly as they were."""
    path = workdir / "annuaire.yaml"
    text = good.render()
    path.write_text(text, encoding="utf-8")
    stored = import_directory(engine, path)
    assert _summary(current_directory(engine)) == _summary(stored)
    before, rows = _summary(current_directory(engine)), _rows(engine)

    doc, _ = bad
    path.write_text(doc if isinstance(doc, str) else doc.render(), encoding="utf-8")
    try:
        import_directory(engine, path)
    except DirectoryError as exc:
        assert all(e.startswith(f"{path}:") for e in exc.errors)
        assert _summary(current_directory(engine)) == before and _rows(engine) == rows
    else:
        assert _rows(engine) == rows + 1  # that text happened to be a valid directory


@fast(10)
@given(st.binary(max_size=64))
def test_non_utf8_file_is_refused_without_writing(
    engine: Engine, workdir: Path, raw: bytes
) -> None:
    """A file that is not UTF-8 is refused with ``FILE:1: …`` and nothing is stored."""
    path = workdir / "binaire.yaml"
    path.write_bytes(b"\xff" + raw)
    rows = _rows(engine)
    with pytest.raises(DirectoryError) as info:
        import_directory(engine, path)
    assert info.value.errors[0].startswith(f"{path}:1:")
    assert _rows(engine) == rows
