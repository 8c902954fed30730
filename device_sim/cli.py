"""``vigie sim``: simulated devices, scenarios and load runs (French help, English code)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from device_sim import gateway_cli
from device_sim.device import BrokerTarget, DeviceConfig, SimDevice
from device_sim.hooks import HttpApi, http_first_notifications
from device_sim.load import LoadConfig, LoadRun, Progress, load_passwords, write_json
from device_sim.provision import (
    BrokerFileProvisioner,
    Provisioner,
    ProvisioningError,
    StaticProvisioner,
    VigieCliProvisioner,
    wait_credentials_active,
    write_broker_passwords,
)
from device_sim.reactor import Reactor
from device_sim.scenario import (
    SERVER_FEATURES,
    RunEnv,
    Scenario,
    ScenarioRunner,
    list_scenarios,
)
from device_sim.stack import LocalStack, StackBrokerControl, raise_fd_limit

app = typer.Typer(
    help="Simulateur de boîtiers d'alerte : scénarios, charge, appui unique.",
    no_args_is_help=True,
    add_completion=False,
)

CredentialsOpt = Annotated[
    Path | None,
    typer.Option("--credentials", help="CSV device_id,mot_de_passe de boîtiers déjà créés."),
]
PasswdFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--passwd-file",
        help="Écrire les comptes directement dans ce fichier de mots de passe Mosquitto "
        "(raccourci de test).",
    ),
]
BrokerOpt = Annotated[str, typer.Option("--broker", help="Broker des boîtiers, mqtt://hôte:port.")]
ProtocolOpt = Annotated[
    str, typer.Option("--protocol", help="Version MQTT des boîtiers : 5 ou 3.1.1 (broker intégré).")
]
SpawnOpt = Annotated[
    bool,
    typer.Option(
        "--spawn",
        help="Démarrer un système local jetable (Mosquitto + vigie server sur SQLite).",
    ),
]
EmbeddedOpt = Annotated[
    bool,
    typer.Option("--embedded-broker", help="Avec --spawn : broker intégré (amqtt, MQTT 3.1.1)."),
]


def fail(message: str) -> NoReturn:
    typer.echo(f"vigie sim: erreur: {message}", err=True)
    raise typer.Exit(2)


def _exit_on_terminate() -> None:
    """SIGTERM (a service manager, ``timeout``, a CI job being cancelled) ends the command as
    an exception does, so that its ``finally`` blocks run: the local system that ``--spawn``
    started (broker, server) is stopped rather than left running without its owner."""

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


def _broker(url: str, protocol: str) -> BrokerTarget:
    try:
        return BrokerTarget.parse(url, protocol)
    except ValueError as exc:
        fail(str(exc))


def _api(url: str | None, user: str | None, password: str | None) -> HttpApi | None:
    if url is None:
        return None
    if not user or password is None:
        fail("--api demande --api-user et --api-password")
    return HttpApi(url, user, password)


@app.command("list")
def list_cmd() -> None:
    """Liste les scénarios fournis."""
    for name, description in list_scenarios():
        typer.echo(f"{name:<18} {description}")


@app.command()
def run(
    scenario: Annotated[
        str, typer.Argument(help="Nom d'un scénario (vigie sim list) ou fichier YAML.")
    ],
    seed: Annotated[
        int | None, typer.Option("--seed", help="Graine (tournées, bruit GPS, batterie).")
    ] = None,
    broker: BrokerOpt = "mqtt://127.0.0.1:1883",
    protocol: ProtocolOpt = "5",
    spawn: SpawnOpt = False,
    embedded_broker: EmbeddedOpt = False,
    prefix: Annotated[
        str | None,
        typer.Option(
            "--prefix",
            help="Préfixe des identifiants de boîtiers (défaut : aléatoire, ex. s1a2b-).",
        ),
    ] = None,
    features: Annotated[
        str,
        typer.Option(
            "--features",
            help="Fonctions du serveur à vérifier, séparées par des virgules "
            f"({', '.join(SERVER_FEATURES)}) ; les autres étapes sont ignorées.",
        ),
    ] = ",".join(SERVER_FEATURES),
    credentials: CredentialsOpt = None,
    passwd_file: PasswdFileOpt = None,
    pid_file: Annotated[
        Path | None, typer.Option("--pid-file", help="PID de Mosquitto à recharger.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Réglages de vigie (TOML) pour « devices add ».")
    ] = None,
    observer_url: Annotated[
        str | None,
        typer.Option(
            "--observer-url",
            help="Compte serveur (mqtt://vigie-server:mdp@hôte:port) pour voir les statuts.",
        ),
    ] = None,
    api: Annotated[
        str | None,
        typer.Option("--api", help="URL du serveur (vérifie le stockage, prend en charge)."),
    ] = None,
    api_user: Annotated[str | None, typer.Option("--api-user")] = None,
    api_password: Annotated[str | None, typer.Option("--api-password")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Écrire le rapport en JSON.")
    ] = None,
) -> None:
    """Joue un scénario et vérifie chaque étape (code de sortie 1 si une étape échoue)."""
    try:
        sc = Scenario.load(scenario)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    feats = {f.strip() for f in features.split(",") if f.strip()}
    unknown = feats - set(SERVER_FEATURES)
    if unknown:
        fail(f"--features : inconnu(s) {', '.join(sorted(unknown))}")
    stack: LocalStack | None = None
    provisioner: Provisioner
    api_hook = _api(api, api_user, api_password)
    env_kwargs: dict[str, Any] = {}
    _exit_on_terminate()
    if spawn:
        stack = LocalStack(broker_kind="embedded" if embedded_broker else "mosquitto")
        typer.echo(f"Démarrage d'un système local dans {stack.workdir}…", err=True)
        try:
            stack.start()
        except Exception as exc:
            stack.stop()  # what did start (the broker) does not outlive the refusal
            fail(f"système local : {exc}")
        except BaseException:
            stack.stop()
            raise
        target = BrokerTarget(port=stack.device_port, protocol=stack.protocol)
        provisioner = stack.provisioner()
        env_kwargs["observer_url"] = stack.server_mqtt_url()
        if stack.mosquitto is not None:
            env_kwargs["broker_control"] = StackBrokerControl(stack)
    else:
        target = _broker(broker, protocol)
        if credentials is not None:
            provisioner = StaticProvisioner.from_csv(credentials)
        elif passwd_file is not None:
            provisioner = BrokerFileProvisioner(passwd_file, pid_file)
        else:
            provisioner = VigieCliProvisioner(config=config)
        env_kwargs["observer_url"] = observer_url
    if prefix is None:
        # Scenario device names are local; a fresh prefix per run keeps runs against the same
        # server apart (and alert_ids are always fresh UUIDs, whatever the seed).
        prefix = "" if spawn else f"s{secrets.token_hex(2)}-"
    env = RunEnv(
        broker=target,
        provisioner=provisioner,
        features=feats,
        store=api_hook,
        responder=api_hook,
        prefix=prefix,
        out=lambda line: typer.echo(line),
        **env_kwargs,
    )
    typer.echo(f"Scénario {sc.name} : {sc.description}".strip())
    try:
        report = ScenarioRunner(sc, env, seed).run()
    finally:
        if stack is not None:
            stack.stop()
    if report.error:
        typer.echo(f"ERREUR : {report.error}", err=True)
    c = report.counts()
    typer.echo(
        f"{'RÉUSSI' if report.passed else 'ÉCHOUÉ'} : {c['ok']} ok, {c['failed']} en échec, "
        f"{c['skipped']} ignorée(s)"
    )
    if json_out is not None:
        json_out.write_text(
            json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    raise typer.Exit(0 if report.passed else 1)


@app.command()
def load(
    devices: Annotated[
        int, typer.Option("--devices", min=1, help="Nombre de boîtiers simulés.")
    ] = 100,
    hb_interval: Annotated[
        float, typer.Option("--hb-interval", min=0.1, help="Battement de cœur (s).")
    ] = 30.0,
    alert_rate: Annotated[
        float, typer.Option("--alert-rate", min=0.0, help="Alertes par seconde (toute la flotte).")
    ] = 1.0,
    duration: Annotated[
        float, typer.Option("--duration", min=0.0, help="Durée de la charge (s).")
    ] = 30.0,
    drain: Annotated[
        float, typer.Option("--drain", help="Attente maximale des accusés restants (s).")
    ] = 30.0,
    broker: BrokerOpt = "mqtt://127.0.0.1:1883",
    protocol: ProtocolOpt = "5",
    spawn: SpawnOpt = False,
    embedded_broker: EmbeddedOpt = False,
    credentials: CredentialsOpt = None,
    passwd_file: PasswdFileOpt = None,
    pid_file: Annotated[
        Path | None, typer.Option("--pid-file", help="PID de Mosquitto à recharger.")
    ] = None,
    shards: Annotated[
        int, typer.Option("--shards", help="Fils d'exécution (0 : automatique).")
    ] = 0,
    connect_rate: Annotated[
        float, typer.Option("--connect-rate", help="Connexions par seconde.")
    ] = 1000.0,
    pharmacy_share: Annotated[
        float, typer.Option("--pharmacy-share", help="Part de pharmacies.")
    ] = 0.2,
    departements: Annotated[
        str, typer.Option("--departements", help="Ex. 13,84 (défaut : métropole).")
    ] = "",
    prefix: Annotated[str, typer.Option("--prefix", help="Préfixe des identifiants.")] = "load-",
    seed: Annotated[int, typer.Option("--seed")] = 1,
    notify_times: Annotated[
        str | None,
        typer.Option(
            "--notify-times", help="URL donnant l'heure de la première notification par alert_id."
        ),
    ] = None,
    api: Annotated[
        str | None, typer.Option("--api", help="URL du serveur (vérifie le stockage).")
    ] = None,
    api_user: Annotated[str | None, typer.Option("--api-user")] = None,
    api_password: Annotated[str | None, typer.Option("--api-password")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Écrire le rapport en JSON.")
    ] = None,
    osmand_phones: Annotated[
        int, typer.Option("--osmand", min=0, help="Téléphones Traccar Client en plus (--spawn).")
    ] = 0,
    osmand_rate: Annotated[
        float, typer.Option("--osmand-sos-rate", min=0.0, help="Leurs SOS par seconde.")
    ] = 0.2,
    buttons: Annotated[
        int,
        typer.Option(
            "--buttons",
            min=0,
            help="Boutons MQTT (Shelly, zigbee2mqtt, Tasmota) en plus (--spawn, Mosquitto).",
        ),
    ] = 0,
    button_rate: Annotated[
        float, typer.Option("--button-rate", min=0.0, help="Leurs appuis par seconde.")
    ] = 0.1,
) -> None:
    """Charge : N boîtiers, battements de cœur, alertes au hasard ; latences et pertes."""
    cfg = LoadConfig(
        devices=devices,
        hb_interval_s=hb_interval,
        alert_rate=alert_rate,
        duration_s=duration,
        drain_s=drain,
        shards=shards,
        connect_rate=connect_rate,
        pharmacy_share=pharmacy_share,
        departements=[d.strip() for d in departements.split(",") if d.strip()],
        id_prefix=prefix,
        seed=seed,
    )
    # Each device holds a socket; so does the broker for each of them.
    raise_fd_limit(devices * 2 + 1024)
    stack: LocalStack | None = None
    plan: gateway_cli.GatewayPlan | None = None
    if (osmand_phones or buttons) and not spawn:
        fail("--osmand et --buttons demandent --spawn (enregistrés dans le système local)")
    if buttons and embedded_broker:
        fail("--buttons demande Mosquitto (le broker intégré n'a pas d'ACL pour leurs sujets)")
    _exit_on_terminate()
    if spawn:
        stack = LocalStack(broker_kind="embedded" if embedded_broker else "mosquitto")
        typer.echo(f"Démarrage d'un système local dans {stack.workdir}…", err=True)
        try:
            stack.start(with_server=False)
            if osmand_phones or buttons:
                typer.echo(
                    f"Enregistrement de {osmand_phones} téléphones Traccar Client et {buttons} "
                    "boutons MQTT (vigie devices import)…",
                    err=True,
                )
                # Before the server: it reads the buttons file when it starts.
                plan = gateway_cli.prepare_gateways(
                    stack, osmand=osmand_phones, buttons=buttons, seed=seed
                )
            stack.start_server()
        except Exception as exc:
            stack.stop()
            fail(f"système local : {exc}")
        except BaseException:
            stack.stop()
            raise
        target = BrokerTarget(port=stack.device_port, protocol=stack.protocol)
        passwd_file, pid_file = stack.passwd_file, stack.pid_file
    else:
        target = _broker(broker, protocol)
    try:
        if credentials is not None:
            passwords = dict(StaticProvisioner.from_csv(credentials).passwords)
            missing = [d for d in load_passwords(cfg) if d not in passwords]
            if missing:
                fail(
                    f"{credentials}: {len(missing)} boîtier(s) sans mot de passe, ex. {missing[0]}"
                )
        elif passwd_file is not None:
            passwords = load_passwords(cfg)
            typer.echo(
                f"Comptes de {devices} boîtiers écrits dans {passwd_file} (raccourci de test)…",
                err=True,
            )
            write_broker_passwords(
                passwd_file,
                passwords,
                reload=stack.reload_broker if stack else None,
                pid_file=pid_file,
            )
            first = next(iter(passwords))
            if not wait_credentials_active(
                target.host, target.port, first, passwords[first], protocol=target.protocol
            ):
                fail("le broker n'a pas pris en compte les nouveaux comptes")
        else:
            fail("donnez --spawn, --passwd-file ou --credentials")
        run_ = LoadRun(
            cfg,
            target,
            passwords,
            first_notifications=http_first_notifications(notify_times) if notify_times else None,
            store=_api(api, api_user, api_password),
            progress=Progress(),
        )
        # Ctrl-C or SIGTERM once running: the load stops, drains and reports, as at its end.
        signal.signal(signal.SIGINT, lambda *a: run_.stop())
        signal.signal(signal.SIGTERM, lambda *a: run_.stop())
        mix = None
        if plan is not None and stack is not None:
            try:
                mix = gateway_cli.start_gateways(
                    plan,
                    stack,
                    sos_rate=osmand_rate,
                    position_every_s=hb_interval,
                    press_rate=button_rate,
                    seed=seed,
                )
            except ProvisioningError as exc:
                fail(str(exc))
            mix.start()
        try:
            report = run_.run()
        finally:
            if mix is not None:
                mix.stop()
                if mix.buttons is not None:
                    time.sleep(1.0)  # the last QoS 0 presses reach the server before it stops
    finally:
        if stack is not None:
            stack.stop()
    typer.echo(report.summary())
    if mix is not None:
        typer.echo(mix.summary())
    if json_out is not None:
        write_json(report, json_out)
    raise typer.Exit(0 if report.alerts_lost == 0 else 1)


@app.command()
def press(
    device_id: Annotated[str, typer.Argument(metavar="DEVICE_ID")],
    password: Annotated[str, typer.Option("--password", help="Mot de passe MQTT du boîtier.")],
    kind: Annotated[str, typer.Option("--kind", help="sos, sos_silent, fall…")] = "sos",
    broker: BrokerOpt = "mqtt://127.0.0.1:1883",
    protocol: ProtocolOpt = "5",
    lat: Annotated[float | None, typer.Option("--lat", help="Position (sinon aucune).")] = None,
    lon: Annotated[float | None, typer.Option("--lon")] = None,
    acc_m: Annotated[float, typer.Option("--acc-m", help="Précision (m).")] = 15.0,
    cancel_pin: Annotated[
        str | None, typer.Option("--cancel-pin", help="Annuler ensuite avec ce code.")
    ] = None,
    wait: Annotated[
        float, typer.Option("--wait", help="Écoute des commandes après l'appui (s).")
    ] = 5.0,
) -> None:
    """Un appui sur le bouton d'un boîtier ; affiche les commandes reçues avec leur délai."""
    from device_sim.geo import Pinned

    target = _broker(broker, protocol)
    reactor = Reactor(1).start()
    mobility = Pinned(lat, lon, acc_m) if lat is not None and lon is not None else None
    dev = SimDevice(
        device_id,
        password,
        role="other",
        mobility=mobility,
        shard=reactor.pick(),
        broker=target,
        config=DeviceConfig(hb_interval_s=3600, persistent_session=False),
    )
    dev.start()
    try:
        if not dev.ready.wait(10):
            fail(f"connexion impossible à {target.host}:{target.port} : {dev.last_connect_error}")
        alert_id = dev.press(kind)
        rec = dev.alerts[alert_id]
        typer.echo(f"Alerte {kind} envoyée : {alert_id}")
        deadline = time.monotonic() + max(wait, 0.0)
        cancelled = False
        seen = 0
        while time.monotonic() < deadline:
            cmds = dev.commands()
            for c in cmds[seen:]:
                delay_ms = (c.at_mono - rec.pressed_mono) * 1000
                body = json.dumps(c.payload, ensure_ascii=False)
                typer.echo(f"  +{delay_ms:8.1f} ms  {c.type}  {body}")
            seen = len(cmds)
            if cancel_pin and not cancelled and rec.received_mono is not None:
                dev.cancel(alert_id, cancel_pin)
                cancelled = True
                typer.echo("  code d'annulation saisi")
            time.sleep(0.02)
        ok = rec.received_mono is not None
        if not ok:
            typer.echo(
                f"Pas d'accusé de réception après {wait:g} s "
                "(l'alerte reste dans la file du boîtier)."
            )
    finally:
        dev.stop()
        time.sleep(0.2)
        reactor.stop()
    raise typer.Exit(0 if ok else 1)


# Devices that do not speak protocol.md (Traccar Client, MQTT buttons).
app.command("osmand")(gateway_cli.osmand)
app.command("button")(gateway_cli.button)


def main() -> None:
    app()


if __name__ == "__main__":
    if not os.environ.get("PYTHONUNBUFFERED"):
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    main()
