"""A simulated alert device that behaves as protocol.md says a real one must.

- Own credentials: username = client id = ``device_id``; MQTT 5 (3.1.1 for the embedded broker).
- Retained ``status`` ``online`` on connect; last will ``offline`` (retained, QoS 1).
- Heartbeats with battery drain (and charging), positions with honest accuracy.
- The button (``sos``, ``sos_silent``: a silent alert never shows or sounds anything), falls
  with a local pre-alarm the worker can cancel before anything is sent, cancel with the PIN or
  the duress PIN (the device cannot tell them apart and shows ``alert.cancelled`` either way),
  timed visits (sessions), ``locate`` answered with a fresh ``pos``.
- An offline queue: an alert is kept and re-sent with the SAME ``alert_id`` every 2–5 s
  (backoff with jitter) until ``alert.received`` arrives for it, across reconnects and broker
  outages.
- Every command received is recorded with its receive time (monotonic and wall clock).

All MQTT work runs on the device's ``Shard`` thread (see ``reactor.py``); the public methods
may be called from any thread and hand their work over.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device_sim.geo import Fix, FixedSite, Mobility
from device_sim.reactor import Shard, TimerHandle
from vigie import topics
from vigie.timeutil import rfc3339
from vigie.vocabulary import UplinkTopic

log = logging.getLogger(__name__)

Role = Literal["nurse", "pharmacist", "other"]
SessionReaction = Literal["ignore", "checkin", "extend"]

# What the device shows the worker (French: it is the worker's screen). A silent alert shows
# none of these; a duress cancel shows exactly what a real cancel shows.
UI_SENDING = "Alerte en cours d'envoi…"
UI_RECEIVED = "Alerte reçue par le centre"
UI_ACKNOWLEDGED = "Prise en charge : les secours sont prévenus"
UI_CANCELLED = "Alerte annulée"
UI_RESOLVED = "Alerte close"
UI_PIN_ENTERED = "Code saisi"
UI_FALL = "Chute détectée : annulez avant l'envoi de l'alerte"
UI_FALL_CANCELLED = "Pré-alarme annulée"
UI_SESSION_WARNING = "Visite dépassée : confirmez que tout va bien"
UI_RAISED = "Alerte déclenchée par le centre (visite sans nouvelles)"
UI_PIN_REFUSED = "Code refusé"
UI_PIN_LOCKED = "Annulation bloquée : trop de codes erronés"
UI_WATCHED = "Visite suivie"
UI_NOT_WATCHED = "Visite NON suivie : le centre n'a pas accepté le message"


@dataclass(frozen=True)
class BrokerTarget:
    """Where devices connect: ``mqtt://host:port`` and the MQTT version (``5`` or ``3.1.1``)."""

    host: str = "127.0.0.1"
    port: int = 1883
    protocol: str = "5"

    @classmethod
    def parse(cls, url: str, protocol: str = "5") -> BrokerTarget:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme != "mqtt":
            raise ValueError(f"adresse de broker non prise en charge : {url!r} (mqtt://hôte:port)")
        if protocol not in ("5", "3.1.1"):
            raise ValueError(f"version MQTT inconnue : {protocol!r} (5 ou 3.1.1)")
        return cls(parts.hostname or "127.0.0.1", parts.port or 1883, protocol)


@dataclass
class DeviceConfig:
    hb_interval_s: float = 60.0
    hb_qos: int = 0
    # Separate ``pos`` messages between heartbeats (None: positions ride on heartbeats only).
    pos_interval_s: float | None = None
    # An unreceipted alert is re-sent after resend_min_s, then every resend_max_s (protocol.md
    # 1.1: 5 s, then every 10 s), each delay ±20 %.
    resend_min_s: float = 5.0
    resend_max_s: float = 10.0
    # Local pre-alarm of automatic alarms (DATI convention: ~30 s; never for the button).
    fall_cancel_window_s: float = 30.0
    keepalive_s: int = 60
    # A persistent session keeps commands sent while the device was briefly away.
    persistent_session: bool = True
    session_expiry_s: int = 3600
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 5.0
    # A CONNECT left unanswered this long is abandoned and tried again. A broker node can accept
    # the TCP connection and never answer it (RabbitMQ 3.10's MQTT plugin during a failover,
    # tests/chaos/test_rabbit_cluster.py); without this the device waited for ever.
    connack_timeout_s: float = 30.0
    on_session_warning: SessionReaction = "ignore"
    extend_by_s: float = 900.0
    # Simulated seconds per real second, for movement and battery only: message timestamps
    # are always the real clock (the server flags timestamps from the future).
    time_scale: float = 1.0
    # Keep every uplink message (scenarios inspect them); load runs keep counters only.
    keep_sent_log: bool = True


@dataclass
class ReceivedCommand:
    type: str
    alert_id: str | None
    payload: dict[str, Any]
    at_mono: float
    at_wall: float


@dataclass
class AlertRecord:
    """One press (or fall) as the device lived it."""

    alert_id: str
    kind: str
    pressed_mono: float
    pressed_wall: float
    silent: bool
    # pre_alarm → (cancelled_locally | queued) → received
    state: str = "queued"
    payload: bytes = b""
    sends: int = 0  # publishes of this alert (ours + paho's own re-sends after a reconnect)
    first_sent_mono: float | None = None
    received_mono: float | None = None
    received_wall: float | None = None
    receipts: int = 0
    last_info: mqtt.MQTTMessageInfo | None = None
    resend_delay_s: float = 0.0
    timer: TimerHandle | None = None

    @property
    def latency_s(self) -> float | None:
        """Press → first ``alert.received``."""
        if self.received_mono is None:
            return None
        return self.received_mono - self.pressed_mono


@dataclass
class SentMessage:
    suffix: str
    body: dict[str, Any]
    at_mono: float


@dataclass
class Session:
    session_id: str
    expected_end: datetime
    memo: str | None = None
    warnings: int = 0


class _Client(mqtt.Client):
    """paho's client with a non-blocking TCP connect.

    paho 2.2 connects with ``socket.create_connection`` (blocking, up to its connect timeout).
    With thousands of devices on one thread, a connect that waits for a SYN retransmission
    (the broker's accept queue is full: ~1 s) would stall every device of the shard. Here the
    connect only starts; the socket becomes writable when it completes, and paho then writes
    CONNECT from the shard loop (a refused connect surfaces as an error on that write, which
    paho reports as a lost connection). Overrides a private paho method: paho is pinned.
    """

    def _create_socket_connection(self) -> socket.socket:
        host, port = self._host, self._port
        family, type_, proto, _, sockaddr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        err = sock.connect_ex(sockaddr)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            sock.close()
            raise OSError(err, os.strerror(err))
        return sock


def _now_wall() -> datetime:
    return datetime.now(UTC)


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class SimDevice:
    def __init__(
        self,
        device_id: str,
        password: str,
        *,
        role: Role,
        mobility: Mobility | None,
        shard: Shard,
        broker: BrokerTarget,
        config: DeviceConfig | None = None,
        rng: random.Random | None = None,
        pin: str | None = None,
        duress_pin: str | None = None,
        battery_pct: float | None = None,
    ) -> None:
        self.device_id = device_id
        self.password = password
        self.role = role
        self.mobility = mobility
        self.shard = shard
        self.broker = broker
        self.config = config or DeviceConfig()
        self.rng = rng or random.Random()
        self.pin = pin
        self.duress_pin = duress_pin
        on_mains = isinstance(mobility, FixedSite)
        self.battery = (
            battery_pct
            if battery_pct is not None
            else (100.0 if on_mains else self.rng.uniform(55, 100))
        )
        self.on_mains = on_mains
        self.drain_pct_per_h = self.rng.uniform(3.0, 6.0)
        self.car_charger = self.rng.random() < 0.5
        self._battery_at_mono = time.monotonic()
        self._sim_start_mono = time.monotonic()
        self._sim_start_wall = _now_wall()
        self.mnc = self.rng.choice((1, 10, 15, 20))

        self.client: mqtt.Client | None = None
        self.connected = threading.Event()  # CONNACK accepted
        self.ready = threading.Event()  # cmd subscription acknowledged
        self.connect_count = 0
        self.connect_attempts = 0
        self.last_connect_error: str | None = None
        self._reconnect_delay_s = self.config.reconnect_min_s
        self._running = False
        self._dead = False
        self._lock = threading.Lock()
        self._commands: list[ReceivedCommand] = []
        self._ui: list[tuple[str | None, str]] = []
        self._sent: list[SentMessage] = []
        self.sent_counts: dict[str, int] = {}
        self.alerts: dict[str, AlertRecord] = {}
        self._outbox: list[
            tuple[topics.Uplink, bytes]
        ] = []  # cancels, sessions pressed while offline
        self.session: Session | None = None
        self._hb_timer: TimerHandle | None = None
        self._pos_timer: TimerHandle | None = None
        self._reconnect_timer: TimerHandle | None = None

    # ======================================================================================
    # Public API (any thread)
    # ======================================================================================
    def start(self) -> None:
        self.shard.call_soon(self._start)

    def stop(self, announce_offline: bool = True) -> None:
        """Switch off cleanly: ``offline`` status, DISCONNECT (the will is not published)."""
        self.shard.call_soon(self._stop, announce_offline)

    def drop(self) -> None:
        """Vanish without a word (battery pulled, tunnel): the broker publishes the will."""
        self.shard.call_soon(self._drop)

    def press(self, kind: str = "sos") -> str:
        """The button. Returns the ``alert_id`` (generated by the device, kept across re-sends)."""
        rec = self._new_record(kind)
        self.shard.call_soon(self._raise_alert, rec)
        return rec.alert_id

    def fall(self, cancel_window_s: float | None = None) -> str:
        """Man-down detected: a local pre-alarm, then the alert unless cancelled in time."""
        rec = self._new_record("fall")
        rec.state = "pre_alarm"
        window = self.config.fall_cancel_window_s if cancel_window_s is None else cancel_window_s
        self.shard.call_soon(self._start_pre_alarm, rec, window)
        return rec.alert_id

    def cancel_fall(self, alert_id: str) -> bool:
        """The worker cancels the pre-alarm on the device: nothing is sent. False if too late."""
        rec = self.alerts.get(alert_id)
        if rec is None:
            return False
        return bool(self.shard.run_sync(self._cancel_pre_alarm, rec))

    def cancel(self, alert_id: str, pin: str) -> None:
        """The worker types a PIN to cancel an alert; the server decides what it means."""
        body = {"v": 1, "alert_id": alert_id, "ts": rfc3339(_now_wall()), "pin": pin}
        self.shard.call_soon(self._ui_add, alert_id, UI_PIN_ENTERED, True)
        self.shard.call_soon(self._send, "cancel", body, 1)

    def session_start(self, duration_s: float, memo: str | None = None) -> str:
        session_id = str(uuid.uuid4())
        self.shard.call_soon(self._session_start, session_id, duration_s, memo)
        return session_id

    def session_extend(self, by_s: float) -> None:
        self.shard.call_soon(self._session_action, "extend", by_s)

    def session_checkin(self) -> None:
        self.shard.call_soon(self._session_action, "checkin", None)

    def session_end(self) -> None:
        self.shard.call_soon(self._session_action, "end", None)

    def send_position(self) -> None:
        self.shard.call_soon(self._send_pos, 1)

    def send_heartbeat(self) -> None:
        self.shard.call_soon(self._send_heartbeat)

    def pin_for(self, which: str) -> str:
        """``pin``, ``duress`` or ``wrong`` → the digits the worker types."""
        if which == "pin" and self.pin:
            return self.pin
        if which == "duress" and self.duress_pin:
            return self.duress_pin
        if which == "wrong":
            return "".join(self.rng.choice("0123456789") for _ in range(4)) + "0"
        raise ValueError(f"{self.device_id}: no {which!r} PIN configured")

    # -- inspection (any thread) -----------------------------------------------------------
    def commands(
        self, type_: str | None = None, alert_id: str | None = None
    ) -> list[ReceivedCommand]:
        with self._lock:
            return [
                c
                for c in self._commands
                if (type_ is None or c.type == type_)
                and (alert_id is None or c.alert_id == alert_id)
            ]

    def ui(self, alert_id: str | None = None) -> list[str]:
        """What the screen showed (for one alert, or everything)."""
        with self._lock:
            return [text for aid, text in self._ui if alert_id is None or aid == alert_id]

    def sent(self, suffix: str | None = None) -> list[SentMessage]:
        with self._lock:
            return [m for m in self._sent if suffix is None or m.suffix == suffix]

    def pending_alerts(self) -> list[AlertRecord]:
        with self._lock:
            return [r for r in self.alerts.values() if r.state == "queued"]

    def alert_records(self) -> list[AlertRecord]:
        with self._lock:
            return list(self.alerts.values())

    # ======================================================================================
    # Shard thread
    # ======================================================================================
    def _new_record(self, kind: str) -> AlertRecord:
        rec = AlertRecord(
            alert_id=str(uuid.uuid4()),
            kind=kind,
            pressed_mono=time.monotonic(),
            pressed_wall=time.time(),
            silent=kind == "sos_silent",
        )
        with self._lock:
            self.alerts[rec.alert_id] = rec
        return rec

    def _ui_add(self, alert_id: str | None, text: str, visible: bool = True) -> None:
        rec = self.alerts.get(alert_id) if alert_id else None
        if rec is not None and rec.silent:
            # A discreet alert gives no visible or audible sign, whatever happens next.
            return
        if visible:
            with self._lock:
                self._ui.append((alert_id, text))

    # -- connection ------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        v5 = self.broker.protocol == "5"
        if v5:
            client = _Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=self.device_id, protocol=mqtt.MQTTv5
            )
        else:
            client = _Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=self.device_id,
                protocol=mqtt.MQTTv311,
                clean_session=not self.config.persistent_session,
            )
        client.username_pw_set(self.device_id, self.password)
        client.will_set(
            topics.uplink(self.device_id, UplinkTopic.STATUS),
            _dumps({"v": 1, "state": "offline"}),
            qos=1,
            retain=True,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self.shard.attach(client)
        props = None
        clean_start: Any = mqtt.MQTT_CLEAN_START_FIRST_ONLY
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = (
                self.config.session_expiry_s if self.config.persistent_session else 0
            )
            clean_start = not self.config.persistent_session
        client.connect_async(
            self.broker.host,
            self.broker.port,
            keepalive=self.config.keepalive_s,
            clean_start=clean_start,
            properties=props,
        )
        return client

    def _start(self) -> None:
        if self._running or self._dead:
            return
        self._running = True
        if self.client is None:
            # Kept across stop/start: paho holds unacknowledged alerts it will re-send.
            self.client = self._make_client()
        self._try_connect()
        self._hb_timer = self.shard.call_later(
            self.rng.uniform(0.2, 1.0) * self.config.hb_interval_s, self._heartbeat_tick
        )
        if self.config.pos_interval_s:
            self._pos_timer = self.shard.call_later(
                self.rng.uniform(0.2, 1.0) * self.config.pos_interval_s, self._pos_tick
            )

    def _try_connect(self) -> None:
        self._reconnect_timer = None
        if not self._running or self.client is None:
            return
        try:
            # Starts a non-blocking TCP connect (see _Client); CONNECT is queued and written by
            # the shard loop once the socket is writable.
            self.client.reconnect()
        except OSError as exc:
            self.last_connect_error = f"{type(exc).__name__}: {exc}"
            self._schedule_reconnect()
            return
        self.connect_attempts += 1
        self.shard.call_later(
            self.config.connack_timeout_s, self._connack_overdue, self.connect_attempts
        )

    def _connack_overdue(self, attempt: int) -> None:
        """No CONNACK for this attempt: try again (``reconnect`` closes the silent socket)."""
        if not self._running or self._dead or attempt != self.connect_attempts:
            return
        if self.connected.is_set() or self._reconnect_timer is not None:
            return
        self.last_connect_error = f"no CONNACK within {self.config.connack_timeout_s:.0f} s"
        log.warning("device_id=%s %s: connecting again", self.device_id, self.last_connect_error)
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if not self._running or self._reconnect_timer is not None:
            return
        delay = self._reconnect_delay_s * self.rng.uniform(0.8, 1.2)
        self._reconnect_delay_s = min(self.config.reconnect_max_s, self._reconnect_delay_s * 2)
        self._reconnect_timer = self.shard.call_later(delay, self._try_connect)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            self.last_connect_error = f"refused: {reason_code}"
            log.warning("device_id=%s connection refused: %s", self.device_id, reason_code)
            return
        self.connect_count += 1
        self._reconnect_delay_s = self.config.reconnect_min_s
        self.last_connect_error = None
        # Subscribe before anything is published: the broker handles one connection's packets
        # in order, so the subscription exists before the server can answer an alert.
        client.subscribe(topics.cmd(self.device_id), qos=1)
        self.connected.set()
        self._publish_raw(
            UplinkTopic.STATUS, _dumps({"v": 1, "state": "online"}), qos=1, retain=True
        )
        for rec in self.pending_alerts():
            if rec.last_info is not None and not rec.last_info.is_published():
                # Still unacknowledged from the previous connection: paho re-sends it itself
                # (same packet, DUP flag) right after this CONNACK.
                rec.sends += 1
            else:
                self._publish_alert(rec)
            if rec.timer is None:
                # Pressed while the device was off, or its timer was stopped with it.
                self._arm_resend(rec)
        outbox, self._outbox = self._outbox, []
        for suffix, payload in outbox:
            self._publish_raw(suffix, payload, qos=1)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any
    ) -> None:
        self.ready.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self.connected.clear()
        self.ready.clear()
        if self._running and not self._dead:
            self._schedule_reconnect()

    def _stop(self, announce_offline: bool) -> None:
        if not self._running:
            return
        if announce_offline and self.client is not None and self.connected.is_set():
            self._publish_raw(
                UplinkTopic.STATUS, _dumps({"v": 1, "state": "offline"}), qos=1, retain=True
            )
        self._running = False
        self._cancel_timers()
        if self.client is not None:
            self.client.disconnect()
        # The DISCONNECT is written by the shard loop; the socket is released on its close.

    def _drop(self) -> None:
        self._dead = True
        self._running = False
        self._cancel_timers()
        if self.client is not None:
            sock = self.client.socket()
            self.shard.detach(self.client)
            if sock is not None:
                sock.close()  # no DISCONNECT packet: the broker sees a dead link
        self.connected.clear()
        self.ready.clear()

    def _cancel_timers(self) -> None:
        for t in (self._hb_timer, self._pos_timer, self._reconnect_timer):
            if t is not None:
                t.cancel()
        for rec in self.alert_records():
            if rec.timer is not None:
                rec.timer.cancel()
                rec.timer = None

    # -- uplink ----------------------------------------------------------------------------
    def _publish_raw(
        self, suffix: topics.Uplink, payload: bytes, qos: int, retain: bool = False
    ) -> mqtt.MQTTMessageInfo | None:
        if self.client is None or not self.connected.is_set():
            return None
        info = self.client.publish(
            topics.uplink(self.device_id, suffix), payload, qos=qos, retain=retain
        )
        self.sent_counts[suffix] = self.sent_counts.get(suffix, 0) + 1
        if self.config.keep_sent_log:
            with self._lock:
                self._sent.append(SentMessage(suffix, json.loads(payload), time.monotonic()))
        return info

    def _send(self, suffix: topics.Uplink, body: dict[str, Any], qos: int) -> None:
        payload = _dumps(body)
        if self.connected.is_set():
            self._publish_raw(suffix, payload, qos=qos)
        elif qos > 0:
            self._outbox.append((suffix, payload))

    def sim_now(self) -> datetime:
        elapsed = (time.monotonic() - self._sim_start_mono) * self.config.time_scale
        return self._sim_start_wall + timedelta(seconds=elapsed)

    def current_fix(self, age_s: float = 0.0) -> Fix | None:
        if self.mobility is None:
            return None
        fix = self.mobility.fix(self.rng, self.sim_now())
        if fix is None:
            return None
        # Movement follows simulated time; the timestamp is the real clock.
        return dataclasses.replace(fix, at=_now_wall() - timedelta(seconds=age_s))

    def _battery_now(self) -> tuple[int, bool]:
        now = time.monotonic()
        hours = (now - self._battery_at_mono) * self.config.time_scale / 3600
        self._battery_at_mono = now
        charging = self.on_mains
        if not charging and self.car_charger and hasattr(self.mobility, "driving"):
            charging = bool(self.mobility.driving(self.sim_now()))  # type: ignore[union-attr]
        if charging:
            self.battery = min(100.0, self.battery + 25.0 * hours)
        else:
            self.battery = max(1.0, self.battery - self.drain_pct_per_h * hours)
        return round(self.battery), charging

    def _cells(self, fix: Fix | None) -> list[dict[str, int]] | None:
        if fix is None or self.on_mains:
            return None
        # A serving cell that changes with the area, as a phone's does.
        lac = (int(fix.lat * 20) * 1000 + int(fix.lon * 20)) % 65_000 + 1
        cid = (int(fix.lat * 200) * 7919 + int(fix.lon * 200) * 104_729) % 268_435_455
        return [
            {
                "mcc": 208,
                "mnc": self.mnc,
                "lac": lac,
                "cid": cid,
                "rssi": self.rng.randint(-105, -65),
            }
        ]

    def _alert_payload(self, rec: AlertRecord) -> bytes:
        body: dict[str, Any] = {
            "v": 1,
            "alert_id": rec.alert_id,
            "kind": rec.kind,
            "ts": rfc3339(datetime.fromtimestamp(rec.pressed_wall, UTC)),
        }
        fix = self.current_fix(age_s=self.rng.uniform(0.0, 3.0))
        if fix is not None:
            body["pos"] = fix.as_json()
        cells = self._cells(fix)
        if cells:
            body["cells"] = cells
        body["batt"] = self._battery_now()[0]
        return _dumps(body)

    def _raise_alert(self, rec: AlertRecord) -> None:
        if rec.state not in ("queued", "pre_alarm"):
            return
        rec.state = "queued"
        rec.payload = self._alert_payload(rec)
        rec.resend_delay_s = self.config.resend_min_s
        self._ui_add(rec.alert_id, UI_SENDING)
        self._publish_alert(rec)
        self._arm_resend(rec)

    def _publish_alert(self, rec: AlertRecord) -> None:
        info = self._publish_raw(UplinkTopic.ALERT, rec.payload, qos=1)
        if info is None:
            return  # offline: kept in the queue, sent on the next CONNACK
        rec.last_info = info
        rec.sends += 1
        if rec.first_sent_mono is None:
            rec.first_sent_mono = time.monotonic()

    def _arm_resend(self, rec: AlertRecord) -> None:
        delay = rec.resend_delay_s * self.rng.uniform(0.8, 1.2)
        rec.resend_delay_s = self.config.resend_max_s
        rec.timer = self.shard.call_later(delay, self._resend_due, rec)

    def _resend_due(self, rec: AlertRecord) -> None:
        rec.timer = None
        if rec.state != "queued" or not self._running:
            return  # still queued if not confirmed: the next CONNACK re-arms it
        if self.connected.is_set() and (rec.last_info is None or rec.last_info.is_published()):
            # The broker has it (PUBACK) but the server has not confirmed storing it: send the
            # same alert again; the server treats repeats as the same alert.
            self._publish_alert(rec)
        self._arm_resend(rec)

    def _start_pre_alarm(self, rec: AlertRecord, window_s: float) -> None:
        self._ui_add(rec.alert_id, UI_FALL)
        rec.timer = self.shard.call_later(window_s, self._raise_alert, rec)

    def _cancel_pre_alarm(self, rec: AlertRecord) -> bool:
        if rec.state != "pre_alarm":
            return False
        if rec.timer is not None:
            rec.timer.cancel()
        rec.state = "cancelled_locally"
        self._ui_add(rec.alert_id, UI_FALL_CANCELLED)
        return True

    def _heartbeat_tick(self) -> None:
        if not self._running:
            return
        self._send_heartbeat()
        self._hb_timer = self.shard.call_later(
            self.config.hb_interval_s * self.rng.uniform(0.95, 1.05), self._heartbeat_tick
        )

    def _send_heartbeat(self) -> None:
        batt, charging = self._battery_now()
        body: dict[str, Any] = {
            "v": 1,
            "ts": rfc3339(_now_wall()),
            "batt": batt,
            "charging": charging,
        }
        fix = self.current_fix(age_s=self.rng.uniform(0.0, 5.0))
        if fix is not None:
            body["pos"] = fix.as_json()
        self._publish_raw(UplinkTopic.HB, _dumps(body), qos=self.config.hb_qos)

    def _pos_tick(self) -> None:
        if not self._running or not self.config.pos_interval_s:
            return
        self._send_pos(0)
        self._pos_timer = self.shard.call_later(
            self.config.pos_interval_s * self.rng.uniform(0.95, 1.05), self._pos_tick
        )

    def _send_pos(self, qos: int) -> None:
        fix = self.current_fix()
        if fix is None:
            return  # indoors without a fix and no configured site to report
        self._send(UplinkTopic.POS, {"v": 1, "ts": rfc3339(_now_wall()), "pos": fix.as_json()}, qos)

    def _session_body(self, action: str, session: Session) -> dict[str, Any]:
        body: dict[str, Any] = {
            "v": 1,
            "session_id": session.session_id,
            "action": action,
            "ts": rfc3339(_now_wall()),
        }
        if action in ("start", "extend"):
            body["expected_end"] = rfc3339(session.expected_end)
        if action == "start" and session.memo:
            body["memo"] = session.memo
        fix = self.current_fix()
        if fix is not None:
            body["pos"] = fix.as_json()
        return body

    def _session_start(self, session_id: str, duration_s: float, memo: str | None) -> None:
        self.session = Session(session_id, _now_wall() + timedelta(seconds=duration_s), memo)
        self._send(UplinkTopic.SESSION, self._session_body("start", self.session), 1)

    def _session_action(self, action: str, by_s: float | None) -> None:
        if self.session is None:
            log.warning("device_id=%s: %s without a session", self.device_id, action)
            return
        if action == "extend" and by_s is not None:
            base = max(self.session.expected_end, _now_wall())
            self.session.expected_end = base + timedelta(seconds=by_s)
        self._send(UplinkTopic.SESSION, self._session_body(action, self.session), 1)
        if action == "end":
            self.session = None

    # -- downlink --------------------------------------------------------------------------
    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        at_mono, at_wall = time.monotonic(), time.time()
        try:
            body = json.loads(msg.payload)
        except ValueError:
            log.warning("device_id=%s: unreadable command %r", self.device_id, msg.payload[:200])
            return
        if not isinstance(body, dict):
            return
        type_ = str(body.get("type"))
        alert_id = body.get("alert_id") if isinstance(body.get("alert_id"), str) else None
        with self._lock:
            self._commands.append(ReceivedCommand(type_, alert_id, body, at_mono, at_wall))
        handler: Callable[[dict[str, Any], str | None, float, float], None] | None = {
            "alert.received": self._on_received,
            "alert.acknowledged": self._on_alert_state,
            "alert.cancelled": self._on_alert_state,
            "alert.resolved": self._on_alert_state,
            "alert.raised": self._on_alert_state,
            "cancel.rejected": self._on_alert_state,
            "session.accepted": self._on_alert_state,
            "session.rejected": self._on_alert_state,
            "session.warning": self._on_session_warning,
            "locate": self._on_locate,
        }.get(type_)
        if handler is not None:
            handler(body, alert_id, at_mono, at_wall)

    def _on_received(
        self, body: dict[str, Any], alert_id: str | None, mono: float, wall: float
    ) -> None:
        rec = self.alerts.get(alert_id or "")
        if rec is None:
            return  # e.g. a receipt for an alert of a previous run, kept by the session
        rec.receipts += 1
        if rec.received_mono is None:
            rec.received_mono, rec.received_wall = mono, wall
            self._ui_add(rec.alert_id, UI_RECEIVED)
        if rec.state == "queued":
            rec.state = "received"  # stop re-sending
            if rec.timer is not None:
                rec.timer.cancel()
                rec.timer = None

    def _on_alert_state(
        self, body: dict[str, Any], alert_id: str | None, mono: float, wall: float
    ) -> None:
        type_ = str(body.get("type"))
        text = {
            "alert.acknowledged": UI_ACKNOWLEDGED,
            "alert.cancelled": UI_CANCELLED,
            "alert.resolved": UI_RESOLVED,
            "alert.raised": UI_RAISED,
            "cancel.rejected": UI_PIN_LOCKED if body.get("reason") == "locked" else UI_PIN_REFUSED,
            "session.accepted": UI_WATCHED,
            "session.rejected": UI_NOT_WATCHED,
        }[type_]
        self._ui_add(alert_id, text)

    def _on_session_warning(
        self, body: dict[str, Any], alert_id: str | None, mono: float, wall: float
    ) -> None:
        if self.session is not None:
            self.session.warnings += 1
        self._ui_add(None, UI_SESSION_WARNING)
        if self.config.on_session_warning == "checkin":
            self._session_action("checkin", None)
        elif self.config.on_session_warning == "extend":
            self._session_action("extend", self.config.extend_by_s)

    def _on_locate(
        self, body: dict[str, Any], alert_id: str | None, mono: float, wall: float
    ) -> None:
        self._send_pos(1)
