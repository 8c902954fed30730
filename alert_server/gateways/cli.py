"""``vigie devices add … --gateway osmand`` (operations.md 1.1): a device without MQTT; and the
check of ``VIGIE_BUTTONS_FILE`` before ``vigie server`` starts. The gateways themselves are
imported only when used: every ``vigie`` command loads this module."""

from __future__ import annotations

import json

import typer

from alert_server.db import make_engine, migrate, write_scope
from alert_server.devices import service
from alert_server.settings import Settings
from vigie.timeutil import utcnow

GATEWAYS = ("osmand",)


def gateway_error(gateway: str) -> str | None:
    if gateway not in GATEWAYS:
        return f"--gateway: {gateway!r} n'est pas l'une de {', '.join(GATEWAYS)}"
    return None


def add_osmand_device(settings: Settings, new: service.NewDevice, *, as_json: bool) -> None:
    """Register the device and its OsmAnd identifier in one transaction; print them once.

    The device gets no MQTT account: it only speaks HTTP, and its identifier is its credential.
    """
    from alert_server.audit import record_cli
    from alert_server.gateways import osmand  # the web stack, only when needed

    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        with write_scope(engine) as session:
            service.add_device(session, new=new, now=utcnow())
            ident = osmand.register(session, device_id=new.device_id, now=utcnow())
            # Every CLI change has its audit row (operations.md 1.1), this one too.
            record_cli(session, "device.add", target=new.device_id, command="vigie devices add")
    finally:
        engine.dispose()
    server_url = settings.public_url.rstrip("/") + osmand.PATH
    if as_json:
        typer.echo(
            json.dumps({"device_id": new.device_id, "osmand_id": ident, "server_url": server_url})
        )
        return
    typer.echo(f"Appareil {new.device_id} enregistré pour {new.worker} ({new.role}) : OsmAnd.")
    typer.echo("Dans Traccar Client (ou l'appareil), réglez :")
    typer.echo(f"  Identifiant de l'appareil (affiché une seule fois) : {ident}")
    typer.echo(f"  URL du serveur : {server_url}")
    typer.echo(
        "Attention : le SOS de Traccar Client part en une seule requête, sans nouvel essai en cas"
        " d'échec (pas de réseau, serveur injoignable) et sans accusé de réception sur le"
        " téléphone."
    )


def buttons_errors(settings: Settings) -> list[str]:
    """``VIGIE_BUTTONS_FILE`` checked before the server starts (French lines naming the line);
    empty when it is fine or unset."""
    if settings.buttons_file is None:
        return []
    from alert_server.gateways import buttons

    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        buttons.load_file(settings.buttons_file, engine)
    except buttons.ButtonsFileError as exc:
        return [f"VIGIE_BUTTONS_FILE: {line}" for line in exc.errors]
    finally:
        engine.dispose()
    return []
