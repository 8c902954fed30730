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

Gaps that remain (amqtt 0.12.1):
- MQTT 3.1.1 only: the server must run with ``VIGIE_MQTT_PROTOCOL=3.1.1`` and no shared group.
- Sessions, queued messages and retained messages live in memory: a restart loses them.
- amqtt handles a client-id takeover *before* authentication: a client that knows a device's id
  can, even with a wrong password, close that device's current connection (it is refused right
  after, and the device reconnects). Acceptable on a loopback-only demo broker, not beyond.
- A revoked device's open connection is closed at its next packet, not at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from alert_server.devices import broker_files
from alert_server.ingest import topics

log = logging.getLogger(__name__)

# Fixed on purpose: the embedded broker has no TLS and is for one machine.
LOOPBACK = "127.0.0.1"

_DEVICE_WRITE_SUFFIXES = topics.UPLINKS
_SERVER_READ = (*(f"{topics.PREFIX}/+/{s}" for s in topics.UPLINKS), "$SYS/#")
_SERVER_WRITE = (f"{topics.PREFIX}/+/cmd",)


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


class VigieAuthPlugin(BaseAuthPlugin):
    """Username + password against the Vigie accounts; never anonymous."""

    @dataclass
    class Config:
        accounts_key: str = ""

    async def authenticate(self, *, session: Session) -> bool | None:
        accounts = _ACCOUNTS.get(self.config.accounts_key)
        if accounts is None or session is None or not session.username:
            return False
        username = session.username
        encoded = accounts.hash_for(username)
        if encoded is None or not broker_files.verify_mosquitto_hash(
            session.password or "", encoded
        ):
            log.warning("embedded broker: refused %r (bad credentials)", username)
            return False
        if username == topics.SERVER_USERNAME:
            return True
        if not topics.valid_device_id(username) or accounts.revoked(username):
            log.warning("embedded broker: refused %r (invalid or revoked)", username)
            return False
        if session.client_id != username:
            # Mosquitto forces client id = username; without it a device could take over
            # another device's session.
            log.warning(
                "embedded broker: refused %r (client id %r must equal the username)",
                username,
                session.client_id,
            )
            return False
        if session.will_flag and not _device_may_write(username, session.will_topic or ""):
            # The broker publishes the will on the client's behalf: hold it to the same ACL.
            log.warning("embedded broker: refused %r (will on a foreign topic)", username)
            return False
        return True


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

    Mirrors the parts of ``LocalMosquitto`` that ``vigie demo`` needs: ``port``,
    ``server_port`` (the same port: amqtt has no client-id override to separate listeners
    for), ``server_password``, ``server_url()``, ``passwd_file``, ``acl_file``.
    """

    passwd_file: Path | None = None
    acl_file: Path | None = None
    users: Mapping[str, str] = field(default_factory=dict)  # username → plain password
    port: int = 0  # 0: any free port, read back after start
    server_password: str = field(default_factory=broker_files.generate_password)
    max_connections: int = 0  # 0: unlimited
    quiet: bool = True  # amqtt logs every connection at INFO
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _broker: Any = None
    _key: str = ""

    host = LOOPBACK

    @property
    def server_port(self) -> int:
        return self.port

    def server_url(self) -> str:
        return f"mqtt://{topics.SERVER_USERNAME}:{self.server_password}@{LOOPBACK}:{self.port}"

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
                "default": {
                    "type": "tcp",
                    "bind": f"{LOOPBACK}:{self.port}",
                    "max_connections": self.max_connections,
                }
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
        started: concurrent.futures.Future[int] = concurrent.futures.Future()
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run, args=(loop, started), name="vigie-embedded-broker", daemon=True
        )
        self._thread.start()
        try:
            self.port = started.result(timeout_s)
        except BaseException:
            self.stop()
            raise
        log.info("embedded MQTT broker (amqtt, MQTT 3.1.1) on %s:%d", LOOPBACK, self.port)
        return self

    def _run(
        self, loop: asyncio.AbstractEventLoop, started: concurrent.futures.Future[int]
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            port = loop.run_until_complete(self._start_broker())
        except BaseException as exc:
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(port)
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

    async def _start_broker(self) -> int:
        # Imported here: amqtt pulls in websockets and friends, only the demo needs them.
        from amqtt.broker import Broker

        self._broker = Broker(self._config(), loop=asyncio.get_running_loop())
        await self._broker.start()
        return self.bound_addresses()[0][1]

    def bound_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every listening socket (all on 127.0.0.1)."""
        out: list[tuple[str, int]] = []
        for server in self._broker._servers.values():
            for sock in server.instance.sockets:
                host, port = sock.getsockname()[:2]
                out.append((str(host), int(port)))
        return out

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
