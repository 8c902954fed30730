"""``vigie referents …``: import the referent directory, check it for gaps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine

from alert_server.db import make_engine, migrate
from alert_server.geo.service import zone_counts
from alert_server.referents.check import check_lines
from alert_server.referents.parser import load_directory_file
from alert_server.referents.schemas import Directory, DirectoryError
from alert_server.referents.service import current_directory, import_directory
from alert_server.settings import describe_setting_errors, load_settings
from vigie.departements import departement_sort_key
from vigie.timeutil import utcnow

app = typer.Typer(
    help="Annuaire des référents police/gendarmerie.",
    no_args_is_help=True,
    add_completion=False,
)


def _fail(*lines: str) -> typer.Exit:
    for line in lines:
        typer.echo(line, err=True)
    return typer.Exit(2)


def _engine() -> tuple[Engine, Path | None]:
    try:
        settings = load_settings()
    except Exception as exc:  # pydantic ValidationError, bad TOML…
        raise _fail(f"configuration invalide : {describe_setting_errors(exc)}") from exc
    engine = make_engine(settings.database_url)
    migrate(engine)
    return engine, settings.referents_file


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="fichier YAML de l'annuaire")],
) -> None:
    """Vérifie puis charge l'annuaire (toutes les erreurs sont listées, rien n'est écrit)."""
    if not file.is_file():
        raise _fail(f"{file}: fichier introuvable")
    try:
        # Checked before touching the database: a bad file changes nothing.
        load_directory_file(file)
    except DirectoryError as exc:
        raise _fail(*exc.errors) from exc
    engine, _ = _engine()
    try:
        directory = import_directory(engine, file)
    except DirectoryError as exc:
        raise _fail(*exc.errors) from exc
    finally:
        engine.dispose()
    count = sum(len(v) for forces in directory.departements.values() for v in forces.values())
    typer.echo(
        f"annuaire chargé : {len(directory.departements)} département(s), {count} contact(s), "
        f"{len(directory.national_fallback)} contact(s) de repli national"
    )


@app.command("check")
def check_command() -> None:
    """Liste les départements et les heures sans personne de joignable."""
    engine, referents_file = _engine()
    try:
        try:
            directory: Directory | None = current_directory(engine)
        except DirectoryError as exc:
            raise _fail(*exc.errors) from exc
        if directory is None and referents_file is not None:
            try:
                directory = load_directory_file(referents_file)
            except DirectoryError as exc:
                raise _fail(*exc.errors) from exc
        if directory is None:
            raise _fail(
                "aucun annuaire chargé : utilisez « vigie referents import FICHIER » "
                "ou VIGIE_REFERENTS_FILE"
            )
        counts = zone_counts(engine)
    finally:
        engine.dispose()
    lines, _ = check_lines(directory, utcnow(), counts)
    for line in lines:
        typer.echo(line)
    # Where the zone of a commune is unknown, the alert goes to PN first (operations.md).
    mixed = sorted(
        (dep for dep, forces in directory.departements.items() if len(forces) > 1),
        key=departement_sort_key,
    )
    if mixed:
        typer.echo("PN et GN dans l'annuaire (zone inconnue → PN) : " + ", ".join(mixed))
