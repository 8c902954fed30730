"""What ``vigie demo`` adds for existing devices: a Traccar Client phone (OsmAnd) and a
zigbee2mqtt SOS button in a pharmacy (with Mosquitto only: the embedded broker has no ACL for
vendor topics). Kept here so that ``alert_server/demo.py`` only calls it."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path

from sqlmodel import Session

from alert_server.devices import service as devices
from alert_server.gateways import osmand
from device_sim.gateways import MqttButton, OsmandDevice, buttons_file
from vigie.brokers import files as broker_files
from vigie.brokers.mosquitto import LocalMosquitto
from vigie.timeutil import utcnow

TRACCAR = ("demo-traccar", "Sofia Garnier", "+33612000007", (45.7640, 4.8357))
BUTTON = ("demo-bouton-port", "Claire Rossi", "+33612000008", (43.2953, 5.3747))
BUTTON_SITE = "Pharmacie du Port (démo), Marseille — bouton zigbee de la réserve"


class DemoGateways:
    def __init__(self, workdir: Path, mosquitto: LocalMosquitto | None) -> None:
        self.workdir = workdir
        self.mosquitto = mosquitto
        self.osmand_id = ""
        self.button_password = ""
        self.phone: OsmandDevice | None = None
        self.button: MqttButton | None = None
        self._stop = threading.Event()

    def provision(
        self,
        session: Session,
        env: dict[str, str],
        passwd_entries: dict[str, str],
        pin: str,
        duress: str,
        *,
        hasher: Callable[[str], str] = devices.hash_pin,
    ) -> None:
        """Register both (in the demo's transaction); the button's MQTT account goes into
        ``passwd_entries``, which the demo writes with its fleet's."""
        now = utcnow()
        device_id, name, phone, _ = TRACCAR
        devices.add_device(
            session,
            new=devices.NewDevice(device_id, name, "nurse", phone, pin, duress),
            now=now,
            hasher=hasher,
        )
        self.osmand_id = osmand.register(session, device_id=device_id, now=now)
        if self.mosquitto is None:
            return
        device_id, name, phone, (lat, lon) = BUTTON
        devices.add_device(
            session,
            new=devices.NewDevice(
                device_id, name, "pharmacist", phone, pin, duress, lat, lon, BUTTON_SITE
            ),
            now=now,
            hasher=hasher,
        )
        self.button_password = broker_files.generate_password()
        passwd_entries[device_id] = broker_files.mosquitto_hash(self.button_password)
        path = self.workdir / "boutons-demo.yaml"
        path.write_text(buttons_file([(device_id, "zigbee", "bouton-reserve")]), encoding="utf-8")
        env["VIGIE_BUTTONS_FILE"] = str(path)
        env["VIGIE_BROKER_SERVERS_ACL_FILE"] = str(self.mosquitto.servers_acl_file)

    def start(self, url: str) -> None:
        _, _, _, (lat, lon) = TRACCAR
        self.phone = OsmandDevice(url + osmand.PATH, self.osmand_id, lat, lon)
        threading.Thread(target=self._positions, name="demo-traccar", daemon=True).start()
        if self.mosquitto is not None:
            self.button = MqttButton(
                "zigbee",
                "bouton-reserve",
                BUTTON[0],
                self.button_password,
                "127.0.0.1",
                self.mosquitto.port,
            )
            self.button.start()

    def _positions(self) -> None:
        while not self._stop.is_set():
            if self.phone is not None:
                self.phone.position()
            self._stop.wait(30)

    def press(self, rng: random.Random) -> str | None:
        """An SOS from one of them (None when the pick is a protocol.md device's turn)."""
        choices = [c for c in (self.phone, self.button) if c is not None]
        if not choices or rng.random() > 0.3:
            return None
        pick = rng.choice(choices)
        if isinstance(pick, OsmandDevice):
            status = pick.sos()
            return f"{TRACCAR[0]} (Traccar Client) : SOS, réponse HTTP {status}"
        pick.press()
        return f"{BUTTON[0]} (bouton zigbee2mqtt) : appui SOS"

    def stop(self) -> None:
        self._stop.set()
        if self.button is not None:
            self.button.stop()
