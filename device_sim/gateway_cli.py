"""``vigie sim osmand`` and ``vigie sim button``: one request of Traccar Client, one press of an
MQTT button, against a running server (the shapes of ``device_sim.gateways``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, cast
from urllib.parse import urlsplit

import typer

from device_sim.gateways import BUTTON_KINDS, ButtonKind, MqttButton, OsmandDevice, OsmandLoad
from device_sim.provision import ProvisioningError
from device_sim.stack import LocalStack

_REPO = Path(__file__).resolve().parent.parent
# The gateway's path on the server (alert_server/gateways/osmand.py, operations.md 1.1).
OSMAND_PATH = "/gateway/osmand"


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
    """``n`` Traccar Client phones registered in the spawned system through ``vigie devices add
    --gateway osmand --json`` (the simulator speaks to the server, never imports it)."""
    phones = []
    for i in range(n):
        device_id = f"osmand-{i:05d}"
        ident = register_osmand(stack.env(), device_id, f"Téléphone {i}")
        phones.append(OsmandDevice(stack.http_url + OSMAND_PATH, ident, 45.76 + i * 1e-3, 4.83))
    return OsmandLoad(phones, sos_rate=sos_rate, position_every_s=position_every_s, seed=seed)


def register_osmand(env: Mapping[str, str], device_id: str, worker: str) -> str:
    """Register one OsmAnd device with ``vigie devices add``; return its identifier."""
    args = [
        sys.executable, "-m", "alert_server.cli", "devices", "add", device_id,
        "--worker", worker, "--role", "nurse", "--phone", "+33612345678",
        "--pin", "2468", "--duress-pin", "1357", "--gateway", "osmand", "--json",
    ]  # fmt: skip
    for _ in range(5):
        out = subprocess.run(
            args, env=dict(env), capture_output=True, text=True, cwd=_REPO, timeout=120, check=False
        )
        # SQLite: a registration racing the server's own commits can fail at once with
        # "database is locked"; the command writes all or nothing, so trying again is safe.
        if out.returncode == 0 or "database is locked" not in out.stderr:
            break
        time.sleep(0.2)
    if out.returncode != 0:
        raise ProvisioningError(
            f"vigie devices add {device_id}: {out.stderr.strip() or out.stdout.strip()}"
        )
    return str(json.loads(out.stdout)["osmand_id"])
