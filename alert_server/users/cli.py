"""``vigie users …``: dashboard and API accounts. Mounted by ``alert_server.cli`` as ``users``.

Bad input: one French line naming the field, exit status 2, nothing written.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from alert_server.secret_input import SecretInputError, read_secret
from alert_server.settings import Settings, describe_setting_errors, load_settings
from alert_server.users.schemas import ROLE_LABELS_FR
from vigie.timeutil import utcnow

if TYPE_CHECKING:
    from sqlmodel import Session

# SQLModel, the models and the database module are imported by the commands that write:
# ``vigie users list`` on a migrated database reads without them (alert_server.users.listing).

app = typer.Typer(help="Comptes de la console et de l'API.", no_args_is_help=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Fichier TOML de réglages (sinon VIGIE_*).")
]


DepartementsOpt = Annotated[
    str | None,
    typer.Option(
        "--departements",
        help="Codes séparés par des virgules (13,84) : les seuls départements que voit "
        "l'opérateur.",
    ),
]
AllDepartementsOpt = Annotated[
    bool,
    typer.Option(
        "--all-departements",
        help="Opérateur national : voit tous les départements (à demander explicitement).",
    ),
]


def _read_password() -> str:
    try:
        return read_secret("Mot de passe")
    except SecretInputError as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    typer.echo(f"vigie: erreur: {message}", err=True)
    raise typer.Exit(2)


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except Exception as exc:
        _fail(f"réglages: {describe_setting_errors(exc)}")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers): the audit line still says "cli"
        return "?"


@app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(metavar="USERNAME")],
    role: Annotated[str, typer.Option("--role", help="admin | dispatcher")],
    departements: DepartementsOpt = None,
    all_departements: AllDepartementsOpt = False,
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            help="Déconseillé (visible dans ps) : sans cette option le mot de passe est "
            "demandé, ou lu sur l'entrée standard. Au moins 12 caractères.",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Crée un compte ; un opérateur (dispatcher) ne voit que ses départements."""
    from alert_server.db import make_engine, migrate, write_scope
    from alert_server.users import service

    if password is None:
        password = _read_password()
    try:
        new = service.validate_new_account(
            username, password, role, departements, all_departements=all_departements
        )
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
    from alert_server.migration_heads import is_current
    from alert_server.users.listing import list_accounts
    from vigie.persistence import make_engine

    settings = _settings(config)
    engine = make_engine(settings.database_url)
    try:
        if not is_current(engine):
            from alert_server.db import migrate

            migrate(engine)
        with engine.connect() as conn:
            rows = [
                {
                    "username": a.username,
                    "role": a.role,
                    "departements": list(a.departements),
                    "disabled": a.disabled,
                }
                for a in list_accounts(conn)
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


def _change(config: Path | None, change: Callable[[Session, str], str]) -> None:
    """Run one account change and its audit line in one transaction; print its French
    summary. Bad input (unknown account…): one line, exit 2, nothing written."""
    from alert_server.db import make_engine, migrate, write_scope
    from alert_server.users import service

    settings = _settings(config)
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        with write_scope(engine) as session:
            message = change(session, f"cli:{_os_user()}"[:64])
    except service.UserInputError as exc:
        _fail(str(exc))
    finally:
        engine.dispose()
    typer.echo(message)


UserArg = Annotated[str, typer.Argument(metavar="USERNAME")]


@app.command("disable")
def users_disable(username: UserArg, config: ConfigOpt = None) -> None:
    """Désactive un compte : ses sessions et jetons cessent aussitôt de fonctionner."""

    def change(session: Session, actor: str) -> str:
        from alert_server.users import accounts

        a = accounts.disable(session, username=username, now=utcnow(), actor=actor)
        return f"Compte {a.username} désactivé ; ses sessions et jetons sont révoqués."

    _change(config, change)


@app.command("enable")
def users_enable(username: UserArg, config: ConfigOpt = None) -> None:
    """Réactive un compte désactivé (ses anciens jetons restent révoqués)."""

    def change(session: Session, actor: str) -> str:
        from alert_server.users import accounts

        a = accounts.enable(session, username=username, now=utcnow(), actor=actor)
        return f"Compte {a.username} réactivé."

    _change(config, change)


@app.command("passwd")
def users_passwd(username: UserArg, config: ConfigOpt = None) -> None:
    """Change le mot de passe (demandé, ou lu sur l'entrée standard) ; les sessions et
    jetons en cours sont révoqués."""
    password = _read_password()

    def change(session: Session, actor: str) -> str:
        from alert_server.users import accounts

        a = accounts.set_password(
            session, username=username, password=password, now=utcnow(), actor=actor
        )
        return f"Mot de passe de {a.username} changé ; ses sessions et jetons sont révoqués."

    _change(config, change)


@app.command("scope")
def users_scope(
    username: UserArg,
    departements: DepartementsOpt = None,
    all_departements: AllDepartementsOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Change les départements que voit un opérateur (effet immédiat)."""

    def change(session: Session, actor: str) -> str:
        from alert_server.users import accounts, service

        a = accounts.set_scope(
            session,
            username=username,
            departements=departements,
            all_departements=all_departements,
            now=utcnow(),
            actor=actor,
        )
        return f"Portée de {a.username} : {service.principal_of(a).scope_label}."

    _change(config, change)


@app.command("revoke-tokens")
def users_revoke_tokens(username: UserArg, config: ConfigOpt = None) -> None:
    """Révoque tous les jetons d'API et toutes les sessions de la console de ce compte."""

    def change(session: Session, actor: str) -> str:
        from alert_server.users import accounts, service

        n = accounts.revoke_tokens(session, username=username, now=utcnow(), actor=actor)
        return (
            f"Jetons et sessions de {service.normalise_username(username)} révoqués "
            f"({n} session(s) de console fermée(s))."
        )

    _change(config, change)
