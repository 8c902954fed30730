"""The MQTT button bridge (``VIGIE_BUTTONS_FILE``): fixed buttons that already publish to MQTT.

Shelly Button1 (``shellies/<id>/input_event/0``, ``{"event": "S|SS|SSS|L"}``), zigbee2mqtt
(``zigbee2mqtt/<name>``, ``{"action": …}``, the TuYa SOS button's ``emergency`` included) and
Tasmota (``stat/<topic>/RESULT``, ``{"Button1": {"Action": …}}``) publish at QoS 0 and carry no
event id. So the bridge:

- makes the ``alert_id`` itself (one per press) and takes the device's registered site as the
  position (``src: fixed``);
- writes the press to a journal (one fsynced file) before anything else, hands it to the ingest
  writer like any alert, and forgets it only once it is committed: a database outage, a crash or
  a restart in between and the press is stored from the journal at the next start;
- keeps a persistent broker session subscribed at QoS 1, and the broker queues QoS 0 messages
  for it while the server is away (``queue_qos0_messages true`` in broker_config/): a press made
  while the server is down is delivered when it is back;
- turns the vendor's availability messages (Shelly ``…/online``, zigbee2mqtt
  ``…/availability``, Tasmota ``tele/<topic>/LWT``) into the device's presence.

The file is read whole before anything is loaded: a YAML error or a device that is not
registered is a French error naming the line, and ``vigie server`` exits 2.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Engine

from alert_server.db import read_scope
from alert_server.devices.models import Device
from alert_server.gateways.intake import GatewayAlert, Intake
from vigie.brokers.address import BrokerAddress
from vigie.timeutil import utcnow
from vigie.vocabulary import AlertKind

log = logging.getLogger(__name__)

KINDS = (AlertKind.SOS, AlertKind.SOS_SILENT)
_KEYS = ("device_id", "topic", "match", "kind", "availability")
_TOPIC_RE = re.compile(r"^[^#+\x00]{1,200}$")


class ButtonsFileError(ValueError):
    """``VIGIE_BUTTONS_FILE`` cannot be used; ``errors`` are French lines naming the line."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Button:
    device_id: str
    topic: str
    # Dotted JSON path ("action", "Button1.Action") → the values that mean "alert".
    match: tuple[tuple[str, tuple[str, ...]], ...]
    kind: str
    availability: str | None
    line: int

    def is_press(self, data: Any) -> bool:
        for path, values in self.match:
            value: Any = data
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            readable = isinstance(value, str | int | float) and not isinstance(value, bool)
            if readable and str(value) in values:
                return True
        return False


def default_availability(topic: str) -> str | None:
    """The vendor's availability topic for a button topic (None when not recognised)."""
    parts = topic.split("/")
    if len(parts) >= 3 and parts[0] == "shellies" and parts[2] == "input_event":
        return f"shellies/{parts[1]}/online"
    if len(parts) == 2 and parts[0] == "zigbee2mqtt":
        return f"{topic}/availability"
    if len(parts) == 3 and parts[0] == "stat" and parts[2] == "RESULT":
        return f"tele/{parts[1]}/LWT"
    return None


def parse_buttons(text: str, source: str) -> list[Button]:
    """Every button of the file, or ``ButtonsFileError`` with every error (none loaded)."""
    errors: list[str] = []

    def err(line: int, message: str) -> None:
        errors.append(f"{source}:{line}: {message}")

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        # The construct that is not closed (context) when there is one, else the problem.
        mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = getattr(exc, "problem_mark", None)
        where = f", relevé ligne {at.line + 1}" if at is not None and at.line + 1 != line else ""
        raise ButtonsFileError([f"{source}:{line}: YAML illisible ({problem}{where})"]) from exc
    if not isinstance(root, yaml.MappingNode):
        raise ButtonsFileError(
            [f"{source}:1: le fichier doit être un objet YAML (version, buttons)"]
        )
    top = {k.value: v for k, v in root.value if isinstance(k, yaml.ScalarNode)}
    for key, _ in root.value:
        if key.value not in ("version", "buttons"):
            err(key.start_mark.line + 1, f"clé inconnue « {key.value} » (version, buttons)")
    version = top.get("version")
    if version is None or not isinstance(version, yaml.ScalarNode) or version.value != "1":
        err(version.start_mark.line + 1 if version else 1, "« version: 1 » est attendu")
    items = top.get("buttons")
    buttons: list[Button] = []
    if not isinstance(items, yaml.SequenceNode):
        err(items.start_mark.line + 1 if items else 1, "« buttons » doit être une liste")
        raise ButtonsFileError(errors)
    seen_topics: dict[str, int] = {}
    for node in items.value:
        line = node.start_mark.line + 1
        if not isinstance(node, yaml.MappingNode):
            err(line, "chaque bouton est un objet (device_id, topic, match)")
            continue
        fields: dict[str, yaml.Node] = {}
        for k, v in node.value:
            if k.value not in _KEYS:
                err(k.start_mark.line + 1, f"clé inconnue « {k.value} » ({', '.join(_KEYS)})")
            fields[k.value] = v

        def scalar(
            name: str, fields: dict[str, yaml.Node] = fields, line: int = line
        ) -> str | None:
            v = fields.get(name)
            if v is None:
                return None
            if not isinstance(v, yaml.ScalarNode) or not v.value:
                err(v.start_mark.line + 1, f"« {name} » doit être un texte non vide")
                return None
            return str(v.value)

        device_id, topic = scalar("device_id"), scalar("topic")
        kind = scalar("kind") or AlertKind.SOS
        availability = scalar("availability")
        if device_id is None and "device_id" not in fields:
            err(line, "« device_id » manque")
        if topic is None and "topic" not in fields:
            err(line, "« topic » manque")
        if kind not in KINDS:
            err(
                fields["kind"].start_mark.line + 1,
                f"« kind » : {kind!r} n'est pas l'un de {', '.join(KINDS)}",
            )
        for name, value in (("topic", topic), ("availability", availability)):
            if value is not None and (not _TOPIC_RE.match(value) or value.startswith("$")):
                err(
                    fields[name].start_mark.line + 1,
                    f"« {name} » : {value!r} doit être un sujet MQTT exact (sans + ni #, ni $)",
                )
        if topic is not None:
            if topic in seen_topics:
                err(
                    fields["topic"].start_mark.line + 1,
                    f"sujet {topic!r} déjà utilisé ligne {seen_topics[topic]}",
                )
            seen_topics[topic] = line
        match = _parse_match(fields.get("match"), line, err)
        if device_id and topic and match and kind in KINDS:
            buttons.append(
                Button(
                    device_id, topic, match, kind, availability or default_availability(topic), line
                )
            )
    if not buttons and not errors:
        err(items.start_mark.line + 1, "aucun bouton dans « buttons »")
    if errors:
        raise ButtonsFileError(errors)
    return buttons


def _parse_match(
    node: yaml.Node | None, line: int, err: Any
) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
    if node is None:
        err(line, "« match » manque (les champs JSON qui veulent dire « alerte »)")
        return None
    if not isinstance(node, yaml.MappingNode) or not node.value:
        err(node.start_mark.line + 1, "« match » doit être un objet {champ: [valeurs]}")
        return None
    out: list[tuple[str, tuple[str, ...]]] = []
    for k, v in node.value:
        values = v.value if isinstance(v, yaml.SequenceNode) else [v]
        if (
            not isinstance(k, yaml.ScalarNode)
            or not k.value
            or not values
            or not all(isinstance(x, yaml.ScalarNode) and x.value for x in values)
        ):
            err(k.start_mark.line + 1, "« match » : chaque champ a une liste de valeurs non vides")
            return None
        out.append((str(k.value), tuple(str(x.value) for x in values)))
    return tuple(out)


def check_devices(engine: Engine, buttons: list[Button], source: str) -> None:
    """Every button's device is registered and not revoked, else ``ButtonsFileError``."""
    errors: list[str] = []
    with read_scope(engine) as session:
        for b in buttons:
            device = session.get(Device, b.device_id)
            if device is None:
                errors.append(
                    f"{source}:{b.line}: device_id {b.device_id!r} n'est pas un boîtier "
                    "enregistré (vigie devices add … --site-lat … --site-lon …)"
                )
            elif device.revoked_at is not None:
                errors.append(f"{source}:{b.line}: device_id {b.device_id!r} est révoqué")
    if errors:
        raise ButtonsFileError(errors)


def load_file(path: Path, engine: Engine | None = None) -> list[Button]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ButtonsFileError([f"{path}: illisible ({exc})"]) from exc
    buttons = parse_buttons(text, str(path))
    if engine is not None:
        check_devices(engine, buttons, str(path))
    return buttons


def acl_rules(buttons: list[Button]) -> tuple[str, str]:
    """(servers' listener rules: read exactly these topics; devices' listener rules: each
    device account may publish its own button's topics)."""
    servers = ["# Buttons (VIGIE_BUTTONS_FILE): read access to exactly these topics."]
    devices = []
    for b in buttons:
        topics = [b.topic] + ([b.availability] if b.availability else [])
        servers += [f"topic read {t}" for t in topics]
        devices.append(f"user {b.device_id}\n" + "".join(f"topic write {t}\n" for t in topics))
    return "\n".join(servers) + "\n", "".join(devices)


# -- the journal ------------------------------------------------------------------------------


class Journal:
    """One fsynced file per press not yet committed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, alert: GatewayAlert, received_at: datetime) -> None:
        record = {
            "device_id": alert.device_id,
            "alert_id": alert.alert_id,
            "kind": alert.kind,
            "ts": alert.ts.isoformat(),
            "lat": alert.lat,
            "lon": alert.lon,
            "received_at": received_at.isoformat(),
        }
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".press-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.folder / f"{alert.alert_id}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def forget(self, alert_id: str) -> None:
        (self.folder / f"{alert_id}.json").unlink(missing_ok=True)

    def pending(self) -> list[tuple[GatewayAlert, datetime]]:
        out = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                r = json.loads(path.read_text(encoding="utf-8"))
                alert = GatewayAlert(
                    device_id=r["device_id"],
                    alert_id=r["alert_id"],
                    kind=r["kind"],
                    ts=datetime.fromisoformat(r["ts"]),
                    lat=r["lat"],
                    lon=r["lon"],
                    src="fixed",
                )
                out.append((alert, datetime.fromisoformat(r["received_at"])))
            except (OSError, ValueError, KeyError, TypeError):
                log.exception("unreadable button journal entry %s (kept)", path)
        return out


# -- the bridge -------------------------------------------------------------------------------


class ButtonMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.presses = Counter(
            "vigie_button_presses",
            "Button presses that are alerts",
            ["device_id"],
            registry=registry,
        )
        self.ignored = Counter(
            "vigie_button_messages_ignored",
            "Button messages that are not a press (another gesture, unreadable)",
            ["reason"],
            registry=registry,
        )


def _availability(payload: bytes) -> bool | None:
    text = payload.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = text
    if isinstance(data, dict):
        data = data.get("state")
    if isinstance(data, bool):
        return data
    value = str(data).strip().lower()
    return {"online": True, "true": True, "offline": False, "false": False}.get(value)


class ButtonBridge:
    def __init__(
        self,
        buttons: list[Button],
        *,
        intake: Intake,
        engine: Engine,
        journal: Journal,
        mqtt_url: str,
        client_id: str,
        session_expiry_s: int,
        shared_group: str,
        metrics: ButtonMetrics,
    ) -> None:
        self.buttons = {b.topic: b for b in buttons}
        self.availability = {b.availability: b for b in buttons if b.availability}
        self.intake = intake
        self.engine = engine
        self.journal = journal
        self.metrics = metrics
        self.shared_group = shared_group
        self.session_expiry_s = session_expiry_s
        self.sites: dict[str, tuple[float | None, float | None]] = {}
        self.address = BrokerAddress.parse(mqtt_url)
        self.connected = threading.Event()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        if self.address.username:
            client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            client.tls_set()
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *a: self.connected.clear()
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self.client = client
        self._resubscribe: threading.Timer | None = None

    def start(self) -> None:
        with read_scope(self.engine) as session:
            for b in self.buttons.values():
                d = session.get(Device, b.device_id)
                self.sites[b.device_id] = (d.site_lat, d.site_lon) if d else (None, None)
        # Presses journaled by a previous run and never committed: stored now.
        for alert, received_at in self.journal.pending():
            log.warning("button press from the journal alert_id=%s", alert.alert_id)
            self._submit(alert, received_at)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        self.client.connect_async(
            self.address.host, self.address.port, keepalive=30, clean_start=False, properties=props
        )
        self.client.loop_start()

    def stop(self) -> None:
        if self._resubscribe is not None:
            self._resubscribe.cancel()
        self.client.disconnect()
        self.client.loop_stop()

    def _filters(self) -> list[tuple[str, int]]:
        share = f"$share/{self.shared_group}/" if self.shared_group else ""
        # QoS 1 subscriptions on a persistent session: the broker queues the buttons' QoS 0
        # messages while this server is away (queue_qos0_messages).
        topics = [*self.buttons, *self.availability]
        return [(share + t if t in self.buttons else t, 1) for t in topics]

    def _on_connect(self, client: mqtt.Client, u: Any, flags: Any, rc: Any, p: Any) -> None:
        if rc.is_failure:
            log.error("buttons: broker refused the connection: %s", rc)
            return
        client.subscribe(self._filters())
        self.connected.set()

    def _on_subscribe(self, client: mqtt.Client, u: Any, mid: int, codes: Any, p: Any) -> None:
        if any(c.is_failure for c in codes):
            # The broker's ACL may not be reloaded yet (we just rewrote it): try again.
            log.warning("buttons: subscription refused (%s); retrying in 1 s", codes)
            self._resubscribe = threading.Timer(1.0, lambda: client.subscribe(self._filters()))
            self._resubscribe.daemon = True
            self._resubscribe.start()

    def _on_message(self, client: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self.handle(msg.topic, bytes(msg.payload), msg.retain)
        except Exception:
            log.exception("buttons: message on %s failed", msg.topic)

    def handle(self, topic: str, payload: bytes, retain: bool = False) -> None:
        now = utcnow()
        if topic in self.availability:
            online = _availability(payload)
            if online is None:
                self.metrics.ignored.labels("availability_unreadable").inc()
                return
            self.intake.seen(self.availability[topic].device_id, now, online=online)
            return
        button = self.buttons.get(topic)
        if button is None:
            return
        try:
            data = json.loads(payload)
        except ValueError:
            self.metrics.ignored.labels("unreadable").inc()
            log.warning("buttons: unreadable message on %s", topic)
            return
        if retain or not button.is_press(data):
            # Another gesture, a state report, or an old retained message: a sign of life.
            batt = data.get("battery") if isinstance(data, dict) else None
            batt = batt if isinstance(batt, int) and 0 <= batt <= 100 else None
            self.intake.seen(button.device_id, now, batt=batt)
            self.metrics.ignored.labels("retained" if retain else "not_a_press").inc()
            return
        lat, lon = self.sites.get(button.device_id, (None, None))
        alert = GatewayAlert(
            device_id=button.device_id,
            alert_id=f"btn-{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:16]}",
            kind=button.kind,
            ts=now,
            lat=lat,
            lon=lon,
            src="fixed",
        )
        # Durable first: from here on the press survives a crash, a restart, a database outage.
        self.journal.write(alert, now)
        self.metrics.presses.labels(button.device_id).inc()
        log.info("button press device_id=%s alert_id=%s", button.device_id, alert.alert_id)
        self._submit(alert, now)
        self.intake.seen(button.device_id, now)

    def _submit(self, alert: GatewayAlert, received_at: datetime) -> None:
        alert_id = alert.alert_id
        self.intake.submit_alert(alert, received_at, lambda: self.journal.forget(alert_id))


def journal_dir(buttons_file: Path, configured: Path | None) -> Path:
    return configured or buttons_file.parent / ".vigie-buttons-journal"
