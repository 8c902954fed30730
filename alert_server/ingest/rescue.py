"""Taking over the MQTT session of a server that died, on a shared subscription (mosquitto#2662).

The problem: Mosquitto keeps a server's persistent session in the ``$share`` round robin after
the server is gone (its session outlives it, one day by default), so one message in N is parked
there. A parked alert gets through only when its device re-sends it (every 5–10 s) and the copy
lands on a live server; a heartbeat or a status is not re-sent at all.

The mitigation, on the servers' side (nothing to change in the broker):

- Presence. Every server of a shared group keeps a retained ``online`` on
  ``vigie/v1/servers/{client id}`` and leaves a retained ``offline`` as its last will (sent by the
  broker when the connection ends without a DISCONNECT: a SIGKILL, a crash, a lost host). A clean
  stop publishes ``stopped`` (nothing is in flight then: everything held was committed and
  acknowledged). Every server reads every presence (a plain, non-shared subscription).
- Election. When a server goes ``offline``, the survivor that comes first after it in the sorted
  list of online client ids (cyclically) takes its session over; the others do nothing. Servers
  that see different lists at worst both try: the second connection under that client id closes
  the first one (which never reconnects), and whatever the first held unacknowledged is sent
  again to the second. Safe either way: storage is idempotent on ``alert_id``.
- Drain. The survivor connects a second MQTT connection with the dead server's client id and
  ``clean_start=False`` (3.1.1: ``clean_session=False``): the broker hands it the session, its
  unacknowledged in-flight messages and its queue. At once it UNSUBSCRIBEs the session's
  filters (uplinks, probe, presence), so that the round robin stops routing to it; every message
  received goes through the same ``Ingestor`` as the survivor's own and is acknowledged only
  after its commit (one ``AckSequencer`` per connection: PUBACKs in arrival order, never on
  another connection). Once nothing is outstanding and nothing has arrived for ``quiet_s``, it
  disconnects normally: the session stays on the broker, with no subscription and nothing
  queued, until the dead server comes back with its client id (it subscribes again on connect)
  or the session expires. Nothing is ever discarded by the rescue.
- A server that comes back while its session is being drained takes it over (same client id):
  the drain's connection is closed by the broker and never reconnects (``reconnect_on_failure``
  off), so the two never take the session from each other in a loop.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alert_server.ingest.probe import probe_topic
from vigie import topics
from vigie.brokers.address import BrokerAddress

if TYPE_CHECKING:
    from alert_server.ingest.mqtt import AckSequencer, AckToken, MessageHandler

log = logging.getLogger(__name__)

PRESENCE_FILTER = f"{topics.SERVERS_PREFIX}/+"
ONLINE, OFFLINE, STOPPED, RESCUED = "online", "offline", "stopped", "rescued"
STATES = frozenset({ONLINE, OFFLINE, STOPPED, RESCUED})


def presence_topic(client_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in client_id)
    return f"{topics.SERVERS_PREFIX}/{safe}"


@dataclass(frozen=True)
class Presence:
    client_id: str
    state: str
    group: str

    def encode(self) -> bytes:
        body = {"v": 1, "client_id": self.client_id, "state": self.state, "group": self.group}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, payload: bytes) -> Presence | None:
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        cid, state, group = data.get("client_id"), data.get("state"), data.get("group")
        if not isinstance(cid, str) or not cid or state not in STATES:
            return None
        if not isinstance(group, str):
            return None
        return cls(cid, str(state), group)


def elect(dead: str, online: Iterable[str]) -> str | None:
    """The server that takes ``dead``'s session over: the first online client id after it in
    sorted order, cyclically (so that several dead servers are spread over the survivors)."""
    alive = sorted(set(online) - {dead})
    if not alive:
        return None
    after = [c for c in alive if c > dead]
    return after[0] if after else alive[0]


def dead_session_filters(group: str, client_id: str) -> list[str]:
    """Every filter a server's session holds (``MqttLink._on_connect``)."""
    share = f"$share/{group}/"
    return [f for f, _ in topics.subscriptions(group)] + [
        f"{share}{probe_topic(client_id)}",
        PRESENCE_FILTER,
    ]


class _Drain:
    """One takeover: a connection under the dead server's client id, until its session is
    empty (or the broker closes it, or the server stops)."""

    def __init__(self, rescue: SessionRescue, dead: str, conn: int) -> None:
        self.rescue = rescue
        self.dead = dead
        self.conn = conn
        self.connected = threading.Event()
        self.unsubscribed = threading.Event()
        self.closed = threading.Event()
        self.session_present: bool | None = None
        self.refused: str | None = None
        self.messages = 0
        self.uplinks = 0
        self._last = time.monotonic()
        self._stop = threading.Event()
        self.client: mqtt.Client | None = None
        self.thread = threading.Thread(target=self._run, name=f"vigie-rescue-{dead}", daemon=True)

    def stop(self) -> None:
        self._stop.set()

    def _make_client(self, acks: AckSequencer) -> mqtt.Client:
        r = self.rescue
        if r.v5:
            c = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=self.dead,
                protocol=mqtt.MQTTv5,
                manual_ack=True,
                reconnect_on_failure=False,
            )
        else:
            c = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=self.dead,
                protocol=mqtt.MQTTv311,
                clean_session=False,
                manual_ack=True,
                reconnect_on_failure=False,
            )
        if r.address.username:
            c.username_pw_set(r.address.username, r.address.password)
        if r.address.tls:
            c.tls_set()
        c.max_inflight_messages_set(r.receive_maximum)

        def on_connect(cl: mqtt.Client, u: Any, flags: Any, rc: Any, props: Any) -> None:
            if rc.is_failure:
                self.refused = str(rc)
            else:
                self.session_present = bool(flags.session_present)
                acks.new_connection()
            self.connected.set()

        def on_message(cl: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
            token = acks.register(msg.mid, msg.qos)
            self._last = time.monotonic()
            self.messages += 1
            if topics.parse(msg.topic) is None:
                acks.done(token)  # the dead server's probe or a presence: nothing to store
                return
            self.uplinks += 1
            try:
                r.handler(
                    msg.topic, bytes(msg.payload), msg.retain, functools.partial(r.done, token)
                )
            except Exception:
                log.exception("ingest handler failed for %s (rescue of %s)", msg.topic, self.dead)
                acks.done(token)

        def on_disconnect(cl: mqtt.Client, u: Any, flags: Any, rc: Any, props: Any) -> None:
            self.closed.set()

        c.on_connect = on_connect
        c.on_message = on_message
        c.on_unsubscribe = lambda *a: self.unsubscribed.set()
        c.on_disconnect = on_disconnect
        return c

    def _run(self) -> None:
        r = self.rescue
        t0 = time.monotonic()
        acks = r.new_sequencer(self.conn, lambda mid, qos: self._send_ack(mid, qos))
        outcome = "interrupted"
        try:
            client = self.client = self._make_client(acks)
            props = None
            if r.v5:
                props = Properties(PacketTypes.CONNECT)
                # The dead server's own expiry: the session stays for its return.
                props.SessionExpiryInterval = r.session_expiry_s
                props.ReceiveMaximum = r.receive_maximum
            client.connect(
                r.address.host,
                r.address.port,
                keepalive=30,
                clean_start=False if r.v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                properties=props,
            )
            client.loop_start()
            if not self.connected.wait(30) or self.refused is not None:
                log.error("rescue of %s: connection refused (%s)", self.dead, self.refused)
                outcome = "refused"
                return
            if not self.session_present:
                # Taken over and emptied already (another survivor), or expired: the broker
                # made a new, empty session; leave it as it is.
                log.info("rescue of %s: no session left on the broker", self.dead)
                outcome = "no session"
                client.disconnect()
                return
            client.unsubscribe(dead_session_filters(r.group, self.dead))
            while not (self._stop.is_set() or self.closed.is_set()):
                quiet = time.monotonic() - self._last >= r.quiet_s
                if self.unsubscribed.is_set() and quiet and acks.outstanding() == 0:
                    outcome = "drained"
                    break
                time.sleep(0.05)
            if outcome == "drained":
                client.disconnect()
            elif self.closed.is_set():
                # The server came back (or another survivor took over): its connection has
                # the session now, with whatever was not acknowledged here.
                outcome = "taken over"
        except Exception:
            log.exception("rescue of %s failed", self.dead)
            outcome = "failed"
        finally:
            if self.client is not None:
                self.client.loop_stop()
            r.finished(self, outcome, time.monotonic() - t0)

    def _send_ack(self, mid: int, qos: int) -> None:
        if self.client is not None:
            self.client.ack(mid, qos)


class SessionRescue:
    """Reads the servers' presence (``on_presence``, from the server's own connection) and
    drains the session of each server of its group that died, when elected."""

    def __init__(
        self,
        *,
        own_id: str,
        group: str,
        address: BrokerAddress,
        v5: bool,
        session_expiry_s: int,
        receive_maximum: int,
        handler: MessageHandler,
        sequencer: Callable[[Callable[[int, int], None], int], AckSequencer],
        publish_presence: Callable[[Presence], None] | None = None,
        settle_s: float = 0.5,
        quiet_s: float = 1.0,
    ) -> None:
        self.own_id = own_id
        self.group = group
        self.address = address
        self.v5 = v5
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.handler = handler
        self.settle_s = settle_s
        self.quiet_s = quiet_s
        self._sequencer = sequencer
        self._publish_presence = publish_presence
        self._lock = threading.Lock()
        self._states: dict[str, str] = {}
        self._active: dict[str, _Drain] = {}
        self._sequencers: dict[int, AckSequencer] = {}
        self._next_conn = 1
        self._stopping = threading.Event()
        # For the logs and the tests: (dead client id, outcome, uplink messages, seconds).
        self.history: list[tuple[str, str, int, float]] = []

    # -- presence --------------------------------------------------------------------------
    def presence(self, state: str) -> Presence:
        return Presence(self.own_id, state, self.group)

    def on_presence(self, payload: bytes) -> None:
        p = Presence.decode(payload)
        if p is None or p.group != self.group or p.client_id == self.own_id:
            return
        with self._lock:
            self._states[p.client_id] = p.state
        if p.state == OFFLINE and not self._stopping.is_set():
            # A moment for the other retained presences to arrive (at start they come in a
            # burst) before electing.
            t = threading.Timer(self.settle_s, self._maybe_rescue, args=(p.client_id,))
            t.daemon = True
            t.start()

    def online(self) -> list[str]:
        with self._lock:
            return sorted({c for c, s in self._states.items() if s == ONLINE} | {self.own_id})

    def _maybe_rescue(self, dead: str) -> None:
        with self._lock:
            if self._stopping.is_set() or self._states.get(dead) != OFFLINE:
                return
            if dead in self._active:
                return
            online = {c for c, s in self._states.items() if s == ONLINE} | {self.own_id}
            chosen = elect(dead, online)
            if chosen != self.own_id:
                log.info("server %s died; %s takes its session over", dead, chosen)
                return
            drain = _Drain(self, dead, self._next_conn)
            self._next_conn += 1
            self._active[dead] = drain
        log.warning("server %s died: taking its MQTT session over to drain it", dead)
        drain.thread.start()

    # -- acknowledgements --------------------------------------------------------------------
    def new_sequencer(self, conn: int, send: Callable[[int, int], None]) -> AckSequencer:
        seq = self._sequencer(send, conn)
        with self._lock:
            self._sequencers[conn] = seq
        return seq

    def done(self, token: AckToken) -> None:
        with self._lock:
            seq = self._sequencers.get(token.conn)
        if seq is not None:
            seq.done(token)
        # else: that drain is over; the broker re-sends whatever it did not acknowledge.

    def finished(self, drain: _Drain, outcome: str, seconds: float) -> None:
        with self._lock:
            self._active.pop(drain.dead, None)
            self._sequencers.pop(drain.conn, None)
            self.history.append((drain.dead, outcome, drain.uplinks, seconds))
        log.warning(
            "rescue of %s: %s, %d uplink message(s) handed to ingest in %.2f s",
            drain.dead,
            outcome,
            drain.uplinks,
            seconds,
        )
        if outcome == "drained" and self._publish_presence is not None:
            # Its session holds nothing now: no other server needs to take it over again.
            self._publish_presence(Presence(drain.dead, RESCUED, self.group))

    def active(self) -> list[str]:
        with self._lock:
            return sorted(self._active)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        with self._lock:
            drains = list(self._active.values())
        for d in drains:
            d.stop()
        for d in drains:
            d.thread.join(timeout_s)
