"""``vigie demo``: the whole chain on one machine with only Python.

A broker (Mosquitto from ``broker_config/`` when installed, otherwise the embedded amqtt
broker on 127.0.0.1), the server on SQLite with simulated telephony (a referent "answers"
every alert after a while), a demo referent directory with fictional numbers, a small fleet
of simulated devices (nurses on their rounds, night pharmacies) pressing their buttons now
and then, and the dashboard with a demo login. Ctrl-C stops everything.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from alert_server.db import make_engine, migrate, write_scope
from alert_server.demo_gateways import DemoGateways
from alert_server.devices import enrol
from alert_server.devices import service as devices
from alert_server.users import service as users
from device_sim.device import BrokerTarget, DeviceConfig, Role, SimDevice
from device_sim.geo import CommuneIndex, FixedSite, Mobility, NurseRound, Pinned, default_index_path
from device_sim.reactor import Reactor
from vigie import launch
from vigie.brokers import files as broker_files
from vigie.brokers.embedded import EmbeddedBroker
from vigie.brokers.mosquitto import REPO_ROOT, LocalMosquitto, free_port, stop_process
from vigie.timeutil import utcnow

# Numbers from the ranges ARCEP reserves for fiction (01 99 00, 04 65 71): nobody answers them.
DEMO_DIRECTORY = """\
# Répertoire de démonstration : numéros fictifs (plages réservées par l'ARCEP à la fiction).
version: 1
departements:
  "13":
    PN:
      - name: "Référent santé DDSP 13 (démo)"
        phone: "+33465710013"
      - name: "CIC Marseille (démo)"
        phone: "+33465710113"
    GN:
      - name: "Référent santé groupement 13 (démo)"
        phone: "+33465710213"
  "84":
    PN:
      - name: "Référent santé DDSP 84 (démo)"
        phone: "+33465710084"
    GN:
      - name: "Référent santé groupement 84 (démo)"
        phone: "+33465710184"
  "75":
    PN:
      - name: "Référent santé Préfecture de police (démo)"
        phone: "+33199007500"
  "53":
    PN:
      - name: "Référent santé DDSP 53 (démo)"
        phone: "+33243005300"
    GN:
      - name: "Référent santé groupement 53 (démo)"
        phone: "+33243005301"
national_fallback:
  - name: "Permanence nationale (démo)"
    phone: "+33199000000"
escalation:
  steps:
    - {after_s: 0,   contact: 1, channels: [sms]}
    - {after_s: 30,  contact: 1, channels: [voice]}
    - {after_s: 90,  contact: 2, channels: [sms, voice]}
    - {after_s: 150, contact: all, channels: [sms, voice]}
  repeat: 1
"""


@dataclass(frozen=True)
class DemoWorker:
    device_id: str
    name: str
    role: Role
    phone: str
    home: tuple[float, float]  # commune interior point (used without the communes index)
    home_code: str  # INSEE code of the home commune
    site_label: str | None = None


FLEET = (
    DemoWorker("demo-ines", "Inès Durand", "nurse", "+33612000001", (43.2922, 5.5683), "13005"),
    DemoWorker("demo-karim", "Karim Benali", "nurse", "+33612000002", (43.9493, 4.8055), "84007"),
    DemoWorker("demo-lea", "Léa Martin", "nurse", "+33612000003", (48.0707, -0.7734), "53130"),
    DemoWorker("demo-paul", "Paul Girard", "nurse", "+33612000004", (43.7640, 5.2186), "13057"),
    DemoWorker(
        "demo-pharma-port",
        "Claire Rossi",
        "pharmacist",
        "+33612000005",
        (43.2951, 5.3744),
        "13055",
        "Pharmacie du Port (démo), Marseille",
    ),
    DemoWorker(
        "demo-pharma-nuit",
        "Hugo Lefèvre",
        "pharmacist",
        "+33612000006",
        (48.8534, 2.3488),
        "75056",
        "Pharmacie de nuit (démo), Paris",
    ),
)
PIN, DURESS_PIN = "2468", "1357"
# Not in the simulated fleet: the newcomer's own phone (or browser) becomes this device through
# the enrolment link the demo prints (/app/).
PHONE_DEVICE = "demo-telephone"
ADMIN_USER = "demo"


@dataclass
class Demo:
    port: int = 8000
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vigie-demo-")))
    press_every_s: float = 45.0
    auto_ack_s: float = 20.0
    seed: int = 1
    use_mosquitto: bool | None = None  # None: when installed
    say: object = print  # callable(str)

    mosquitto: LocalMosquitto | None = None
    embedded: EmbeddedBroker | None = None
    server: subprocess.Popen[bytes] | None = None
    reactor: Reactor | None = None
    fleet: list[SimDevice] = field(default_factory=list)
    password: str = ""
    phone_enrol_url: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    gateways: DemoGateways | None = None
    _communes: Future[CommuneIndex | None] | None = None
    _pin_hashes: dict[str, str] = field(default_factory=dict)

    def _say(self, text: str) -> None:
        self.say(text)  # type: ignore[operator]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def broker_dir(self) -> Path:
        return self.workdir / "broker"

    # -- start ---------------------------------------------------------------------------
    def start(self) -> Demo:
        use_mosquitto = (
            LocalMosquitto.available() if self.use_mosquitto is None else self.use_mosquitto
        )
        if use_mosquitto:
            self.mosquitto = LocalMosquitto(self.broker_dir)
            self.mosquitto.prepare()
            self.mosquitto.start()
            mqtt_url, protocol = self.mosquitto.server_url(), "5"
            device_port = self.mosquitto.port
            ws_url = self.mosquitto.ws_url()
            self._say(f"Broker : Mosquitto (broker_config/), port {device_port}")
        else:
            self.broker_dir.mkdir(parents=True, exist_ok=True)
            broker_files.write_passwd(self.broker_dir / "passwd", {})
            broker_files.write_acl(self.broker_dir / "acl", [])
            self.embedded = EmbeddedBroker(
                passwd_file=self.broker_dir / "passwd", acl_file=self.broker_dir / "acl"
            ).start()
            mqtt_url, protocol = self.embedded.server_url(), "3.1.1"
            device_port = self.embedded.port
            ws_url = self.embedded.ws_url()
            self._say(
                f"Broker : mosquitto absent, broker Python intégré (MQTT 3.1.1) sur "
                f"127.0.0.1:{device_port} — pour la démonstration seulement"
            )
        directory = self.workdir / "referents-demo.yaml"
        directory.write_text(DEMO_DIRECTORY, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
        env.update(
            VIGIE_DATABASE_URL=f"sqlite:///{self.workdir / 'vigie-demo.db'}",
            VIGIE_MQTT_URL=mqtt_url,
            VIGIE_MQTT_PROTOCOL=protocol,
            VIGIE_BROKER_PASSWD_FILE=str(self.broker_dir / "passwd"),
            VIGIE_BROKER_ACL_FILE=str(self.broker_dir / "acl"),
            VIGIE_REFERENTS_FILE=str(directory),
            VIGIE_SIMULATED_AUTO_ACK_S=str(self.auto_ack_s),
            VIGIE_PUBLIC_URL=self.url,
            # The phones' MQTT over WebSocket (the worker's app at /app/).
            VIGIE_MQTT_WS_URL=ws_url,
            VIGIE_SECRET_KEY=secrets.token_hex(32),
            # The demo's own default (operations.md): nothing is sent, the fictional referent
            # answers, and the console says "démonstration" discreetly.
            VIGIE_TELEPHONY="simulated",
            VIGIE_INTERNAL_ACCESS="network",  # loopback only: the demo's own machine
            VIGIE_LOG_FORMAT="plain",  # read by a person in the demo's folder
            VIGIE_DEMO="true",
        )
        if self.mosquitto is not None:
            env["VIGIE_BROKER_PID_FILE"] = str(self.mosquitto.pid_file)
        geo_dir = os.environ.get("VIGIE_GEO_DIR")
        if geo_dir:
            env["VIGIE_GEO_DIR"] = geo_dir
            self._say(
                f"Limites administratives : {geo_dir} "
                "(premier chargement : ~15 s, gardé ensuite en cache)"
            )
        else:
            self._say(
                "Limites administratives : VIGIE_GEO_DIR n'est pas réglé — la démonstration "
                "tourne, mais chaque alerte part vers la permanence nationale (pas de "
                "département). Réglez VIGIE_GEO_DIR=../shared/geo pour le routage réel."
            )
        self.gateways = DemoGateways(self.workdir, self.mosquitto)
        self._provision(env)
        # The phone's device costs two argon2 hashes (about a second each on a busy machine):
        # done while the server starts (argon2 leaves the GIL), so that the demo is not ready
        # later because of it.
        phone = threading.Thread(target=self._provision_phone, args=(env,), name="demo-phone")
        phone.start()
        # The nurses' rounds need the communes index (a CSV of 35,000 lines): read while the
        # server starts rather than after.
        communes = ThreadPoolExecutor(1, thread_name_prefix="demo-communes")
        self._communes = communes.submit(_communes_index)
        communes.shutdown(wait=False)
        try:
            self._start_server(env)
            self._start_fleet(device_port, protocol)
        finally:
            phone.join()
        if not self.phone_enrol_url:
            self.stop()
            raise RuntimeError("le boîtier du téléphone de démonstration n'a pas pu être créé")
        self.gateways.start(self.url)
        return self

    def _provision(self, env: dict[str, str]) -> None:
        # Every demo device has the PINs the demo prints, so each PIN is hashed once (argon2,
        # deliberately slow) for all of them, in threads (argon2 leaves the GIL) while the
        # database is migrated.
        with ThreadPoolExecutor(2, thread_name_prefix="demo-pin") as pool:
            hashing = {pin: pool.submit(devices.hash_pin, pin) for pin in (PIN, DURESS_PIN)}
            engine = make_engine(env["VIGIE_DATABASE_URL"])
            migrate(engine)
            self._pin_hashes = {pin: f.result() for pin, f in hashing.items()}
        passwd = self.broker_dir / "passwd"
        entries = broker_files.read_passwd(passwd)
        self._device_passwords: dict[str, str] = {}
        now = utcnow()
        with write_scope(engine) as session:
            for w in FLEET:
                devices.add_device(
                    session,
                    new=devices.NewDevice(
                        w.device_id,
                        w.name,
                        w.role,
                        w.phone,
                        PIN,
                        DURESS_PIN,
                        w.home[0] if w.site_label else None,
                        w.home[1] if w.site_label else None,
                        w.site_label,
                    ),
                    now=now,
                    hasher=self._demo_pin_hash,
                )
                pw = broker_files.generate_password()
                entries[w.device_id] = broker_files.mosquitto_hash(pw)
                self._device_passwords[w.device_id] = pw
            # Existing devices: a Traccar Client phone and a zigbee2mqtt button.
            if self.gateways is not None:
                self.gateways.provision(
                    session, env, entries, PIN, DURESS_PIN, hasher=self._demo_pin_hash
                )
            self.password = secrets.token_urlsafe(12)
            users.add_account(
                session,
                new=users.validate_new_account(ADMIN_USER, self.password, "admin", None),
                now=now,
            )
        broker_files.write_passwd(passwd, entries)
        if self.mosquitto is not None:
            self.mosquitto.reload()
        engine.dispose()

    def _demo_pin_hash(self, pin: str) -> str:
        """The hash of one of the demo's two PINs (computed once in ``_provision``)."""
        return self._pin_hashes[pin]

    def _provision_phone(self, env: dict[str, str]) -> None:
        """The newcomer's own phone: a device without broker password (enrolment gives it
        one) and its one-time enrolment link."""
        engine = make_engine(env["VIGIE_DATABASE_URL"])
        try:
            now = utcnow()
            with write_scope(engine) as session:
                devices.add_device(
                    session,
                    new=devices.NewDevice(
                        PHONE_DEVICE,
                        "Vous (démonstration)",
                        "nurse",
                        FLEET[0].phone,
                        PIN,
                        DURESS_PIN,
                    ),
                    now=now,
                    hasher=self._demo_pin_hash,
                )
                url = enrol.issue(
                    session, device_id=PHONE_DEVICE, public_url=self.url, now=now
                ).enrol_url
            self.phone_enrol_url = url
        finally:
            engine.dispose()

    def _start_server(self, env: dict[str, str]) -> None:
        self.server = launch.spawn(
            [sys.executable, "-m", "alert_server.cli", "server", "--port", str(self.port)],
            env=env,
            cwd=REPO_ROOT,
            log_path=self.workdir / "server.log",
        )

        def healthy() -> bool:
            return launch.http_status("127.0.0.1", self.port) == 200

        try:
            launch.wait_ready(self.server, healthy, what="le serveur")
        except launch.LaunchFailed as exc:
            tail = (self.workdir / "server.log").read_text(errors="replace")[-3000:]
            self.stop()
            raise RuntimeError(f"le serveur n'a pas démarré ({exc}) :\n{tail}") from exc

    def _start_fleet(self, device_port: int, protocol: str) -> None:
        rng = random.Random(self.seed)
        index = self._communes.result() if self._communes is not None else _communes_index()
        self.reactor = Reactor(shards=1).start()
        target = BrokerTarget("127.0.0.1", device_port, protocol)
        start = datetime.now(UTC)
        for w in FLEET:
            mobility: Mobility
            if w.site_label:
                mobility = FixedSite(w.home[0], w.home[1], w.site_label)
            elif index is not None and w.home_code in index.by_code:
                mobility = NurseRound(index, index.by_code[w.home_code], rng, start)
            else:
                mobility = Pinned(w.home[0], w.home[1], acc_m=15.0)
            dev = SimDevice(
                w.device_id,
                self._device_passwords[w.device_id],
                role=w.role,
                mobility=mobility,
                shard=self.reactor.pick(),
                broker=target,
                config=DeviceConfig(hb_interval_s=30.0, keep_sent_log=False),
                rng=random.Random(rng.random()),
                pin=PIN,
                duress_pin=DURESS_PIN,
            )
            dev.start()
            self.fleet.append(dev)
        self._presser = threading.Thread(target=self._press_loop, args=(rng,), daemon=True)
        self._presser.start()

    def _press_loop(self, rng: random.Random) -> None:
        kinds = ("sos", "sos", "sos_silent", "fall")
        # The first alert comes quickly so that a newcomer sees the chain at once.
        delay = 8.0
        while not self._stop.wait(delay):
            delay = rng.uniform(0.6, 1.4) * self.press_every_s
            said = self.gateways.press(rng) if self.gateways is not None else None
            if said is not None:
                self._say(f"{_clock()}  {said}")
                continue
            dev = rng.choice(self.fleet)
            kind = rng.choice(kinds)
            # A detected fall skips the device's local pre-alarm here (nobody is there to
            # cancel it); the server's own verification, when configured, still applies.
            alert_id = dev.fall(cancel_window_s=0) if kind == "fall" else dev.press(kind)
            self._say(f"{_clock()}  {dev.device_id} : alerte {kind} ({alert_id[:8]}…)")

    # -- stop ----------------------------------------------------------------------------
    def wait(self) -> None:
        self._stop.wait()

    def stop(self) -> None:
        self._stop.set()
        if self.gateways is not None:
            self.gateways.stop()
        for dev in self.fleet:
            with contextlib.suppress(Exception):
                dev.stop()
        if self.reactor is not None:
            self.reactor.stop()
            self.reactor = None
        stop_process(self.server)
        self.server = None
        if self.mosquitto is not None:
            self.mosquitto.stop()
        if self.embedded is not None:
            self.embedded.stop()


def finish_workdir(workdir: Path, *, keep: bool, owned: bool) -> str:
    """At the end of a demo: remove the folder it created (a database, a broker's files and
    logs: tens of megabytes per run) unless ``keep``; a folder the user chose is theirs and is
    left alone. Returns the French line that says which."""
    if keep or not owned:
        return f"Fichiers de la démonstration conservés dans {workdir}"
    shutil.rmtree(workdir, ignore_errors=True)
    if workdir.exists():
        return f"Fichiers de la démonstration : {workdir} n'a pas pu être effacé entièrement"
    return f"Fichiers de la démonstration effacés ({workdir})"


def _communes_index() -> CommuneIndex | None:
    return CommuneIndex.load() if default_index_path().is_file() else None


def _clock() -> str:
    return datetime.now().astimezone().strftime("%H:%M:%S")


def free_demo_port(preferred: int) -> int:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred
