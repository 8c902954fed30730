"""``vigie sim osmand`` and ``vigie sim button``: one request of Traccar Client, one press of an
MQTT button, against a running server (the shapes of ``device_sim.gateways``)."""

from __future__ import annotations

import time
from typing import Annotated, cast
from urllib.parse import urlsplit

import typer

from device_sim.gateways import BUTTON_KINDS, ButtonKind, MqttButton, OsmandDevice, OsmandLoad
from device_sim.stack import LocalStack


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


def osmand_load(
    stack: LocalStack, n: int, sos_rate: float, position_every_s: float, seed: int
) -> OsmandLoad:
    """``n`` Traccar Client phones registered in the spawned system's database."""
    from alert_server.db import make_engine, write_scope
    from alert_server.devices.service import NewDevice, add_device
    from alert_server.gateways import osmand as gateway
    from alert_server.timeutil import utcnow

    engine = make_engine(stack.db_url)
    phones = []
    try:
        with write_scope(engine) as session:
            for i in range(n):
                device_id = f"osmand-{i:05d}"
                new = NewDevice(
                    device_id, f"Téléphone {i}", "nurse", "+33612345678", "2468", "1357"
                )
                add_device(session, new=new, now=utcnow())
                ident = gateway.register(session, device_id=device_id, now=utcnow())
                phones.append(
                    OsmandDevice(stack.http_url + gateway.PATH, ident, 45.76 + i * 1e-3, 4.83)
                )
    finally:
        engine.dispose()
    return OsmandLoad(phones, sos_rate=sos_rate, position_every_s=position_every_s, seed=seed)
