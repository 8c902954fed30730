"""The stored referent directory: import, current version, start-up from a file.

Every server reads the newest ``referent_directory`` row, so an import on one machine reaches
all of them. The stored YAML text is re-parsed by the same parser (cached by its hash).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, insert, select

from alert_server.referents.models import ReferentDirectory
from alert_server.referents.parser import parse_directory
from alert_server.referents.schemas import Directory, DirectoryError
from vigie.persistence import write_transaction
from vigie.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

_dir_t = ReferentDirectory.__table__  # type: ignore[attr-defined]

_parsed: OrderedDict[str, Directory] = OrderedDict()
_parsed_lock = threading.Lock()


def _store(engine: Engine, directory: Directory, text: str, now: datetime | None) -> Directory:
    at = now or utcnow()
    with write_transaction(engine) as conn:  # the process's writers take their turn
        conn.execute(
            insert(_dir_t).values(
                source=directory.source[:500],
                sha256=directory.sha256,
                yaml_text=text,
                loaded_at=at,
            )
        )
    log.info(
        "referent directory stored",
        extra={"source": directory.source, "sha256": directory.sha256},
    )
    return replace(directory, loaded_at=at)


def _read(path: Path) -> tuple[str, Directory]:
    """The file's text and its parsed directory, from ONE read (the file may be edited)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DirectoryError([f"{path}:1: le fichier n'est pas en UTF-8"]) from exc
    except OSError as exc:
        raise DirectoryError([f"{path}: lecture impossible ({exc.strerror or exc})"]) from exc
    return text, parse_directory(text, str(path))


def import_directory(engine: Engine, path: Path, *, now: datetime | None = None) -> Directory:
    """Check ``path`` and store it as the current directory.

    Raises ``DirectoryError`` (every error, one line each) before anything is written.
    """
    text, directory = _read(path)
    return _store(engine, directory, text, now)


def current_directory(engine: Engine) -> Directory | None:
    """The newest stored directory, or None when none was ever imported."""
    with engine.connect() as conn:
        row = conn.execute(
            select(_dir_t.c.source, _dir_t.c.sha256, _dir_t.c.yaml_text, _dir_t.c.loaded_at)
            .order_by(_dir_t.c.id.desc())
            .limit(1)
        ).first()
    if row is None:
        return None
    with _parsed_lock:
        cached = _parsed.get(row.sha256)
    if cached is None or cached.source != row.source:
        # Stored directories were valid when imported; a parser change that now rejects one
        # raises here, loudly, rather than silently routing with half a directory.
        cached = parse_directory(row.yaml_text, row.source)
        with _parsed_lock:
            _parsed[row.sha256] = cached
            while len(_parsed) > 8:
                _parsed.popitem(last=False)
    return replace(cached, loaded_at=as_utc(row.loaded_at))


def sync_from_file(engine: Engine, path: Path, *, now: datetime | None = None) -> Directory:
    """At server start with ``VIGIE_REFERENTS_FILE``: store the file unless it is current.

    Idempotent, so several servers started with the same file add one row, not one each
    (a race can add two identical rows, which is harmless: the newest wins).
    """
    text, directory = _read(path)
    current = current_directory(engine)
    if current is not None and current.sha256 == directory.sha256:
        return current
    return _store(engine, directory, text, now)
