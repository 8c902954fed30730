"""``vigie users add``: accounts for the console and the API. Bad input: one line naming the
field, exit status 2, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from alert_server.cli import app as vigie_app
from alert_server.db import make_engine, migrate
from alert_server.users.models import Account, AuditRecord
from tests.support import vigie


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"VIGIE_DATABASE_URL": f"sqlite:///{tmp_path / 'vigie.db'}"}


def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(vigie_app, ["users", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def rows(env: dict[str, str]) -> tuple[list[Account], list[AuditRecord]]:
    engine = make_engine(env["VIGIE_DATABASE_URL"])
    migrate(engine)
    try:
        with Session(engine) as s:
            return list(s.exec(select(Account))), list(s.exec(select(AuditRecord)))
    finally:
        engine.dispose()


def test_add_dispatcher_and_admin(env: dict[str, str]) -> None:
    code, out, err = run(
        env, "add", "M.Martin", "--password", "un mot de passe sûr", "--role", "dispatcher",
        "--departements", "84, 13,2a",
    )  # fmt: skip
    assert code == 0, err
    assert out.strip() == "Compte m.martin créé (opérateur, portée : 13, 2A, 84)."
    code, out, err = run(
        env, "add", "chef", "--password", "un autre mot de passe", "--role", "admin"
    )
    assert code == 0, err
    assert "tous départements" in out
    accounts, audit = rows(env)
    by_name = {a.username: a for a in accounts}
    assert by_name["m.martin"].departements == ["13", "2A", "84"]
    assert by_name["m.martin"].password_hash.startswith("$argon2id$")
    assert "un mot de passe" not in by_name["m.martin"].password_hash
    assert by_name["chef"].departements == []
    assert [(r.action, r.target) for r in audit] == [("user.add", "m.martin"), ("user.add", "chef")]
    assert all(r.actor and r.actor.startswith("cli:") for r in audit)

    code, out, _ = run(env, "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert {u["username"] for u in listed} == {"m.martin", "chef"}
    assert "password" not in out and "argon2" not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bob", "--password", "un mot de passe sûr", "--role", "superuser"], "--role"),
        (["bob", "--password", "court", "--role", "dispatcher"], "--password: au moins 12"),
        (["bob", "--password", "un mot de passe sûr", "--role", "dispatcher",
          "--departements", "13,99"], "'99' n'est pas un code de département"),
        (["bob", "--password", "un mot de passe sûr", "--role", "dispatcher",
          "--departements", "20"], "'20' n'est pas un code"),
        (["bob", "--password", "un mot de passe sûr", "--role", "dispatcher",
          "--departements", " , "], "--departements: liste vide"),
        (["bob", "--password", "un mot de passe sûr", "--role", "admin",
          "--departements", "13"], "ne s'applique qu'au rôle dispatcher"),
        (["b", "--password", "un mot de passe sûr", "--role", "admin"], "USERNAME"),
        (["bob/../x", "--password", "un mot de passe sûr", "--role", "admin"], "USERNAME"),
        ([" bob", "--password", " un mot de passe sûr ", "--role", "admin"], "--password"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_nothing_written(
    env: dict[str, str], args: list[str], message: str
) -> None:
    code, _, err = run(env, "add", *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vigie: erreur: ") and message in lines[0]
    assert rows(env) == ([], [])


def test_duplicate_username_through_the_real_command(env: dict[str, str]) -> None:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")} | env
    first = vigie(
        full_env,
        "users",
        "add",
        "regul",
        "--password",
        "un mot de passe sûr",
        "--role",
        "dispatcher",
        "--all-departements",
    )
    assert first.returncode == 0, first.stderr
    again = vigie(
        full_env, "users", "add", "Regul", "--password", "autre mot de passe", "--role", "admin"
    )
    assert again.returncode == 2
    assert again.stderr.strip() == "vigie: erreur: USERNAME: le compte 'regul' existe déjà"
    accounts, audit = rows(env)
    assert [(a.username, a.role) for a in accounts] == [("regul", "dispatcher")]
    assert len(audit) == 1


def test_list_reads_what_the_models_write(engine: Engine, db_url: str) -> None:
    """``users list`` reads the reflected ``account`` table, not through the models
    (alert_server.users.listing): the same names, roles, départements and states."""
    when = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    with Session(engine) as s:
        s.add(Account(username="zoe", password_hash="$argon2id$x", role="dispatcher",
                      departements=["13", "2A"], created_at=when))  # fmt: skip
        s.add(Account(username="chef", password_hash="$argon2id$y", role="admin",
                      departements=[], created_at=when, disabled_at=when))  # fmt: skip
        s.commit()
    env = {"VIGIE_DATABASE_URL": db_url}
    code, out, err = run(env, "list", "--json")
    assert code == 0, err
    assert json.loads(out) == [
        {"username": "chef", "role": "admin", "departements": [], "disabled": True},
        {"username": "zoe", "role": "dispatcher", "departements": ["13", "2A"], "disabled": False},
    ]
    code, out, err = run(env, "list")
    assert code == 0, err
    assert out.splitlines() == [
        f"{'chef':<24} {'admin':<11} tous (désactivé)",
        f"{'zoe':<24} {'dispatcher':<11} 13,2A",
    ]


def test_list_imports_neither_the_models_nor_alembic(engine: Engine, db_url: str) -> None:
    """On a migrated database, ``users list`` reads without SQLModel, the ORM, the models or
    Alembic (what made it slow to start)."""
    code = (
        "import sys\n"
        "from alert_server.cli import app\n"
        "try:\n"
        "    app(['users', 'list'], prog_name='vigie')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('sqlmodel', 'sqlalchemy.orm', 'alembic',\n"
        "                           'alert_server.users.models') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "VIGIE_DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "Aucun compte." in out.stdout
    assert "HEAVY=\n" in out.stdout, out.stdout
