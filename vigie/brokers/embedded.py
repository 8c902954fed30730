"""An MQTT broker inside the Python process, for ``vigie demo`` on a machine without Mosquitto.

amqtt 0.12.1 (pure Python) in a background thread with its own asyncio loop. NOT for
production: Mosquitto (``broker_config/``) is the broker Vigie is run and measured with.

What it keeps of the Mosquitto setup, and why it does not use amqtt's stock plugins:

- **Loopback only.** amqtt listens on ``0.0.0.0:1883`` by default; here the bind address is
  fixed to 127.0.0.1 and cannot be changed by a caller.
- **No anonymous access.** amqtt allows anonymous clients by default. ``VigieAuthPlugin``
  refuses any client without a known username and password.
- **The project's own password file.** amqtt's ``FileAuthPlugin`` accepts only argon2 (and
  deprecated ``$6$`` crypt) hashes and reads its file once. ``VigieAuthPlugin`` reads the
  Mosquitto ``$7$`` file that ``vigie devices add`` writes (``broker_files``), and reads it
  again when it changes, so adding a device needs no broker restart. Passwords may also be
  given in memory (``users=``).
- **The same per-device ACL.** amqtt's ``TopicAccessControlListPlugin`` takes per-username
  topic lists without ``%u`` substitution, and in 0.12.1 its dataclass config has only
  ``acl`` (subscribe) and ``publish_acl``: no receive ACL. ``VigieTopicPlugin`` computes the
  rules of ``broker_files.render_acl`` in code (a device writes its own uplinks and reads its
  own ``cmd``; the server account reads every uplink and writes every ``cmd``), for publish,
  subscribe and delivery, and honours the revoked list of the ACL file.
- **Client id = username for devices.** Mosquitto forces it (``use_username_as_clientid``);
  amqtt cannot, so a device connecting under another client id is refused.
- **MQTT over WebSocket for phones** (``ws_port``, ``ws_url()``): a third loopback listener,
  served by amqtt through the ``websockets`` library, admitting device accounts exactly as the
  devices' TCP listener does.
- **Two listeners, as with Mosquitto (``per_listener_settings true``).** The devices' port
  admits device accounts only, the servers' port (``server_port``, ``server_url()``) the
  server account only. amqtt does not tell its auth plugins which listener a connection came
  in on, so ``_GuardedBroker`` records it in a context variable for them.
- **No session touched before authentication.** amqtt 0.12.1 looks a CONNECT's client id up
  (and, with a clean session, deletes that session: subscriptions and queued messages) before
  any plugin authenticates it: anyone on the machine could have discarded the server's session
  with a wrong password. ``_GuardedBroker`` checks the CONNECT first and gives a refused one a
  client id of its own, so it never reaches anyone else's session.

Gaps that remain (amqtt 0.12.1):
- MQTT 3.1.1 only: the server must run with ``VIGIE_MQTT_PROTOCOL=3.1.1`` and no shared group.
- Sessions, queued messages and retained messages live in memory: a restart loses them.
- A revoked device's open connection is closed at its next packet, not at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from amqtt.utils import format_client_message, gen_client_id

from vigie import topics
from vigie.brokers import files as broker_files

log = logging.getLogger(__name__)

# Fixed on purpose: the embedded broker has no TLS and is for one machine.
LOOPBACK = "127.0.0.1"
# amqtt requires a listener named "default": it is the devices' one.
DEVICES_LISTENER = "default"
SERVERS_LISTENER = "servers"
# MQTT over WebSocket for the worker's web app (/app/): device accounts, as on "default".
# amqtt serves it with the maintained `websockets` library (subprotocol "mqtt").
PHONES_LISTENER = "phones"
_DEVICE_LISTENERS = (DEVICES_LISTENER, PHONES_LISTENER)
# The listener the connection being handled came in on (each connection is its own asyncio
# task, and the tasks amqtt starts for the auth plugins inherit the variable).
_LISTENER: ContextVar[str] = ContextVar("vigie_embedded_listener", default="")
# Client ids given to refused CONNECTs: "/" is in no device's nor server's client id.
_REFUSED_PREFIX = "refused/"

_DEVICE_WRITE_SUFFIXES = topics.UPLINKS
# ``PROBE_PREFIX/#``: each server's subscription probe (alert_server/ingest/probe.py).
_PROBE = f"{topics.PROBE_PREFIX}/#"
_SERVER_READ = (*(f"{topics.PREFIX}/+/{s}" for s in topics.UPLINKS), "$SYS/#", _PROBE)
_SERVER_WRITE = (f"{topics.PREFIX}/+/cmd", _PROBE)


def _levels_cover(allowed: str, requested: str) -> bool:
    """True when every topic matched by ``requested`` is matched by ``allowed``.

    Works for a plain topic name (publish, delivery) as well as for a subscription filter:
    a requested ``+`` is only covered by an allowed ``+`` or ``#``, a requested ``#`` only by
    an allowed ``#``.
    """
    a_levels, r_levels = allowed.split("/"), requested.split("/")
    for i, a in enumerate(a_levels):
        if a == "#":
            return True
        if i >= len(r_levels):
            return False
        r = r_levels[i]
        if r == "#":
            return False
        if a == "+":
            continue
        if a != r:
            return False
    return len(a_levels) == len(r_levels)


@dataclass
class _Accounts:
    """Usernames → Mosquitto ``$7$`` hashes, from memory and from the password/ACL files.

    Shared by both plugins of one broker; files are re-read when their mtime changes.
    """

    passwd_file: Path | None
    acl_file: Path | None
    in_memory: dict[str, str] = field(default_factory=dict)
    _from_file: dict[str, str] = field(default_factory=dict)
    _revoked: frozenset[str] = frozenset()
    _passwd_mtime: float = -1.0
    _acl_mtime: float = -1.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _refresh(self) -> None:
        if self.passwd_file is not None:
            try:
                mtime = self.passwd_file.stat().st_mtime_ns / 1e9
            except FileNotFoundError:
                mtime = 0.0
            if mtime != self._passwd_mtime:
                self._from_file = broker_files.read_passwd(self.passwd_file)
                self._passwd_mtime = mtime
        if self.acl_file is not None:
            try:
                mtime = self.acl_file.stat().st_mtime_ns / 1e9
            except FileNotFoundError:
                mtime = 0.0
            if mtime != self._acl_mtime:
                self._revoked = frozenset(broker_files.read_revoked(self.acl_file))
                self._acl_mtime = mtime

    def hash_for(self, username: str) -> str | None:
        with self._lock:
            self._refresh()
            return self.in_memory.get(username) or self._from_file.get(username)

    def revoked(self, username: str) -> bool:
        with self._lock:
            self._refresh()
            return username in self._revoked


# One registry per process: amqtt builds plugins from a dotted path and a config dataclass,
# so the live account table is looked up by the broker's key rather than passed in.
_ACCOUNTS: dict[str, _Accounts] = {}


def _device_may_write(username: str, topic: str) -> bool:
    return any(topic == topics.uplink(username, s) for s in _DEVICE_WRITE_SUFFIXES)


def _refusal(accounts: _Accounts | None, listener: str, session: Session) -> str | None:
    """Why this CONNECT is refused, or None when it is admitted (the one rule for both the
    early check of ``_GuardedBroker`` and ``VigieAuthPlugin``)."""
    if accounts is None or not session.username:
        return "no account"
    if listener not in (*_DEVICE_LISTENERS, SERVERS_LISTENER):
        return f"unknown listener {listener!r}"
    username = session.username
    encoded = accounts.hash_for(username)
    if encoded is None or not broker_files.verify_mosquitto_hash(session.password or "", encoded):
        return "bad credentials"
    if (session.client_id or "").startswith(_REFUSED_PREFIX):
        return "refused earlier"
    server = username == topics.SERVER_USERNAME
    if listener == SERVERS_LISTENER:
        # Server accounts only: no device can take a server's client id here.
        return None if server else "not a server account (servers' listener)"
    if server:
        return "server account on the devices' listener"
    if (
        not topics.valid_device_id(username)
        or broker_files.reserved_for_servers(username)
        or accounts.revoked(username)
    ):
        return "invalid or revoked"
    if session.client_id != username:
        # Mosquitto forces client id = username; without it a device could take over
        # another device's session.
        return f"client id {session.client_id!r} must equal the username"
    if session.will_flag and not _device_may_write(username, session.will_topic or ""):
        # The broker publishes the will on the client's behalf: hold it to the same ACL.
        return "will on a foreign topic"
    return None


class VigieAuthPlugin(BaseAuthPlugin):
    """Username + password against the Vigie accounts, per listener; never anonymous."""

    @dataclass
    class Config:
        accounts_key: str = ""

    async def authenticate(self, *, session: Session) -> bool | None:
        if session is None:
            return False
        refusal = _refusal(_ACCOUNTS.get(self.config.accounts_key), _LISTENER.get(), session)
        if refusal is not None:
            log.warning(
                "embedded broker: refused %r on the %s listener (%s)",
                session.username,
                _LISTENER.get() or "?",
                refusal,
            )
            return False
        return True


class _GuardedBroker(Broker):
    """amqtt's broker with two changes: it remembers which listener each connection came in
    on, and a CONNECT that will be refused never touches an existing session."""

    def __init__(self, config: dict[str, Any], *, accounts_key: str) -> None:
        super().__init__(config, loop=asyncio.get_running_loop())
        self._vigie_accounts_key = accounts_key

    async def _client_connected(
        self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter
    ) -> None:
        _LISTENER.set(listener_name)
        await super()._client_connected(listener_name, reader, writer)

    async def _initialize_client_session(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        remote_address: str,
        remote_port: int,
    ) -> tuple[BrokerProtocolHandler, Session]:
        """amqtt 0.12.1's own method, with one change marked VIGIE below."""
        peer = format_client_message(address=remote_address, port=remote_port)
        try:
            handler, client_session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except AMQTTError as exc:
            self.logger.warning(f"[MQTT-3.1.0-1] {peer}: Can't read first packet as CONNECT: {exc}")
            raise AMQTTError(exc) from exc
        except MQTTError as exc:
            self.logger.warning(f"Invalid connection from {peer}")
            await writer.close()
            raise MQTTError(exc) from exc
        except NoDataError as exc:
            self.logger.error(f"No data from {peer} : {exc}")
            raise AMQTTError(exc) from exc

        # VIGIE: amqtt looks the client id up below (deleting the session it finds when this
        # CONNECT asks for a clean one) before any plugin has authenticated the client. A
        # CONNECT that is going to be refused gets a client id of its own instead, under a
        # prefix no real client uses; VigieAuthPlugin then refuses it.
        accounts = _ACCOUNTS.get(self._vigie_accounts_key)
        if _refusal(accounts, _LISTENER.get(), client_session) is not None:
            client_session.client_id = _REFUSED_PREFIX + (client_session.client_id or "")
            client_session.clean_session = True

        if client_session.clean_session:
            if client_session.client_id is not None and client_session.client_id != "":
                await self._delete_session(client_session.client_id)
            else:
                client_session.client_id = gen_client_id()
            client_session.parent = 0
        elif client_session.client_id in self._sessions:
            existing_client_session, _ = self._sessions[client_session.client_id]
            existing_client_session.will_flag = client_session.will_flag
            existing_client_session.will_message = client_session.will_message
            existing_client_session.will_topic = client_session.will_topic
            existing_client_session.will_qos = client_session.will_qos
            existing_client_session.keep_alive = client_session.keep_alive
            existing_client_session.username = client_session.username
            existing_client_session.password = client_session.password
            client_session = existing_client_session
            client_session.parent = 1
        else:
            client_session.parent = 0

        timeout_disconnect_delay = self.config.get("timeout-disconnect-delay", 0)
        if client_session.keep_alive > 0 and isinstance(timeout_disconnect_delay, int):
            client_session.keep_alive += timeout_disconnect_delay
        return handler, client_session


class VigieTopicPlugin(BaseTopicPlugin):
    """The ACL of ``broker_files.render_acl``, with the username put in for ``%u``."""

    @dataclass
    class Config:
        accounts_key: str = ""

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool | None:
        if session is None or not session.username or not topic or action is None:
            return False
        username = session.username
        accounts = _ACCOUNTS.get(self.config.accounts_key)
        if accounts is None:
            return False
        if username == topics.SERVER_USERNAME:
            allowed = _SERVER_WRITE if action == Action.PUBLISH else _SERVER_READ
        else:
            if accounts.revoked(username):
                return False
            if action == Action.PUBLISH:
                allowed = tuple(topics.uplink(username, s) for s in _DEVICE_WRITE_SUFFIXES)
            else:
                allowed = (topics.cmd(username),)
        ok = any(_levels_cover(a, topic) for a in allowed)
        if not ok:
            log.info("embedded broker: %s denied %s on %s", username, action.value, topic)
        return ok


@dataclass
class EmbeddedBroker:
    """amqtt on 127.0.0.1 with Vigie's accounts and ACL. ``start()`` / ``stop()``.

    Mirrors the parts of ``LocalMosquitto`` that ``vigie demo`` needs: ``port`` (devices),
    ``server_port`` (servers), ``server_password``, ``server_url()``, ``passwd_file``,
    ``acl_file``.
    """

    passwd_file: Path | None = None
    acl_file: Path | None = None
    users: Mapping[str, str] = field(default_factory=dict)  # username → plain password
    port: int = 0  # devices' listener; 0: any free port, read back after start
    server_port: int = 0  # servers' listener; 0: any free port, read back after start
    ws_port: int = 0  # phones' MQTT-over-WebSocket listener; 0: any free port
    server_password: str = field(default_factory=broker_files.generate_password)
    max_connections: int = 0  # 0: unlimited
    quiet: bool = True  # amqtt logs every connection at INFO
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _broker: Any = None
    _key: str = ""

    host = LOOPBACK

    def server_url(self) -> str:
        return (
            f"mqtt://{topics.SERVER_USERNAME}:{self.server_password}@{LOOPBACK}:{self.server_port}"
        )

    def ws_url(self) -> str:
        """The phones' MQTT-over-WebSocket URL (``VIGIE_MQTT_WS_URL``)."""
        return f"ws://{LOOPBACK}:{self.ws_port}"

    @property
    def pid_file(self) -> None:
        """No process to signal: the password and ACL files are re-read when they change."""
        return None

    def add_user(self, username: str, password: str) -> None:
        """Add or replace an account at run time (kept in memory only)."""
        accounts = _ACCOUNTS[self._key] if self._key else None
        hashed = broker_files.mosquitto_hash(password)
        if accounts is not None:
            with accounts._lock:
                accounts.in_memory[username] = hashed
        else:
            self.users = {**self.users, username: password}

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {
                DEVICES_LISTENER: {
                    "type": "tcp",
                    "bind": f"{LOOPBACK}:{self.port}",
                    "max_connections": self.max_connections,
                },
                SERVERS_LISTENER: {
                    "type": "tcp",
                    "bind": f"{LOOPBACK}:{self.server_port}",
                    "max_connections": self.max_connections,
                },
                PHONES_LISTENER: {
                    "type": "ws",
                    "bind": f"{LOOPBACK}:{self.ws_port}",
                    "max_connections": self.max_connections,
                },
            },
            # Only our two plugins: no anonymous plugin, no $SYS, no packet logger.
            "plugins": {
                f"{__name__}.VigieAuthPlugin": {"accounts_key": self._key},
                f"{__name__}.VigieTopicPlugin": {"accounts_key": self._key},
            },
        }

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        if self._thread is not None:
            raise RuntimeError("embedded broker already started")
        if self.quiet:
            for name in ("amqtt", "transitions"):
                logging.getLogger(name).setLevel(logging.WARNING)
        self._key = f"{id(self):x}-{broker_files.generate_password()[:8]}"
        in_memory = {u: broker_files.mosquitto_hash(p) for u, p in self.users.items()}
        in_memory[topics.SERVER_USERNAME] = broker_files.mosquitto_hash(self.server_password)
        _ACCOUNTS[self._key] = _Accounts(self.passwd_file, self.acl_file, in_memory)
        started: concurrent.futures.Future[tuple[int, int, int]] = concurrent.futures.Future()
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run, args=(loop, started), name="vigie-embedded-broker", daemon=True
        )
        self._thread.start()
        try:
            self.port, self.server_port, self.ws_port = started.result(timeout_s)
        except BaseException:
            self.stop()
            raise
        log.info(
            "embedded MQTT broker (amqtt, MQTT 3.1.1) on %s: devices %d, servers %d",
            LOOPBACK,
            self.port,
            self.server_port,
        )
        return self

    def _run(
        self,
        loop: asyncio.AbstractEventLoop,
        started: concurrent.futures.Future[tuple[int, int, int]],
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            ports = loop.run_until_complete(self._start_broker())
        except BaseException as exc:
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(ports)
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(self._broker.shutdown())
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _start_broker(self) -> tuple[int, int, int]:
        self._broker = _GuardedBroker(self._config(), accounts_key=self._key)
        await self._broker.start()
        return (
            self._bound(DEVICES_LISTENER)[0][1],
            self._bound(SERVERS_LISTENER)[0][1],
            self._bound(PHONES_LISTENER)[0][1],
        )

    def _bound(self, listener: str) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for sock in self._broker._servers[listener].instance.sockets:
            host, port = sock.getsockname()[:2]
            out.append((str(host), int(port)))
        return out

    def bound_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every listening socket (all on 127.0.0.1), devices' first."""
        return (
            self._bound(DEVICES_LISTENER)
            + self._bound(SERVERS_LISTENER)
            + self._bound(PHONES_LISTENER)
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout_s)
        self._thread = None
        self._loop = None
        _ACCOUNTS.pop(self._key, None)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
