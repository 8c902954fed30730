"""Test helpers: a device speaking protocol.md over a real broker, and a server process."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alert_server.serving import PORT_UNAVAILABLE
from vigie import launch
from vigie.brokers.mosquitto import LocalMosquitto, free_port
from vigie.timeutil import rfc3339, utcnow

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from alert_server.app import Runtime

REPO = Path(__file__).resolve().parent.parent
# Ports drawn for a server whose port was taken between the draw and its bind.
PORT_DRAWS = 5
# One random key per test run, shared by every server a test starts (as in production, where
# all servers must have the same one).
SECRET_KEY = secrets.token_hex(32)


def wait_until(pred: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


def sqlite_engine(tmp_path: Path) -> Engine:
    """A migrated SQLite database of its own (the tests of SQLite's one write lock)."""
    from alert_server.db import make_engine, migrate

    engine = make_engine(f"sqlite:///{tmp_path / 'vigie.db'}")
    migrate(engine)
    return engine


def done_while_write_locked(engine: Engine, work: Callable[[], object]) -> bool:
    """Run ``work`` in a thread while this thread holds SQLite's write lock, as an alert's
    commit holds it; True if ``work`` finished meanwhile, False if it waited for the lock
    (it then finishes once the lock is given back). A deadline, not a measure."""
    from vigie.persistence import take_write_lock, write_scope

    done = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            failed.append(exc)
        finally:
            done.set()

    with write_scope(engine) as writer:
        take_write_lock(writer)
        thread = threading.Thread(target=run, name="done-while-write-locked")
        thread.start()
        finished = done.wait(20)
    thread.join(60)
    if failed:
        raise failed[0]
    return finished


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command's name (which may itself hold
    spaces or parentheses): state, parent pid…; None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_alive(pid: int) -> bool:
    """Running (a zombie, not yet reaped by its parent, counts as gone)."""
    fields = _proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def child_processes(pid: int) -> dict[int, str]:
    """The live processes whose parent is ``pid``, with their command lines."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields is None or fields[0] == "Z" or int(fields[1]) != pid:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        found[int(entry.name)] = cmdline
    return found


@contextmanager
def built_runtime(tmp_path: Path) -> Iterator[Runtime]:
    """A server's parts as ``vigie server`` builds them (``Runtime.build``), not started: a new
    SQLite database, simulated telephony, a broker address nothing listens on. Taken apart
    after."""
    from pydantic import SecretStr

    from alert_server.app import Runtime
    from alert_server.settings import Settings

    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'vigie.db'}",
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",  # never started here
        secret_key=SecretStr(SECRET_KEY),
        telephony="simulated",
    )
    runtime = Runtime.build(settings)
    try:
        yield runtime
    finally:
        runtime.pipeline.shutdown()
        runtime.dispatcher.shutdown(wait=True)
        runtime.engine.dispose()


def alert_payload(alert_id: str | None = None, kind: str = "sos", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1,
        "alert_id": alert_id or str(uuid.uuid4()),
        "kind": kind,
        "ts": rfc3339(utcnow()),
    }
    body.update(extra)
    return body


@dataclass
class Device:
    """A device connected as itself (username = client id = device_id)."""

    device_id: str
    password: str
    port: int
    commands: list[dict[str, Any]] = field(default_factory=list)
    # (monotonic arrival time, MQTT 5 message expiry or None) of each command, in order.
    arrivals: list[tuple[float, int | None]] = field(default_factory=list)
    connect_rc: Any = None
    client: mqtt.Client | None = None
    _connected: threading.Event = field(default_factory=threading.Event)
    _subscribed: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    disconnected: threading.Event = field(default_factory=threading.Event)

    def connect(self, timeout_s: float = 5.0, clean: bool = True) -> bool:
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=self.device_id, protocol=mqtt.MQTTv5
        )
        c.username_pw_set(self.device_id, self.password)
        c.will_set(
            f"vigie/v1/dev/{self.device_id}/status",
            json.dumps({"v": 1, "state": "offline"}),
            qos=1,
            retain=True,
        )
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_disconnect = lambda *a: self.disconnected.set()
        c.reconnect_delay_set(1, 2)
        self.client = c
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0 if clean else 3600
        c.connect("127.0.0.1", self.port, keepalive=30, clean_start=clean, properties=props)
        c.loop_start()
        self._connected.wait(timeout_s)
        if self.connect_rc is None or self.connect_rc.is_failure:
            # Refused or unanswered: stopped here, or its thread would go on reconnecting
            # for the rest of the worker's tests.
            self.close()
            return False
        self._subscribed.wait(timeout_s)
        return True

    def _on_connect(self, client: mqtt.Client, u: Any, flags: Any, rc: Any, p: Any) -> None:
        self.connect_rc = rc
        if not rc.is_failure:
            self.disconnected.clear()
            client.subscribe(f"vigie/v1/dev/{self.device_id}/cmd", qos=1)
        self._connected.set()

    def _on_message(self, client: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        expiry = getattr(msg.properties, "MessageExpiryInterval", None)
        with self._lock:
            self.commands.append(json.loads(msg.payload))
            self.arrivals.append((time.monotonic(), expiry))

    def publish(self, suffix: str, body: dict[str, Any] | bytes | str, qos: int = 1) -> None:
        assert self.client is not None
        payload = body if isinstance(body, bytes | str) else json.dumps(body)
        info = self.client.publish(f"vigie/v1/dev/{self.device_id}/{suffix}", payload, qos=qos)
        info.wait_for_publish(5)

    def publish_raw_topic(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        assert self.client is not None
        self.client.publish(topic, payload, qos=qos).wait_for_publish(5)

    def arrival(self, type_: str, alert_id: str) -> float:
        """Monotonic time the first ``type_`` command about ``alert_id`` arrived."""
        with self._lock:
            for c, (at, _) in zip(self.commands, self.arrivals, strict=True):
                if c.get("type") == type_ and c.get("alert_id") == alert_id:
                    return at
        raise AssertionError(f"no {type_} for {alert_id}")

    def expiry(self, type_: str) -> int | None:
        """The MQTT 5 message expiry of the first ``type_`` command."""
        with self._lock:
            for c, (_, expiry) in zip(self.commands, self.arrivals, strict=True):
                if c.get("type") == type_:
                    return expiry
        raise AssertionError(f"no {type_}")

    def about(self, alert_id: str) -> list[str]:
        """The types of every command about ``alert_id``, in arrival order."""
        with self._lock:
            return [c["type"] for c in self.commands if c.get("alert_id") == alert_id]

    def received(self, type_: str, alert_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                c
                for c in self.commands
                if c.get("type") == type_ and (alert_id is None or c.get("alert_id") == alert_id)
            ]

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


@dataclass
class ServerProcess:
    """``vigie server`` in a subprocess, so that it can be killed like a real one."""

    env: dict[str, str]
    log_path: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_healthy: bool = True) -> ServerProcess:
        # A port given up front (e.g. for VIGIE_PUBLIC_URL) is kept across restarts.
        chosen = not self.port
        for _ in range(PORT_DRAWS):
            self.port = self.port or free_port()
            # vigie.launch: killed when its start fails, and at exit if still running.
            self.proc = launch.spawn(
                [sys.executable, "-m", "alert_server.cli", "server", "--port", str(self.port)],
                env=self.env,
                cwd=REPO,
                log_path=self.log_path,
            )
            if not wait_healthy:
                return self
            try:
                self.wait_healthy()
                return self
            except launch.LaunchFailed:
                # The port drawn was taken by another program between the draw and the bind
                # (another test worker's process): nothing was started; another port.
                if not chosen or self.proc.poll() != PORT_UNAVAILABLE:
                    raise
                self.port = 0
        raise AssertionError(f"no free HTTP port found in {PORT_DRAWS} draws")

    def wait_healthy(self) -> None:
        """Until /healthz answers 200 from this server (the deadline fits this machine's
        measured starts); the process is killed if it does not get there. "This server": the
        answer of another program on the same port (a server of another test worker, which
        had the port first) must not pass for this one's."""
        assert self.proc is not None
        launch.wait_ready(
            self.proc,
            lambda: launch.http_status("127.0.0.1", self.port) == 200 and self._listens(),
            what=f"vigie server ({self.log_path.name})",
        )

    def _listens(self) -> bool:
        """This process listens on its port."""
        assert self.proc is not None
        try:
            conns = psutil.Process(self.proc.pid).net_connections(kind="inet")
        except psutil.Error:
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in conns)

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            r = httpx.get(self.url + "/healthz", timeout=2)
            return r.status_code, r.json()
        except httpx.HTTPError:
            return 0, {}

    def get(self, path: str) -> str:
        r = httpx.get(self.url + path, timeout=5)
        r.raise_for_status()
        return r.text

    def metric(self, name: str, labels: str = "") -> float:
        total = 0.0
        for line in self.get("/metrics").splitlines():
            if line.startswith(name + ("{" if labels else "")) and labels in line:
                if line.startswith("#"):
                    continue
                total += float(line.rsplit(" ", 1)[1])
            elif not labels and line.split(" ")[0] == name:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def kill(self) -> None:
        assert self.proc is not None
        launch.kill(self.proc)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            # A deadline: on SIGTERM the server finishes (commits and acknowledges) what it
            # holds, which a busy machine can make long.
            return self.proc.wait(180)
        except subprocess.TimeoutExpired:
            launch.kill(self.proc)  # never leave it behind
            raise

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def server_env(broker: LocalMosquitto, db_url: str, **extra: str) -> dict[str, str]:
    """The environment of a ``vigie server`` on ``broker``: simulated telephony unless
    ``extra`` says ``VIGIE_TELEPHONY="twilio"`` (with the fake Twilio's settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
    env.update(
        VIGIE_TELEPHONY="simulated",
        VIGIE_INTERNAL_ACCESS="network",  # tests read /metrics from loopback
        VIGIE_SECRET_KEY=SECRET_KEY,
        VIGIE_DATABASE_URL=db_url,
        VIGIE_MQTT_URL=broker.server_url(),
        VIGIE_BROKER_PASSWD_FILE=str(broker.passwd_file),
        VIGIE_BROKER_ACL_FILE=str(broker.acl_file),
        VIGIE_BROKER_PID_FILE=str(broker.pid_file),
        VIGIE_PRESENCE_FLUSH_S="0.2",
        # Plain lines: the tests read the server's log (tracebacks, ingest errors) as text.
        VIGIE_LOG_FORMAT="plain",
        # No map tiles from the internet in tests (Plan IGN is the default).
        VIGIE_MAP_TILE_URL="none",
    )
    env.update(extra)
    return env


def vigie(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alert_server.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        # A deadline, not a measure: a command takes seconds, far more on a busy machine.
        timeout=300,
    )


def add_device(env: dict[str, str], device_id: str, **opts: str) -> str:
    args = [
        "devices", "add", device_id,
        "--worker", opts.get("worker", f"Worker {device_id}"),
        "--role", opts.get("role", "nurse"),
        "--phone", opts.get("phone", "+33612345678"),
        "--pin", opts.get("pin", "1234"),
        "--duress-pin", opts.get("duress_pin", "9999"),
        "--json",
    ]  # fmt: skip
    out = vigie(env, *args)
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["mqtt_password"])
