"""``vigie sim osmand`` and ``vigie sim button``: one request of Traccar Client, one press of an
MQTT button, against a running server (the shapes of ``device_sim.gateways``)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, cast
from urllib.parse import urlsplit

import typer

from device_sim.gateways import (
    BUTTON_KINDS,
    ButtonKind,
    ButtonLoad,
    MqttButton,
    OsmandDevice,
    OsmandLoad,
    buttons_file,
)
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


@dataclass
class GatewayPlan:
    """Traccar Client phones and MQTT buttons registered in a spawned system, before its
    server starts (the buttons file must exist by then: the server reads it at start)."""

    osmand: dict[str, str] = field(default_factory=dict)  # device_id -> OsmAnd identifier
    # (device_id, kind, name in its topic, MQTT password of its device)
    buttons: list[tuple[str, ButtonKind, str, str]] = field(default_factory=list)


@dataclass
class GatewayMix:
    """What runs beside the MQTT fleet of a load run: phones and buttons."""

    phones: OsmandLoad | None
    buttons: ButtonLoad | None

    def start(self) -> None:
        if self.phones is not None:
            self.phones.start()
        if self.buttons is not None:
            self.buttons.start()

    def stop(self) -> None:
        if self.phones is not None:
            self.phones.stop()
        if self.buttons is not None:
            self.buttons.stop()

    def summary(self) -> str:
        parts = [x.summary() for x in (self.phones, self.buttons) if x is not None]
        return "\n".join(parts)


def button_site(i: int) -> tuple[float, float]:
    """Pharmacies along the Vieux-Port of Marseille, 100 m apart."""
    return 43.2950 + (i % 50) * 1e-3, 5.3600 + (i // 50) * 1e-3


def prepare_gateways(
    stack: LocalStack, *, osmand: int, buttons: int, prefix: str = "", seed: int = 1
) -> GatewayPlan:
    """Register ``osmand`` Traccar Client phones and ``buttons`` MQTT buttons (Shelly,
    zigbee2mqtt, Tasmota in turn, each on a device with its pharmacy's site) through ONE
    ``vigie devices import`` (the simulator speaks to the server, never imports it), and write
    the buttons file into the stack's environment. Call it after the broker started and before
    the server does."""
    if buttons and stack.mosquitto is None:
        raise ProvisioningError(
            "boutons MQTT : seulement avec Mosquitto (le broker intégré n'a pas d'ACL pour "
            "les sujets des fabricants)"
        )
    if buttons and stack.server is not None:
        raise ProvisioningError(
            "boutons MQTT : à enregistrer avant le démarrage du serveur (il lit "
            "VIGIE_BUTTONS_FILE au démarrage)"
        )
    rows: list[dict[str, str]] = []
    for i in range(osmand):
        rows.append(
            {"device_id": f"{prefix}osmand-{i:05d}", "worker": f"Téléphone {i}",
             "role": "nurse", "gateway": "osmand"}
        )  # fmt: skip
    kinds: list[tuple[str, ButtonKind, str]] = []
    for i in range(buttons):
        kind = BUTTON_KINDS[i % len(BUTTON_KINDS)]
        device_id = f"{prefix}bouton-{i:05d}"
        lat, lon = button_site(i)
        rows.append(
            {"device_id": device_id, "worker": f"Officine {i}", "role": "pharmacist",
             "site_lat": f"{lat:.6f}", "site_lon": f"{lon:.6f}",
             "site_label": f"Pharmacie {i} (simulée), bouton {kind}", "gateway": "mqtt"}
        )  # fmt: skip
        kinds.append((device_id, kind, f"{prefix}B{i:05d}"))
    plan = GatewayPlan()
    if not rows:
        return plan
    creds = register_devices(stack.env(), rows)
    plan.osmand = {c["device_id"]: c["osmand_id"] for c in creds if "osmand_id" in c}
    if kinds:
        passwords = {c["device_id"]: c["mqtt_password"] for c in creds if "mqtt_password" in c}
        plan.buttons = [(d, kind, name, passwords[d]) for d, kind, name in kinds]
        path = stack.workdir / "boutons.yaml"
        path.write_text(
            buttons_file([(d, kind, name) for d, kind, name in kinds]), encoding="utf-8"
        )
        stack.extra_env["VIGIE_BUTTONS_FILE"] = str(path)
    return plan


def start_gateways(
    plan: GatewayPlan,
    stack: LocalStack,
    *,
    sos_rate: float,
    position_every_s: float,
    press_rate: float,
    seed: int,
    ready_timeout_s: float = 120.0,
) -> GatewayMix:
    """Phones pointed at the running server; buttons connected, and waited for until the
    server shows each of them online (their availability message went through the broker's
    ACL and the server's bridge): only then can a press be counted as lost or stored."""
    phones = None
    if plan.osmand:
        phones = OsmandLoad(
            [
                OsmandDevice(stack.http_url + OSMAND_PATH, ident, 45.76 + i * 1e-3, 4.83)
                for i, ident in enumerate(plan.osmand.values())
            ],
            sos_rate=sos_rate,
            position_every_s=position_every_s,
            seed=seed,
        )
    buttons = None
    if plan.buttons:
        buttons = ButtonLoad(
            [
                MqttButton(kind, name, device_id, password, "127.0.0.1", stack.device_port)
                for device_id, kind, name, password in plan.buttons
            ],
            press_rate=press_rate,
            seed=seed,
        )
        if buttons.connect() < len(plan.buttons):
            buttons.stop()
            raise ProvisioningError(
                f"boutons MQTT : {buttons.connected}/{len(plan.buttons)} connectés au broker"
            )
        waiting = {d for d, _, _, _ in plan.buttons}
        deadline = time.monotonic() + ready_timeout_s
        while waiting and time.monotonic() < deadline:
            waiting -= online_devices(stack.env())
            if waiting:
                time.sleep(1.0)
        if waiting:
            buttons.stop()
            raise ProvisioningError(
                f"boutons MQTT : {len(waiting)} jamais vus en ligne par le serveur après "
                f"{ready_timeout_s:.0f} s (ex. {sorted(waiting)[0]})"
            )
    return GatewayMix(phones, buttons)


def online_devices(env: Mapping[str, str]) -> set[str]:
    out = _vigie(env, ["devices", "list", "--json"])
    if out.returncode != 0:
        raise ProvisioningError(f"vigie devices list : {out.stderr.strip()}")
    return {d["device_id"] for d in json.loads(out.stdout) if d["state"] == "online"}


def register_devices(env: Mapping[str, str], rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Register many devices with one ``vigie devices import - --json`` (all or nothing);
    returns each device's credentials (``devices add --json`` shapes)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**_CSV_DEFAULTS, **row})
    for _ in range(5):
        out = _vigie(env, ["devices", "import", "-", "--json"], stdin=buf.getvalue())
        # SQLite: an import racing a running server's commits can fail at once with
        # "database is locked"; the command writes all or nothing, so trying again is safe.
        if out.returncode == 0 or "database is locked" not in out.stderr:
            break
        time.sleep(0.2)
    if out.returncode != 0:
        raise ProvisioningError(
            f"vigie devices import : {out.stderr.strip() or out.stdout.strip()}"
        )
    return [dict(c) for c in json.loads(out.stdout)]


_CSV_COLUMNS = (
    "device_id", "worker", "role", "phone", "pin", "duress_pin",
    "site_lat", "site_lon", "site_label", "gateway",
)  # fmt: skip
_CSV_DEFAULTS = {"phone": "+33612345678", "pin": "2468", "duress_pin": "1357"}


def _vigie(
    env: Mapping[str, str], args: list[str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alert_server.cli", *args],
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        cwd=_REPO,
        timeout=600,  # a deadline: hashing thousands of PINs takes minutes on a busy machine
        check=False,
    )
