"""``vigie broker init``: the files the shipped Mosquitto configuration expects, written once.

``broker_config/mosquitto.conf`` reads everything from one folder (``/etc/mosquitto/vigie``):
the devices' password file and ACL (then maintained by ``vigie devices add/revoke``), the
servers' password file with the server account and its ACL, and ``tls/`` for the devices'
TLS listener. Before this command the server account had to be made by hand with
``mosquitto_passwd``; now its password is generated, written hashed, and printed once with the
settings the server needs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, NoReturn
from urllib.parse import quote

import typer

from vigie.brokers import files as broker_files
from vigie.topics import SERVER_USERNAME

app = typer.Typer(help="Broker MQTT (Mosquitto) : comptes et fichiers.", no_args_is_help=True)

DEFAULT_DIR = Path("/etc/mosquitto/vigie")
DEFAULT_PID = Path("/run/mosquitto/mosquitto.pid")


def _fail(message: str) -> NoReturn:
    typer.echo(f"vigie: erreur: {message}", err=True)
    raise typer.Exit(2)


@app.command("init")
def broker_init(
    directory: Annotated[
        Path,
        typer.Option("--dir", help="Dossier des fichiers du broker (celui de mosquitto.conf)."),
    ] = DEFAULT_DIR,
    server_host: Annotated[
        str, typer.Option("--server-host", help="Adresse du listener des serveurs.")
    ] = "127.0.0.1",
    server_port: Annotated[int, typer.Option("--server-port")] = 1883,
    rotate: Annotated[
        bool,
        typer.Option(
            "--rotate", help="Remplace le mot de passe du compte serveur s'il existe déjà."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Sortie JSON.")] = False,
) -> None:
    """Crée le compte MQTT du serveur (mot de passe affiché une seule fois), son ACL, et les
    fichiers des boîtiers s'ils manquent, pour broker_config/mosquitto.conf."""
    servers_passwd = directory / "servers.passwd"
    try:
        existing = broker_files.read_passwd(servers_passwd) if servers_passwd.exists() else {}
    except (OSError, ValueError) as exc:
        _fail(f"{servers_passwd}: illisible ({exc})")
    if SERVER_USERNAME in existing and not rotate:
        _fail(
            f"{servers_passwd}: le compte {SERVER_USERNAME} existe déjà ; --rotate pour changer "
            "son mot de passe (puis mettez à jour VIGIE_MQTT_URL de chaque serveur)"
        )
    password = broker_files.generate_password()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tls").mkdir(exist_ok=True)
        broker_files.write_passwd(
            servers_passwd, {**existing, SERVER_USERNAME: broker_files.mosquitto_hash(password)}
        )
        broker_files.write_servers_acl(directory / "servers.acl")
        # The devices' files: created empty if absent, never overwritten (devices live there).
        if not (directory / "passwd").exists():
            broker_files.write_passwd(directory / "passwd", {})
        if not (directory / "acl").exists():
            broker_files.write_acl(directory / "acl", [])
        for name in ("passwd", "servers.passwd"):
            os.chmod(directory / name, 0o640)  # hashes: the broker's group only
    except OSError as exc:
        _fail(f"{directory}: {exc}")
    url = f"mqtt://{SERVER_USERNAME}:{quote(password, safe='')}@{server_host}:{server_port}"
    settings = {
        "VIGIE_MQTT_URL": url,
        "VIGIE_BROKER_PASSWD_FILE": str(directory / "passwd"),
        "VIGIE_BROKER_ACL_FILE": str(directory / "acl"),
        "VIGIE_BROKER_PID_FILE": str(DEFAULT_PID),
    }
    if as_json:
        typer.echo(json.dumps({"username": SERVER_USERNAME, "password": password, **settings}))
        return
    typer.echo(f"Compte MQTT du serveur {SERVER_USERNAME} écrit dans {servers_passwd}.")
    typer.echo(f"ACL des serveurs : {directory / 'servers.acl'} ; boîtiers : passwd et acl.")
    typer.echo("Réglages du serveur (mot de passe affiché une seule fois) :")
    for key, value in settings.items():
        typer.echo(f"  {key}={value}")
    typer.echo(
        f"Certificat TLS du listener des boîtiers : {directory / 'tls'}/broker.crt, broker.key "
        "et ca.crt (voir broker_config/README.md), puis : systemctl reload mosquitto."
    )
