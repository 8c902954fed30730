"""``vigie sim osmand`` and ``vigie sim button``: one request of Traccar Client, one press of an
MQTT button, against a running server (the shapes of ``device_sim.gateways``)."""

from __future__ import annotations

import time
from typing import Annotated, cast
from urllib.parse import urlsplit

import typer

from device_sim.gateways import BUTTON_KINDS, ButtonKind, MqttButton, OsmandDevice


def osmand(
    server_url: Annotated[str, typer.Argument(help="URL du serveur (…/gateway/osmand).")],
    ident: Annotated[str, typer.Argument(metavar="OSMAND_ID", help="Identifiant de l'appareil.")],
    lat: Annotated[float, typer.Option("--lat")] = 45.7640,
    lon: Annotated[float, typer.Option("--lon")] = 4.8357,
    sos: Annotated[bool, typer.Option("--sos", help="Le bouton SOS (sinon une position).")] = False,
    v9: Annotated[bool, typer.Option("--v9", help="Format JSON de Traccar Client 9.")] = False,
) -> None:
    """Une requête de Traccar Client (position, ou SOS envoyé une seule fois)."""
    dev = OsmandDevice(server_url, ident, lat, lon, version=9 if v9 else 10)
    status = dev.sos() if sos else dev.position()
    what = "SOS" if sos else "position"
    typer.echo(f"{what} : réponse HTTP {status or 'aucune (serveur injoignable)'}")
    if sos and status != 200:
        typer.echo("Traccar Client ne renvoie pas un SOS en échec : cette alerte serait perdue.")
    raise typer.Exit(0 if status == 200 else 1)


def button(
    kind: Annotated[str, typer.Argument(help="shelly | zigbee | tasmota")],
    name: Annotated[str, typer.Argument(help="Nom du bouton dans son sujet MQTT.")],
    device_id: Annotated[str, typer.Argument(metavar="DEVICE_ID")],
    password: Annotated[str, typer.Option("--password", help="Mot de passe MQTT du boîtier.")],
    broker: Annotated[str, typer.Option("--broker")] = "mqtt://127.0.0.1:1883",
) -> None:
    """Un appui sur un bouton MQTT existant (QoS 0, sans identifiant d'événement)."""
    if kind not in BUTTON_KINDS:
        typer.echo(f"vigie: erreur: KIND: {kind!r} n'est pas l'un de {', '.join(BUTTON_KINDS)}")
        raise typer.Exit(2)
    parts = urlsplit(broker)
    b = MqttButton(
        cast(ButtonKind, kind), name, device_id, password, parts.hostname or "", parts.port or 1883
    )
    if not b.start():
        typer.echo(f"vigie: erreur: connexion impossible à {broker}", err=True)
        b.stop()
        raise typer.Exit(1)
    b.press()
    time.sleep(0.5)
    b.stop()
    typer.echo(f"Appui envoyé sur {b.topic}")
