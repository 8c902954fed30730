"""The ``vigie`` command (operations.md). Bad input: one line naming what is wrong, exit 2."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from alert_server.lazy_cli import LazyGroup

if TYPE_CHECKING:
    from alert_server.settings import Settings

# Heavy modules (SQLAlchemy, Alembic, shapely, paho…) are imported inside the commands that
# need them, so `vigie --help` and light commands start in a fraction of a second.


class VigieGroup(LazyGroup):
    lazy = {  # noqa: RUF012  (class-level table read by LazyGroup)
        "users": ("alert_server.users.cli:app", "Comptes de la console et de l'API."),
        "referents": (
            "alert_server.referents.cli:app",
            "Répertoire des référents police/gendarmerie.",
        ),
        "geo": ("alert_server.geo.cli:app", "Limites administratives et zones police/gendarmerie."),
        "sim": ("device_sim.cli:app", "Simulateur de boîtiers (scénarios, charge)."),
        "purge": ("alert_server.followup.cli:app", "Purge des données personnelles (CNIL)."),
        "broker": (
            "alert_server.broker_cli:app",
            "Broker MQTT : compte du serveur et fichiers.",
        ),
    }


app = typer.Typer(
    cls=VigieGroup,
    # Plain Click help: rendering it with rich costs more than the rest of `vigie --help`.
    rich_markup_mode=None,
    help="Vigie : alerte travailleur isolé pour les professionnels de santé.",
    no_args_is_help=True,
    add_completion=False,
)
devices_app = typer.Typer(
    help="Boîtiers d'alerte et travailleurs.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(devices_app, name="devices")


ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Fichier TOML de réglages (sinon VIGIE_*).")
]


def fail(message: str) -> NoReturn:
    typer.echo(f"vigie: erreur: {message}", err=True)
    raise typer.Exit(2)


def _settings(config: Path | None) -> Settings:
    from alert_server.settings import describe_setting_errors, load_settings

    try:
        return load_settings(config)
    except Exception as exc:
        fail(f"réglages: {describe_setting_errors(exc)}")


@app.command()
def server(
    host: Annotated[str, typer.Option(help="Adresse d'écoute HTTP.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port HTTP.", min=0, max=65535)] = 8000,
    config: ConfigOpt = None,
) -> None:
    """API HTTP + console, ingestion MQTT et moteur d'escalade, dans un seul processus."""
    # Start-up makes a few hundred thousand objects that live as long as the process (modules,
    # the map index), and Python's cycle collector scanned them again and again while they
    # were made: a seventh of the imports, half of the map index's load. It is off until the
    # server has made them (``_set_apart_start_up_objects``).
    gc.disable()
    # The configuration is checked before the application is imported: a refusal is quick.
    from alert_server.referents.parser import parse_directory
    from alert_server.referents.schemas import DirectoryError
    from alert_server.safety import UnsafeConfiguration
    from alert_server.safety import check as check_safety

    settings = _settings(config)
    from alert_server.serving import START_FAILED, bind_http, refusal, uvicorn_options

    try:
        http_sockets = bind_http(host, port)
    except OSError as exc:
        message, status = refusal(host, port, exc)
        typer.echo(f"vigie: erreur: {message}", err=True)
        raise typer.Exit(status) from None
    from alert_server.logging_setup import configure

    log_setup = configure(settings.log_format)
    log_setup.start_flusher()
    try:
        # Missing Twilio settings, a placeholder secret key…: refuse, never fall back silently.
        check_safety(settings)
    except UnsafeConfiguration as exc:
        fail(str(exc))
    if settings.referents_file is not None:
        # Refuse to start on a broken directory, with every error named, rather than start a
        # server that cannot call anyone.
        try:
            parse_directory(
                settings.referents_file.read_text(encoding="utf-8"), str(settings.referents_file)
            )
        except OSError as exc:
            fail(f"VIGIE_REFERENTS_FILE: {exc}")
        except DirectoryError as exc:
            for line in exc.errors:
                typer.echo(f"vigie: erreur: {line}", err=True)
            raise typer.Exit(2) from exc
    from alert_server.gateways import cli as gateway_cli

    if problems := gateway_cli.buttons_errors(settings):
        for line in problems:
            typer.echo(f"vigie: erreur: {line}", err=True)
        raise typer.Exit(2)
    import uvicorn

    from alert_server.app import create_app

    # Every module is imported: its objects are set apart from the collector's scans now, at
    # no cost (a few hundred objects of garbage among 211,000, about 0.1 MB, are kept for
    # good), so that the collection before the first message scans only what came after.
    gc.freeze()
    try:
        # Live streams end by themselves on stop (dashboard.stream); the grace period is the
        # backstop for any response that would not, so that a stop never hangs.
        http = uvicorn.Server(
            uvicorn.Config(
                create_app(settings, before_intake=_set_apart_start_up_objects),
                host=host,
                port=port,
                log_level="info",
                timeout_graceful_shutdown=3,
                **uvicorn_options(settings),
            )
        )
        for sock in http_sockets:
            address, bound_port = sock.getsockname()[:2]
            shown = f"[{address}]" if sock.family == socket.AF_INET6 else address
            logging.getLogger("alert_server.serving").info(
                "listening on http://%s:%d (answering once started)", shown, bound_port
            )
        # Ctrl-C: stopped cleanly (uvicorn raises it again once stopped), as uvicorn.run ends.
        with contextlib.suppress(KeyboardInterrupt):
            http.run(sockets=http_sockets)
        if not http.started:
            raise typer.Exit(START_FAILED)  # its error is logged; uvicorn's status
    finally:
        log_setup.stop()


def _set_apart_start_up_objects() -> None:
    """Once the server's long-lived objects are made (migrations run, map index loaded) and
    before it takes its first message: collect what start-up made since the imports were set
    apart, set every object alive apart from the cycle collector's scans (``gc.freeze``), and
    turn the collector back on. A full collection then scans what was made since, not the
    whole start-up again. This collection scans 55,000–105,000 objects (38–46 ms on a slow
    2-vCPU EPYC, with or without the map index); one over everything, 280,000, took 200–320 ms
    there, and ran 2 s after the start, pausing every thread: the first alerts after a restart
    waited for it (benchmarks/RESULTS.md, 2026-12-04 19:13 UTC)."""
    gc.collect()
    gc.freeze()
    gc.enable()


@devices_app.command("enrol")
def devices_enrol(
    device_id: Annotated[str, typer.Argument(metavar="DEVICE_ID")],
    as_json: Annotated[bool, typer.Option("--json", help="Sortie JSON.")] = False,
    no_qr: Annotated[bool, typer.Option("--no-qr", help="Sans le QR code.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Lien d'inscription à usage unique (24 h) qui fait d'un téléphone ce boîtier."""
    from alert_server.phoneapp.cli import enrol_command

    enrol_command(device_id=device_id, as_json=as_json, no_qr=no_qr, config=config)


@devices_app.command("add")
def devices_add(
    device_id: Annotated[str, typer.Argument(metavar="DEVICE_ID")],
    worker: Annotated[str, typer.Option("--worker", help="Nom du travailleur.")],
    role: Annotated[str, typer.Option("--role", help="nurse | pharmacist | other")],
    phone: Annotated[str, typer.Option("--phone", help="Numéro de rappel, E.164.")],
    pin: Annotated[
        str | None,
        typer.Option(
            "--pin", help="Code d'annulation (sinon demandé, ou lu sur l'entrée standard)."
        ),
    ] = None,
    duress_pin: Annotated[
        str | None,
        typer.Option(
            "--duress-pin",
            help="Code de contrainte (sinon demandé, ou lu sur l'entrée standard, ligne suivante).",
        ),
    ] = None,
    site_lat: Annotated[float | None, typer.Option("--site-lat")] = None,
    site_lon: Annotated[float | None, typer.Option("--site-lon")] = None,
    site_label: Annotated[str | None, typer.Option("--site-label")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Sortie JSON.")] = False,
    gateway: Annotated[
        str | None, typer.Option("--gateway", help="osmand : Traccar Client, traceurs (HTTP).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Enregistre un boîtier et son travailleur ; affiche une fois son mot de passe MQTT."""
    from alert_server.audit import record_cli
    from alert_server.db import make_engine, migrate, write_scope
    from alert_server.devices import service
    from alert_server.gateways import cli as gateway_cli
    from alert_server.secret_input import SecretInputError, read_secret
    from vigie.brokers import files as broker_files
    from vigie.timeutil import utcnow

    try:
        # PINs are secrets: asked (or read from stdin), never required as arguments (ps).
        if pin is None:
            pin = read_secret("Code d'annulation (--pin)")
        if duress_pin is None:
            duress_pin = read_secret("Code de contrainte (--duress-pin)")
    except SecretInputError as exc:
        fail(str(exc))
    settings = _settings(config)
    new = service.NewDevice(
        device_id, worker, role, phone, pin, duress_pin, site_lat, site_lon, site_label
    )
    try:
        new = new.validate()
    except service.DeviceInputError as exc:
        fail(str(exc))
    if gateway is not None:
        if (problem := gateway_cli.gateway_error(gateway)) is not None:
            fail(problem)
        try:
            gateway_cli.add_osmand_device(settings, new, as_json=as_json)
        except service.DeviceInputError as exc:
            fail(str(exc))
        return
    engine = make_engine(settings.database_url)
    migrate(engine)
    password = broker_files.generate_password()
    passwd, acl = settings.broker_passwd_file, settings.broker_acl_file
    wrote_passwd = False
    try:
        with write_scope(engine) as session:
            service.add_device(session, new=new, now=utcnow())
            record_cli(session, "device.add", target=new.device_id, command="vigie devices add")
            # Broker files are written inside the transaction: if they cannot be written the
            # device is not registered, and if the commit fails they are rolled back below.
            if passwd is not None:
                broker_files.set_password(passwd, new.device_id, password)
                wrote_passwd = True
            if acl is not None:
                revoked = [d for d in broker_files.read_revoked(acl) if d != new.device_id]
                broker_files.write_acl(acl, revoked)
            if settings.rabbitmq_api_url:
                # RabbitMQ (VIGIE_INGEST=amqp): the account and its topic permissions.
                _rabbit_accounts(settings.rabbitmq_api_url, "add", new.device_id, password)
    except service.DeviceInputError as exc:
        fail(str(exc))
    except OSError as exc:
        if wrote_passwd and passwd is not None:
            broker_files.remove_user(passwd, new.device_id)
        fail(f"fichiers du broker: {exc}")
    except Exception:
        if wrote_passwd and passwd is not None:
            broker_files.remove_user(passwd, new.device_id)
        raise
    finally:
        engine.dispose()
    reloaded = broker_files.reload_broker(settings.broker_pid_file)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "device_id": new.device_id,
                    "mqtt_username": new.device_id,
                    "mqtt_password": password,
                }
            )
        )
        return
    typer.echo(f"Boîtier {new.device_id} enregistré pour {new.worker} ({new.role}).")
    typer.echo(f"Identifiant MQTT : {new.device_id}")
    typer.echo(f"Mot de passe MQTT (affiché une seule fois) : {password}")
    if passwd is None:
        typer.echo("Note : VIGIE_BROKER_PASSWD_FILE n'est pas réglé ; ajoutez ce compte au broker.")
    elif not reloaded:
        typer.echo(
            "Note : rechargez le broker (systemctl reload mosquitto) pour activer le compte."
        )


@devices_app.command("import")
def devices_import(
    file: Annotated[
        str,
        typer.Argument(
            metavar="FICHIER",
            help="CSV : device_id,worker,role,phone,pin,duress_pin[,site_lat,site_lon,"
            "site_label,gateway] ; « - » pour l'entrée standard.",
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Sortie JSON (une liste).")] = False,
    config: ConfigOpt = None,
) -> None:
    """Enregistre d'un coup les boîtiers d'un fichier CSV : tous ou aucun.

    Affiche une fois, en CSV (ou JSON), le mot de passe MQTT ou l'identifiant OsmAnd de
    chacun. Chaque erreur nomme la ligne et la colonne ; rien n'est enregistré s'il y en a une.
    """
    import sys

    from alert_server.devices import bulk
    from alert_server.devices import cli as devices_cli

    source = "<entrée standard>" if file == "-" else file
    try:
        if file == "-":
            text = sys.stdin.read()
        else:
            with open(file, encoding="utf-8-sig", newline="") as fh:
                text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{source}: illisible ({exc})")
    settings = _settings(config)
    try:
        rows = bulk.parse_devices(text, source)
        result = devices_cli.import_devices(settings, rows, source)
    except bulk.BulkImportError as exc:
        for line in exc.errors:
            typer.echo(f"vigie: erreur: {line}", err=True)
        typer.echo("vigie: rien n'a été enregistré.", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        fail(f"fichiers du broker: {exc} (rien n'a été enregistré)")
    except Exception as exc:
        from alert_server.devices.rabbitmq_accounts import BrokerAccountError

        if isinstance(exc, BrokerAccountError):
            fail(f"broker RabbitMQ : {exc} (rien n'a été enregistré)")
        raise
    devices = result.devices
    typer.echo(devices_cli.as_json(devices) if as_json else devices_cli.as_csv(devices), nl=as_json)
    mqtt = sum(1 for d in devices if d.mqtt_password)
    typer.echo(
        f"{len(devices)} boîtiers enregistrés ({mqtt} MQTT, {len(devices) - mqtt} OsmAnd) ; "
        "mots de passe et identifiants affichés une seule fois.",
        err=True,
    )
    if mqtt and not result.passwd_file_set:
        typer.echo(
            "Note : VIGIE_BROKER_PASSWD_FILE n'est pas réglé ; ajoutez ces comptes au broker.",
            err=True,
        )
    elif mqtt and not result.broker_reloaded:
        typer.echo(
            "Note : rechargez le broker (systemctl reload mosquitto) pour activer les comptes.",
            err=True,
        )


def _rabbit_accounts(api_url: str, action: str, device_id: str, password: str = "") -> int:
    """A device's account on RabbitMQ (``devices.rabbitmq_accounts``); a French error on
    failure (inside ``devices add``'s transaction, so nothing is half-registered)."""
    from alert_server.devices.rabbitmq_accounts import BrokerAccountError, RabbitAccounts

    accounts = RabbitAccounts(api_url)
    try:
        if action == "add":
            accounts.add_device(device_id, password)
            return 1
        return accounts.remove_device(device_id)
    except BrokerAccountError as exc:
        fail(f"broker RabbitMQ : {exc}")
    finally:
        accounts.close()


@devices_app.command("list")
def devices_list(
    as_json: Annotated[bool, typer.Option("--json", help="Sortie JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Liste les boîtiers, leur travailleur et leur présence."""
    # Read-only and frequent: neither SQLModel, the models nor Alembic unless the database
    # needs migrating (alert_server.devices.listing).
    from alert_server.devices.listing import list_devices
    from alert_server.migration_heads import is_current
    from vigie.persistence import make_engine

    settings = _settings(config)
    engine = make_engine(settings.database_url)
    if not is_current(engine):
        from alert_server.db import migrate

        migrate(engine)
    with engine.connect() as conn:
        out = [
            {
                "device_id": d.device_id,
                "worker": d.worker,
                "role": d.role,
                "phone": d.phone,
                "state": "revoked" if d.revoked_at else ("online" if d.online else "offline"),
                "last_seen_at": d.last_seen_at.isoformat() if d.last_seen_at else None,
                "batt": d.batt,
                "site_label": d.site_label,
            }
            for d in list_devices(conn)
        ]
    engine.dispose()
    if as_json:
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    states = {"revoked": "révoqué", "online": "en ligne", "offline": "hors ligne"}
    for r in out:
        batt = f"{r['batt']} %" if r["batt"] is not None else "-"
        typer.echo(
            f"{r['device_id']:<24} {r['worker']:<24} {r['role']:<10} "
            f"{states[str(r['state'])]:<10} batterie {batt:<6} vu {r['last_seen_at'] or 'jamais'}"
        )
    if not out:
        typer.echo("Aucun boîtier enregistré.")


@devices_app.command("revoke")
def devices_revoke(
    device_id: Annotated[str, typer.Argument(metavar="DEVICE_ID")],
    config: ConfigOpt = None,
) -> None:
    """Révoque un boîtier : il perd aussitôt l'accès au broker."""
    from alert_server.audit import record_cli
    from alert_server.db import make_engine, migrate, write_scope
    from alert_server.devices import service
    from alert_server.devices.revocation import revoke_on_broker
    from vigie.timeutil import utcnow

    settings = _settings(config)
    engine = make_engine(settings.database_url)
    migrate(engine)
    try:
        with write_scope(engine) as session:
            service.revoke_device(session, device_id=device_id, now=utcnow())
            record_cli(session, "device.revoke", target=device_id, command="vigie devices revoke")
    except service.DeviceInputError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    # The database says "revoked" from here on; the broker must be told too, or the device
    # keeps its access: say so (exit 1) with what to do, never print a plain "révoqué".
    again = f"puis relancez « vigie devices revoke {device_id} » pour fermer sa connexion"
    if settings.rabbitmq_api_url:
        from alert_server.devices.rabbitmq_accounts import BrokerAccountError, RabbitAccounts

        accounts = RabbitAccounts(settings.rabbitmq_api_url)
        try:
            # Deleting the user closes its connections on every node.
            closed = accounts.remove_device(device_id)
        except BrokerAccountError as exc:
            _broker_not_told(device_id, f"RabbitMQ : {exc}. Corrigez, {again}")
        finally:
            accounts.close()
        if settings.broker_passwd_file is None or settings.broker_acl_file is None:
            typer.echo(
                f"Boîtier {device_id} révoqué ; RabbitMQ a supprimé son compte"
                + (" et sa connexion en cours a été fermée." if closed else ".")
            )
            return
    if settings.broker_passwd_file is None or settings.broker_acl_file is None:
        _broker_not_told(
            device_id,
            "VIGIE_BROKER_PASSWD_FILE et VIGIE_BROKER_ACL_FILE ne sont pas réglés. Retirez "
            f"son compte du broker (mosquitto_passwd -D FICHIER {device_id}) et rechargez-le "
            "(systemctl reload mosquitto)",
        )
    try:
        outcome = revoke_on_broker(
            device_id=device_id,
            passwd_file=settings.broker_passwd_file,
            acl_file=settings.broker_acl_file,
            pid_file=settings.broker_pid_file,
            broker_url=settings.mqtt_url,
        )
    except OSError as exc:
        _broker_not_told(
            device_id,
            f"fichiers du broker illisibles ou non modifiables ({exc}). Corrigez, {again}",
        )
    if not outcome.reloaded:
        _broker_not_told(
            device_id,
            "le broker n'a pas pu être rechargé (VIGIE_BROKER_PID_FILE absent ou processus "
            "introuvable) : son ancien mot de passe fonctionne encore. Rechargez le broker "
            f"(systemctl reload mosquitto), {again}",
        )
    typer.echo(
        f"Boîtier {device_id} révoqué ; le broker refuse désormais son mot de passe"
        + (
            " et sa connexion en cours a été fermée."
            if outcome.kicked
            else " (aucune connexion en cours n'a pu être fermée : ses messages sont refusés)."
        )
    )


def _broker_not_told(device_id: str, what: str) -> NoReturn:
    typer.echo(
        f"vigie: erreur: boîtier {device_id} révoqué dans la base, mais le broker n'a pas été "
        f"prévenu : {what}.",
        err=True,
    )
    raise typer.Exit(1)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port HTTP de la console (8000, ou libre).")] = 8000,
    workdir: Annotated[
        Path | None, typer.Option(help="Dossier de travail (sinon un dossier temporaire).")
    ] = None,
    press_every: Annotated[
        float, typer.Option(help="Secondes entre deux alertes simulées (en moyenne).")
    ] = 45.0,
    no_mosquitto: Annotated[
        bool, typer.Option("--no-mosquitto", help="Broker Python intégré même si mosquitto existe.")
    ] = False,
    keep: Annotated[
        bool,
        typer.Option("--keep", help="Garder le dossier temporaire (base, journaux) après l'arrêt."),
    ] = False,
) -> None:
    """Tout Vigie sur cette machine : broker, serveur (SQLite, téléphonie simulée), boîtiers
    simulés, console. Ctrl-C arrête tout proprement."""
    import signal as _signal

    from alert_server.demo import (
        ADMIN_USER,
        PHONE_DEVICE,
        PIN,
        Demo,
        finish_workdir,
        free_demo_port,
    )
    from alert_server.phoneapp.cli import terminal_qr

    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        if any(workdir.iterdir()):
            fail(f"--workdir: {workdir} n'est pas vide (la démonstration part de zéro)")
    d = Demo(port=free_demo_port(port), press_every_s=press_every)
    if workdir is not None:
        d.workdir = workdir
    if no_mosquitto:
        d.use_mosquitto = False
    owned = workdir is None  # a temporary folder of ours, removed at the end unless --keep
    typer.echo("Vigie — démonstration. Démarrage…")
    typer.echo(
        f"Fichiers de la démonstration (base, journaux, broker) : {d.workdir}"
        + (" — effacés à l'arrêt (--keep pour les garder)." if owned and not keep else ".")
    )
    try:
        d.start()
    except Exception as exc:
        d.stop()
        typer.echo(finish_workdir(d.workdir, keep=keep, owned=owned))
        fail(str(exc).splitlines()[0])

    def _interrupt(signum: int, frame: object) -> None:
        d._stop.set()

    _signal.signal(_signal.SIGINT, _interrupt)
    _signal.signal(_signal.SIGTERM, _interrupt)
    typer.echo("")
    typer.echo(f"  Console : {d.url}/dashboard/")
    typer.echo(f"  Identifiant : {ADMIN_USER}    Mot de passe : {d.password}")
    typer.echo("  Téléphonie simulée : les SMS et appels s'affichent dans la chronologie ;")
    typer.echo(f"  un référent fictif prend chaque alerte en charge après {d.auto_ack_s:.0f} s.")
    typer.echo(f"  Dossier de travail : {d.workdir}")
    typer.echo("")
    typer.echo(f"  Le téléphone comme bouton d'alerte (boîtier {PHONE_DEVICE}, code {PIN}) :")
    typer.echo(f"  {d.phone_enrol_url}")
    typer.echo(terminal_qr(d.phone_enrol_url))
    typer.echo("  Ctrl-C pour arrêter.")
    typer.echo("")
    d.wait()
    typer.echo("Arrêt…")
    d.stop()
    typer.echo(finish_workdir(d.workdir, keep=keep, owned=owned))
    typer.echo("Démonstration arrêtée.")


@devices_app.command("victim-support")
def devices_victim_support(
    device_id: Annotated[str, typer.Argument(metavar="DEVICE_ID")],
    enable: Annotated[
        bool,
        typer.Option(
            "--on/--off",
            help="Envoyer (--on, par défaut) ou non (--off) les contacts d'aide aux victimes.",
        ),
    ] = True,
    config: ConfigOpt = None,
) -> None:
    """Le travailleur de ce boîtier reçoit-il, après un incident réel, le SMS d'aide aux
    victimes (116 006, association locale, dépôt de plainte) ? Il peut le refuser."""
    from alert_server.db import make_engine, migrate, write_scope
    from alert_server.devices import service
    from alert_server.followup.victim_support import set_opt_out
    from vigie.timeutil import utcnow

    settings = _settings(config)
    engine = make_engine(settings.database_url)
    migrate(engine)
    try:
        with write_scope(engine) as session:
            found = service.device_and_worker(session, device_id)
            if found is None:
                fail(f"DEVICE_ID: {device_id!r} inconnu")
            set_opt_out(session, worker_id=found[1].id or 0, opt_out=not enable, now=utcnow())
    finally:
        engine.dispose()
    state = "recevra" if enable else "ne recevra pas"
    typer.echo(f"Le travailleur du boîtier {device_id} {state} le SMS d'aide aux victimes.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
