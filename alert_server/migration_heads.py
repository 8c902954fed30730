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

import ast
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, inspect


def _literal_revisions(value: Any) -> set[str] | None:
    if value is None:
        return set()
    if isinstance(value, str):
        return {value}
    if isinstance(value, tuple | list) and all(isinstance(v, str) for v in value):
        return set(value)
    return None


# CPython 3.11 before 3.11.8 corrupts ``ast.parse`` when two threads run it at once
# ("AST constructor recursion depth mismatch", gh-106905): servers and tests migrate from
# several threads, so the files are read one thread at a time.
_PARSE_LOCK = threading.Lock()


def script_heads(locations: Iterable[Path]) -> frozenset[str] | None:
    """The head revisions of the migration scripts in ``locations``, or None if unsure."""
    with _PARSE_LOCK:
        return _script_heads(locations)


def _script_heads(locations: Iterable[Path]) -> frozenset[str] | None:
    revisions: set[str] = set()
    parents: set[str] = set()
    needed: set[str] = set()
    for folder in locations:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.py")):
            found: dict[str, Any] = {}
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            except (OSError, SyntaxError, ValueError):
                return None
            for node in tree.body:
                target: ast.expr | None = None
                value: ast.expr | None = None
                if isinstance(node, ast.AnnAssign) and node.value is not None:
                    target, value = node.target, node.value
                elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                    target, value = node.targets[0], node.value
                if not isinstance(target, ast.Name) or target.id not in (
                    "revision",
                    "down_revision",
                    "depends_on",
                ):
                    continue
                try:
                    found[target.id] = ast.literal_eval(value) if value is not None else None
                except ValueError:
                    return None
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
