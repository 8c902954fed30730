"""``vigie devices enrol DEVICE_ID [--json]``: the one-time link that turns a phone into the
device, printed and shown as a QR code in the terminal (segno) for the worker to scan."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Annotated

import segno
import typer

from alert_server.db import make_engine, migrate, write_scope
from alert_server.devices import enrol
from alert_server.settings import describe_setting_errors, load_settings
from vigie.timeutil import rfc3339, utcnow


def terminal_qr(text: str) -> str:
    """``text`` as a QR code drawn with block characters (two modules per character row)."""
    out = io.StringIO()
    segno.make(text, error="m").terminal(out=out, compact=True, border=2)
    return out.getvalue()


def enrol_command(
    device_id: Annotated[str, typer.Argument(metavar="DEVICE_ID")],
    as_json: Annotated[bool, typer.Option("--json", help="Sortie JSON.")] = False,
    no_qr: Annotated[bool, typer.Option("--no-qr", help="Sans le QR code.")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="Fichier TOML de réglages (sinon VIGIE_*).")
    ] = None,
) -> None:
    """Lien d'inscription à usage unique (24 h) qui fait d'un téléphone ce boîtier."""
    try:
        settings = load_settings(config)
    except Exception as exc:
        typer.echo(f"vigie: erreur: réglages: {describe_setting_errors(exc)}", err=True)
        raise typer.Exit(2) from None
    engine = make_engine(settings.database_url)
    migrate(engine)
    try:
        with write_scope(engine) as session:
            issued = enrol.issue(
                session, device_id=device_id, public_url=settings.public_url, now=utcnow()
            )
    except enrol.EnrolmentError as exc:
        typer.echo(f"vigie: erreur: {exc.message}", err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    expires = rfc3339(issued.expires_at)
    if as_json:
        payload = {"device_id": device_id, "enrol_url": issued.enrol_url, "expires_at": expires}
        typer.echo(json.dumps(payload, ensure_ascii=False))
        return
    typer.echo(f"Inscription du téléphone pour le boîtier {device_id}")
    typer.echo(f"Lien à usage unique, valable jusqu'au {expires} (UTC) :")
    typer.echo(issued.enrol_url)
    if not no_qr:
        typer.echo(terminal_qr(issued.enrol_url))
    typer.echo(
        "À ouvrir sur le téléphone de la personne (ou à scanner). Ce lien donne l'accès "
        "d'alerte de ce boîtier : ne le transmettez qu'à elle."
    )
    if not settings.mqtt_ws_url:
        typer.echo(
            "Attention : VIGIE_MQTT_WS_URL n'est pas réglé ; le serveur refusera l'inscription "
            "tant que l'adresse WebSocket du broker n'est pas connue.",
            err=True,
        )
