"""``vigie geo …``: import boundary and zone files into the database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alert_server.db import make_engine, migrate
from alert_server.geo import ATTRIBUTION
from alert_server.geo.boundaries import GeoDataError
from alert_server.geo.service import import_files
from alert_server.settings import describe_setting_errors, load_settings

app = typer.Typer(
    help="Contours (départements, communes) et zones police/gendarmerie.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main() -> None:
    """Contours (départements, communes) et zones police/gendarmerie."""
    # A callback keeps ``import`` a sub-command even though it is the only one, both here and
    # once mounted as ``vigie geo``.


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(2)


@app.command("import")
def import_command(
    departements: Annotated[
        Path | None,
        typer.Option("--departements", help="GeoJSON des départements (.geojson ou .gz)"),
    ] = None,
    communes: Annotated[
        Path | None, typer.Option("--communes", help="GeoJSON des communes (.geojson ou .gz)")
    ] = None,
    zones: Annotated[
        Path | None,
        typer.Option("--zones", help="CSV des zones de compétence police/gendarmerie"),
    ] = None,
) -> None:
    """Importe les fichiers donnés, en une seule transaction (tout ou rien)."""
    given = [p for p in (departements, communes, zones) if p is not None]
    if not given:
        raise _fail("geo import : indiquez au moins --departements, --communes ou --zones")
    for path in given:
        if not path.is_file():
            raise _fail(f"{path}: fichier introuvable")
    if departements is not None and "simplifi" in departements.name.lower():
        # The 5 % outlines are wrong for ~10 % of points within 1 km of a border.
        raise _fail(
            f"{departements}: contours simplifiés refusés pour le routage "
            "(utilisez departements-avec-outre-mer.geojson)"
        )
    try:
        settings = load_settings()
    except Exception as exc:  # pydantic ValidationError, bad TOML…
        raise _fail(f"configuration invalide : {describe_setting_errors(exc)}") from exc
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        summary = import_files(engine, departements=departements, communes=communes, zones=zones)
    except GeoDataError as exc:
        raise _fail(str(exc)) from exc
    finally:
        engine.dispose()
    if summary.departements is not None:
        typer.echo(f"départements : {summary.departements} importés")
    if summary.communes is not None:
        typer.echo(f"communes : {summary.communes} importées")
    if summary.zones is not None:
        typer.echo(f"zones police/gendarmerie : {summary.zones} communes importées")
    for note in summary.notes:
        typer.echo(f"note : {note}")
    typer.echo(f"Données : {ATTRIBUTION} (Licence Ouverte)")
