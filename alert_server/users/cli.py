"""``vigie users …``: dashboard and API accounts. Mounted by ``alert_server.cli`` as ``users``.

Bad input: one French line naming the field, exit status 2, nothing written.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from alert_server.db import make_engine, migrate, read_scope, write_scope
from alert_server.settings import Settings, load_settings
from alert_server.users import service
from alert_server.users.schemas import ROLE_LABELS_FR
from vigie.timeutil import utcnow

app = typer.Typer(help="Comptes de la console et de l'API.", no_args_is_help=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Fichier TOML de réglages (sinon VIGIE_*).")
]


def _fail(message: str) -> NoReturn:
    typer.echo(f"vigie: erreur: {message}", err=True)
    raise typer.Exit(2)


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except Exception as exc:
        _fail(f"réglages: {str(exc).splitlines()[0]}")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers): the audit line still says "cli"
        return "?"


@app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(metavar="USERNAME")],
    password: Annotated[str, typer.Option("--password", help="Au moins 12 caractères.")],
    role: Annotated[str, typer.Option("--role", help="admin | dispatcher")],
    departements: Annotated[
        str | None,
        typer.Option(
            "--departements",
            help="Codes séparés par des virgules (13,84) ; sans cette option un opérateur "
            "voit tous les départements.",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Crée un compte ; un opérateur (dispatcher) ne voit que ses départements."""
    try:
        new = service.validate_new_account(username, password, role, departements)
    except service.UserInputError as exc:
        _fail(str(exc))
    settings = _settings(config)
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        now = utcnow()
        # One transaction: the account and its audit line, or neither.
        with write_scope(engine) as session:
            account = service.add_account(session, new=new, now=now)
            service.audit(
                session,
                action="user.add",
                now=now,
                actor=f"cli:{_os_user()}"[:64],
                target=new.username,
                user_agent="vigie users add",
                role=new.role,
                departements=list(new.departements),
            )
            principal = service.principal_of(account)
    except service.UserInputError as exc:
        _fail(str(exc))
    finally:
        engine.dispose()
    typer.echo(
        f"Compte {principal.username} créé ({ROLE_LABELS_FR[principal.role]}, "
        f"portée : {principal.scope_label})."
    )


@app.command("list")
def users_list(
    as_json: Annotated[bool, typer.Option("--json", help="Sortie JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Liste les comptes (jamais les mots de passe)."""
    settings = _settings(config)
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        with read_scope(engine) as session:
            rows = [
                {
                    "username": a.username,
                    "role": a.role,
                    "departements": list(a.departements),
                    "disabled": a.disabled_at is not None,
                }
                for a in service.list_accounts(session)
            ]
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    for r in rows:
        deps = ",".join(r["departements"]) or "tous"  # type: ignore[arg-type]
        state = " (désactivé)" if r["disabled"] else ""
        typer.echo(f"{r['username']:<24} {r['role']:<11} {deps}{state}")
    if not rows:
        typer.echo("Aucun compte.")
