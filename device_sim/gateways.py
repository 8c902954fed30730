"""Simulated devices that do not speak protocol.md: Traccar Client (OsmAnd HTTP) and the three
kinds of MQTT button the server's bridge reads (Shelly Button1, zigbee2mqtt, Tasmota).

They send exactly what the real ones send (``alert_server/gateways`` documents the shapes), so
``vigie sim``, ``vigie demo`` and the load benchmark exercise the real gateways.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import paho.mqtt.client as mqtt

ButtonKind = Literal["shelly", "zigbee", "tasmota"]
BUTTON_KINDS: tuple[ButtonKind, ...] = ("shelly", "zigbee", "tasmota")


@dataclass
class OsmandDevice:
    """Traccar Client 10 (form fields) or 9 (JSON body) pointed at ``server_url``."""

    server_url: str
    ident: str
    lat: float
    lon: float
    version: Literal[10, 9] = 10
    batt: int = 80
    clock: Callable[[], float] = time.time
    # (what, HTTP status or 0 when unreachable, seconds) of every request, in order.
    sent: list[tuple[str, int, float]] = field(default_factory=list)

    def _send(self, what: str, alarm: str | None) -> int:
        ts = self.clock()
        if self.version == 10:
            fields: dict[str, str] = {
                "id": self.ident, "lat": f"{self.lat:.6f}", "lon": f"{self.lon:.6f}",
                "timestamp": str(int(ts)), "accuracy": "12.0", "altitude": "35.0",
                "speed": "0.0", "bearing": "0.0", "batt": str(self.batt), "charge": "false",
            }  # fmt: skip
            if alarm:
                fields["alarm"] = alarm
            kwargs: dict[str, Any] = {"data": fields}
        else:
            location: dict[str, Any] = {
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts)),
                "coords": {"latitude": self.lat, "longitude": self.lon, "accuracy": 12.0},
                "battery": {"level": self.batt / 100, "is_charging": False},
                "extras": {"alarm": alarm} if alarm else {},
            }
            kwargs = {"json": {"location": location, "device_id": self.ident}}
        t0 = time.monotonic()
        try:
            status = httpx.post(self.server_url, timeout=30, **kwargs).status_code
        except httpx.HTTPError:
            status = 0  # as Traccar Client: the SOS is lost, nothing is shown
        self.sent.append((what, status, time.monotonic() - t0))
        return status

    def position(self) -> int:
        return self._send("position", None)

    def sos(self) -> int:
        """One request, never retried (what Traccar Client's SOS does)."""
        return self._send("sos", "sos")


def button_topic(kind: ButtonKind, name: str) -> str:
    return {
        "shelly": f"shellies/shellybutton1-{name}/input_event/0",
        "zigbee": f"zigbee2mqtt/{name}",
        "tasmota": f"stat/{name}/RESULT",
    }[kind]


def availability_topic(kind: ButtonKind, name: str) -> str:
    return {
        "shelly": f"shellies/shellybutton1-{name}/online",
        "zigbee": f"zigbee2mqtt/{name}/availability",
        "tasmota": f"tele/{name}/LWT",
    }[kind]


def availability_payload(kind: ButtonKind, online: bool) -> str:
    if kind == "shelly":
        return "true" if online else "false"
    if kind == "zigbee":
        return json.dumps({"state": "online" if online else "offline"})
    return "Online" if online else "Offline"


# The gesture each button sends for an alert, and the match of VIGIE_BUTTONS_FILE for it.
PRESS = {
    "shelly": ({"event": "L", "event_cnt": 1}, {"event": ["L"]}),
    "zigbee": (
        {"action": "emergency", "battery": 100, "linkquality": 150},
        {"action": ["emergency"]},
    ),
    "tasmota": ({"Button1": {"Action": "HOLD"}}, {"Button1.Action": ["HOLD"]}),
}


def buttons_file(entries: list[tuple[str, ButtonKind, str]]) -> str:
    """A ``VIGIE_BUTTONS_FILE`` for ``(device_id, kind, name)`` entries."""
    lines = ["version: 1", "buttons:"]
    for device_id, kind, name in entries:
        lines += [
            f"  - device_id: {device_id}",
            f'    topic: "{button_topic(kind, name)}"',
            f"    match: {json.dumps(PRESS[kind][1])}",
        ]
    return "\n".join(lines) + "\n"


class MqttButton:
    """A button (or the pharmacy's zigbee2mqtt / Tasmota) logged in as its Vigie device."""

    def __init__(
        self, kind: ButtonKind, name: str, device_id: str, password: str, host: str, port: int
    ) -> None:
        self.kind, self.name, self.device_id = kind, name, device_id
        self.topic = button_topic(kind, name)
        self._connected = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        c.username_pw_set(device_id, password)
        # The vendor's last will: the server sees the button go away.
        c.will_set(
            availability_topic(kind, name), availability_payload(kind, False), qos=0, retain=True
        )
        c.on_connect = lambda *a: self._on_connect()
        c.reconnect_delay_set(1, 5)
        self.client = c
        self.host, self.port = host, port
        self.presses = 0

    def _on_connect(self) -> None:
        self.client.publish(
            availability_topic(self.kind, self.name),
            availability_payload(self.kind, True),
            qos=0,
            retain=True,
        )
        self._connected.set()

    def start(self, timeout_s: float = 10.0) -> bool:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        return self._connected.wait(timeout_s)

    def press(self) -> None:
        """QoS 0 and no event id, as these buttons publish."""
        self.presses += 1
        self.client.publish(self.topic, json.dumps(PRESS[self.kind][0]), qos=0)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class ButtonLoad:
    """MQTT buttons mixed into a load run: presses at ``press_rate`` per second (whole group,
    a Poisson process), each at QoS 0 with no event id, as the real ones. The server's bridge
    makes each alert; what was stored is checked on the server's side (``presses`` gives the
    press times per device, in order)."""

    def __init__(self, buttons: list[MqttButton], *, press_rate: float, seed: int = 1) -> None:
        import random

        self.buttons = buttons
        self.press_rate = press_rate
        self.rng = random.Random(f"buttons:{seed}")
        self.connected = 0
        # (device_id, wall-clock time of the press), in press order.
        self.presses: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def connect(self, timeout_s: float = 30.0) -> int:
        """Connect every button (each announces itself online); returns how many made it."""
        for b in self.buttons:
            b.client.connect_async(b.host, b.port, keepalive=30)
            b.client.loop_start()
        deadline = time.monotonic() + timeout_s
        self.connected = sum(
            1 for b in self.buttons if b._connected.wait(max(0.0, deadline - time.monotonic()))
        )
        return self.connected

    def start(self) -> None:
        self._thread = threading.Thread(target=self._press_loop, name="sim-buttons", daemon=True)
        self._thread.start()

    def _press_loop(self) -> None:
        if self.press_rate <= 0 or not self.buttons:
            return
        while not self._stop.wait(self.rng.expovariate(self.press_rate)):
            b = self.rng.choice(self.buttons)
            self.presses.append((b.device_id, time.time()))
            b.press()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        time.sleep(0.2)  # the last QoS 0 publishes leave before the disconnect
        for b in self.buttons:
            b.stop()

    def to_json(self) -> dict[str, Any]:
        return {
            "buttons": len(self.buttons),
            "connected": self.connected,
            "presses": len(self.presses),
            "kinds": sorted({b.kind for b in self.buttons}),
        }

    def summary(self) -> str:
        kinds = ", ".join(sorted({b.kind for b in self.buttons}))
        return (
            f"Boutons MQTT ({kinds}) : {len(self.buttons)} boutons, {self.connected} connectés, "
            f"{len(self.presses)} appuis (QoS 0, sans accusé : vérifiés côté serveur)"
        )


class OsmandLoad:
    """Traccar Client phones mixed into a load run: positions every ``position_every_s`` and
    SOS requests at ``sos_rate`` per second (whole group), each answered 200 only once stored."""

    def __init__(
        self,
        phones: list[OsmandDevice],
        *,
        sos_rate: float,
        position_every_s: float,
        seed: int = 1,
    ) -> None:
        import random

        self.phones = phones
        self.sos_rate = sos_rate
        self.position_every_s = position_every_s
        self.rng = random.Random(seed)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for target in (self._sos_loop, self._position_loop):
            t = threading.Thread(target=target, name="sim-osmand", daemon=True)
            t.start()
            self._threads.append(t)

    def _sos_loop(self) -> None:
        if self.sos_rate <= 0 or not self.phones:
            return
        while not self._stop.wait(self.rng.expovariate(self.sos_rate)):
            self.rng.choice(self.phones).sos()

    def _position_loop(self) -> None:
        if not self.phones:
            return
        gap = self.position_every_s / len(self.phones)
        i = 0
        while not self._stop.wait(gap):
            self.phones[i % len(self.phones)].position()
            i += 1

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(35)

    def to_json(self) -> dict[str, Any]:
        def p(values: list[float], q: float) -> float | None:
            if not values:
                return None
            values = sorted(values)
            return values[min(len(values) - 1, int(q / 100 * len(values)))] * 1000

        sos = [s for d in self.phones for s in d.sent if s[0] == "sos"]
        pos = [s for d in self.phones for s in d.sent if s[0] == "position"]
        ok = [s[2] for s in sos if s[1] == 200]
        return {
            "phones": len(self.phones),
            "sos": len(sos),
            "sos_200": len(ok),
            "sos_failed": len(sos) - len(ok),
            "sos_200_p50_ms": p(ok, 50),
            "sos_200_p99_ms": p(ok, 99),
            "positions": len(pos),
            "positions_refused": sum(1 for s in pos if s[1] != 200),
        }

    def summary(self) -> str:
        def ms(values: list[float], p: float) -> str:
            if not values:
                return "—"
            values = sorted(values)
            return f"{values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000:.0f} ms"

        sos = [s for d in self.phones for s in d.sent if s[0] == "sos"]
        pos = [s for d in self.phones for s in d.sent if s[0] == "position"]
        ok = [s[2] for s in sos if s[1] == 200]
        return (
            f"Traccar Client (OsmAnd) : {len(self.phones)} téléphones, SOS {len(sos)} "
            f"(200 après enregistrement : {len(ok)}, échecs : {len(sos) - len(ok)}, "
            f"p50 {ms(ok, 50)}, p99 {ms(ok, 99)}), positions {len(pos)} "
            f"(refusées : {sum(1 for s in pos if s[1] != 200)})"
        )
