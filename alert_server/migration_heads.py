"""Is the database already at the latest migrations? Answered without importing Alembic.

Why: every command and every server start calls ``migrate``. Alembic's upgrade on a database
that is already up to date still imports Alembic (about a second of start-up on a small
machine), every migration script and every model. Here the heads are read from the migration
files' text (their ``revision`` / ``down_revision`` assignments, as literals) and compared with
the ``alembic_version`` table. Anything unexpected (a computed revision, a missing table, an
unknown row) answers "not known to be current", and the caller runs Alembic as before: this
only ever skips an upgrade that would have done nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, inspect

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Each package owns an Alembic branch in its own folder (dispatch never imports alert_server).
# Listed here rather than in ``alert_server.db`` so that a read-only command can check the
# database without importing SQLModel, which ``alert_server.db`` needs for its naming rules.
VERSION_LOCATIONS = (
    MIGRATIONS_DIR / "versions",
    Path(__file__).parent / "geo" / "migrations",
    Path(__file__).parent / "users" / "migrations",
    Path(__file__).parent / "sessions" / "migrations",
    Path(__file__).parent / "phoneapp" / "migrations",
    Path(__file__).parent / "gateways" / "migrations",
    Path(__file__).parent.parent / "dispatch" / "migrations",
)


def _literal_revisions(value: Any) -> set[str] | None:
    if value is None:
        return set()
    if isinstance(value, str):
        return {value}
    if isinstance(value, tuple | list) and all(isinstance(v, str) for v in value):
        return set(value)
    return None


_ASSIGNMENT = re.compile(
    r"^(revision|down_revision|depends_on)\s*(?::[^=]*)?=\s*(?P<value>.+?)\s*(?:#.*)?$"
)
_QUOTED = re.compile(r"""^(?:"([^"\\]*)"|'([^'\\]*)')$""")
_UNSURE = object()


def _literal(text: str) -> Any:
    """``None``, a quoted string, or a tuple/list of quoted strings; anything else is unsure.

    Read with a pattern rather than ``ast``: ``ast.parse`` is not safe across threads on
    CPython 3.11 before 3.11.8 (gh-106905), and servers migrate from several threads."""
    if text == "None":
        return None
    if m := _QUOTED.match(text):
        return m.group(1) if m.group(1) is not None else m.group(2)
    if text[:1] in "([" and text[-1:] in ")]":
        items = [i.strip() for i in text[1:-1].split(",") if i.strip()]
        out = []
        for item in items:
            m = _QUOTED.match(item)
            if m is None:
                return _UNSURE
            out.append(m.group(1) if m.group(1) is not None else m.group(2))
        return tuple(out)
    return _UNSURE


def script_heads(locations: Iterable[Path]) -> frozenset[str] | None:
    """The head revisions of the migration scripts in ``locations``, or None if unsure."""
    revisions: set[str] = set()
    parents: set[str] = set()
    needed: set[str] = set()
    for folder in locations:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.py")):
            found: dict[str, Any] = {}
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, ValueError):
                return None
            for line in lines:
                m = _ASSIGNMENT.match(line)
                if m is None:
                    continue
                value = _literal(m.group("value"))
                if value is _UNSURE:
                    return None
                found[m.group(1)] = value
            if "revision" not in found:
                continue  # not a migration script (a helper module)
            rev = _literal_revisions(found["revision"])
            down = _literal_revisions(found.get("down_revision"))
            if rev is None or len(rev) != 1 or down is None:
                return None
            # A dependency on another branch orders the upgrade but is not a parent: it does
            # not change the heads, as long as the revision it names exists.
            deps = _literal_revisions(found.get("depends_on"))
            if deps is None:
                return None
            needed |= deps
            revisions |= rev
            parents |= down
    if not revisions or not parents <= revisions or not needed <= revisions:
        return None
    return frozenset(revisions - parents)


def database_heads(conn: Connection) -> frozenset[str] | None:
    """The revisions stamped in the database, or None when it has never been migrated."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    return frozenset(str(r[0]) for r in rows)


def at_heads(conn: Connection, locations: Iterable[Path]) -> bool:
    """True only when the database is certainly at every head of the scripts."""
    heads = script_heads(locations)
    if heads is None:
        return False
    return database_heads(conn) == heads


def is_current(engine: Engine) -> bool:
    """True only when ``engine``'s database is certainly at every head of Vigie's migrations."""
    with engine.connect() as conn:
        current = at_heads(conn, VERSION_LOCATIONS)
        conn.rollback()
    return current
