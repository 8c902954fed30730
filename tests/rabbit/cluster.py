"""RabbitMQ nodes of the test's own (1 or 3 nodes, MQTT plugin, quorum queues), never the
machine's shared node.

Every node gets its own ports (AMQP, MQTT, management, Erlang distribution and epmd through
``ERL_EPMD_PORT``), its own node name, its own Erlang cookie (``HOME`` in the test's folder) and
its own data, log and configuration folders. Each node runs in its own process group, killed as a
whole when the node is stopped (epmd included: it is started inside that group), also when the
start fails. Readiness deadlines are wide: Erlang starts slowly on a busy machine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from vigie.brokers.mosquitto import free_port, wait_for_port

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
RABBITMQCTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
ADMIN_USER = "vigie-admin"
READY_DEADLINE_S = 240.0


def available() -> bool:
    return RABBITMQ_SERVER.exists()


@dataclass
class RabbitNode:
    name: str  # the Erlang node name, e.g. vigie-ab12-1@localhost
    base: Path
    amqp_port: int
    mqtt_port: int
    http_port: int
    dist_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """The whole process group (beam.smp, its port programs, epmd)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(30)
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


@dataclass
class RabbitCluster:
    """``size`` nodes on loopback forming one cluster (classic peer discovery)."""

    workdir: Path
    size: int = 1
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    cookie: str = field(default_factory=lambda: secrets.token_hex(16).upper())
    nodes: list[RabbitNode] = field(default_factory=list)
    epmd_port: int = 0
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    _epmd: subprocess.Popen[bytes] | None = None

    # -- addresses --------------------------------------------------------------------------
    def amqp_urls(self, user: str | None = None, password: str | None = None) -> list[str]:
        user = user or ADMIN_USER
        password = password or self.admin_password
        return [f"amqp://{user}:{password}@127.0.0.1:{n.amqp_port}/%2F" for n in self.nodes]

    def amqp_url(self) -> str:
        """Every node, comma-separated (``VIGIE_AMQP_URL``): a server moves to the next one."""
        return ",".join(self.amqp_urls())

    def api_url(self, node: int = 0) -> str:
        n = self.nodes[node]
        return f"http://{ADMIN_USER}:{self.admin_password}@127.0.0.1:{n.http_port}"

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> RabbitCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        self.epmd_port = free_port()
        # Our own epmd, in the foreground and in its own group: the nodes find it on
        # ERL_EPMD_PORT instead of starting a daemon that would outlive the test.
        self._epmd = subprocess.Popen(
            ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        names = [f"vigie-{self.tag}-{i + 1}@localhost" for i in range(self.size)]
        for i, name in enumerate(names):
            base = self.workdir / f"node{i + 1}"
            node = RabbitNode(name, base, free_port(), free_port(), free_port(), free_port())
            self.nodes.append(node)
        try:
            wait_for_port(self.epmd_port, timeout_s=30)
            for node in self.nodes:
                self._write_config(node, names)
            for node in self.nodes:
                self._spawn(node)
            deadline = time.monotonic() + READY_DEADLINE_S
            for node in self.nodes:
                self._wait_ready(node, deadline)
            self.wait_cluster(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _write_config(self, node: RabbitNode, names: list[str]) -> None:
        for sub in ("mnesia", "log", "etc"):
            (node.base / sub).mkdir(parents=True, exist_ok=True)
        peers = "".join(
            f"cluster_formation.classic_config.nodes.{i + 1} = {n}\n" for i, n in enumerate(names)
        )
        (node.base / "etc" / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{node.amqp_port}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{node.mqtt_port}\n"
            f"management.tcp.port = {node.http_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
            "mqtt.allow_anonymous = false\n"
            "mqtt.vhost = /\n"
            "mqtt.exchange = amq.topic\n"
            # A device's persistent session (its cmd subscription queue) replicated on every
            # node: a classic queue lives on the node the device first connected to, and while
            # that node is down the device cannot reconnect anywhere ("home node … of durable
            # queue … is down or inaccessible"), as broker_config/rabbitmq/ says.
            "mqtt.durable_queue_type = quorum\n"
            # Queue details (the active consumer) fresh within 1 s instead of 5 s.
            "collect_statistics_interval = 1000\n"
            f"default_user = {ADMIN_USER}\n"
            f"default_pass = {self.admin_password}\n"
            "default_user_tags.administrator = true\n"
            "loopback_users = none\n"
            "cluster_formation.peer_discovery_backend = classic_config\n"
            f"{peers}"
            "cluster_partition_handling = pause_minority\n"
            "vm_memory_high_watermark.relative = 0.2\n"
            "disk_free_limit.absolute = 50MB\n"
            "log.console = false\n"
            "log.file.level = warning\n"
        )
        (node.base / "etc" / "enabled_plugins").write_text("[rabbitmq_mqtt,rabbitmq_management].\n")

    def _env(self, node: RabbitNode) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update(
            HOME=str(self.workdir / "home"),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=node.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(node.amqp_port),
            RABBITMQ_DIST_PORT=str(node.dist_port),
            RABBITMQ_MNESIA_BASE=str(node.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(node.base / "log"),
            RABBITMQ_CONFIG_FILE=str(node.base / "etc" / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(node.base / "etc" / "enabled_plugins"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(node.base / "etc" / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(node.base / "etc" / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(node.base / "rabbit.pid"),
            # Two small schedulers: the machine is shared.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S 2:2 +sbwt none +sbwtdcpu none +sbwtdio none",
        )
        return env

    def _spawn(self, node: RabbitNode) -> None:
        log = (node.base / "log" / "stdout.log").open("ab")
        node.process = subprocess.Popen(
            [str(RABBITMQ_SERVER)],
            env=self._env(node),
            cwd=node.base,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as a whole
        )
        log.close()

    def _wait_ready(self, node: RabbitNode, deadline: float) -> None:
        for port in (node.amqp_port, node.mqtt_port, node.http_port):
            while True:
                if not node.alive():
                    raise RuntimeError(f"RabbitMQ node {node.name} exited: see {node.base}/log")
                try:
                    wait_for_port(port, timeout_s=2.0)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"RabbitMQ node {node.name} not ready") from None

    def api(self, method: str, path: str, node: int | None = None, **kw: Any) -> Any:
        indexes = [node] if node is not None else range(len(self.nodes))
        last: Exception | None = None
        for i in indexes:
            n = self.nodes[i]
            if not n.alive():
                continue
            try:
                r = requests.request(
                    method,
                    f"http://127.0.0.1:{n.http_port}/api{path}",
                    auth=(ADMIN_USER, self.admin_password),
                    timeout=30,
                    **kw,
                )
                r.raise_for_status()
                return r.json() if r.content else None
            except (requests.RequestException, ValueError) as exc:
                last = exc
        raise RuntimeError(f"management API {method} {path}: {last}")

    def running_nodes(self) -> set[str]:
        return {n["name"] for n in self.api("GET", "/nodes") if n.get("running")}

    def wait_cluster(self, deadline: float | None = None) -> None:
        deadline = deadline or time.monotonic() + READY_DEADLINE_S
        expected = {n.name for n in self.nodes if n.alive()}
        while True:
            try:
                if self.running_nodes() >= expected:
                    return
            except RuntimeError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster of {expected} did not form")
            time.sleep(0.5)

    def queue_leader(self, queue: str) -> RabbitNode:
        info = self.api("GET", f"/queues/%2F/{queue}")
        leader = info.get("leader") or info.get("node")
        return next(n for n in self.nodes if n.name == leader)

    def restart(self, node: RabbitNode) -> None:
        """Start a killed node again on its data (it rejoins the cluster)."""
        deadline = time.monotonic() + READY_DEADLINE_S
        # First until the other nodes have seen it go: right after a kill the management API
        # may still list it as running, and "back in the cluster" would be read at once (seen:
        # "node back in 0.0 s", then the leader's node killed while it was still booting).
        while node.name in self.running_nodes():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{node.name} still listed as running after its kill")
            time.sleep(0.2)
        self._spawn(node)
        self._wait_ready(node, deadline)
        self.wait_cluster(deadline)

    def stop(self) -> None:
        """SIGKILL of every node's process group: the data is the test's and thrown away, and a
        clean Erlang shutdown costs seconds per node (14 s of teardown for three)."""
        for node in self.nodes:
            node.kill(signal.SIGKILL)
        if self._epmd is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._epmd.pid, signal.SIGKILL)
            self._epmd.wait(30)
