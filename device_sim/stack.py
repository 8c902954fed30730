"""A throw-away local system for ``vigie sim … --spawn`` and the load benchmark:
a broker (Mosquitto from ``broker_config/``, or the embedded amqtt one) and ``vigie server``
on SQLite, in a temporary folder. Not for ``vigie demo``, which wires its own.
"""

from __future__ import annotations

import os
import resource
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from device_sim.provision import VigieCliProvisioner
from vigie import launch
from vigie.brokers import files as broker_files
from vigie.brokers.embedded import EmbeddedBroker
from vigie.brokers.mosquitto import LocalMosquitto, free_port, stop_process

_REPO = Path(__file__).resolve().parent.parent
# Settings a spawned server inherits from the caller's environment (data, not wiring).
_PASS_THROUGH = ("VIGIE_GEO_DIR", "VIGIE_REFERENTS_FILE")


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (capped by the hard limit).

    Children (Mosquitto, the server) inherit it. Returns the new soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


@dataclass
class LocalStack:
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vigie-sim-")))
    broker_kind: str = "mosquitto"  # or "embedded"
    with_server: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    mosquitto: LocalMosquitto | None = None
    embedded: EmbeddedBroker | None = None
    server: subprocess.Popen[bytes] | None = None
    http_port: int = 0
    secret_key: str = field(default_factory=lambda: secrets.token_hex(32))

    @property
    def protocol(self) -> str:
        return "3.1.1" if self.broker_kind == "embedded" else "5"

    @property
    def device_port(self) -> int:
        if self.mosquitto is not None:
            return self.mosquitto.port
        assert self.embedded is not None
        return self.embedded.port

    @property
    def passwd_file(self) -> Path:
        return self.workdir / "broker" / "passwd"

    @property
    def pid_file(self) -> Path | None:
        return self.mosquitto.pid_file if self.mosquitto is not None else None

    def server_mqtt_url(self) -> str:
        if self.mosquitto is not None:
            return self.mosquitto.server_url()
        assert self.embedded is not None
        return self.embedded.server_url()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.workdir / 'vigie.db'}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
        env.update({k: os.environ[k] for k in _PASS_THROUGH if k in os.environ})
        env.update(
            # A throw-away system: nothing is sent, and the console says so.
            VIGIE_TELEPHONY="simulated",
            VIGIE_INTERNAL_ACCESS="network",  # /metrics from this machine (benchmarks read it)
            VIGIE_SECRET_KEY=self.secret_key,
            VIGIE_DATABASE_URL=self.db_url,
            VIGIE_MQTT_URL=self.server_mqtt_url(),
            VIGIE_BROKER_PASSWD_FILE=str(self.passwd_file),
            VIGIE_BROKER_ACL_FILE=str(self.workdir / "broker" / "acl"),
        )
        if self.pid_file is not None:
            env["VIGIE_BROKER_PID_FILE"] = str(self.pid_file)
        if self.mosquitto is not None:
            # MQTT buttons (VIGIE_BUTTONS_FILE): the server gives its own account read access
            # to exactly their topics in the servers' listener ACL.
            env["VIGIE_BROKER_SERVERS_ACL_FILE"] = str(self.mosquitto.servers_acl_file)
        if self.broker_kind == "embedded":
            env["VIGIE_MQTT_PROTOCOL"] = "3.1.1"
        env.update(self.extra_env)
        return env

    def start(
        self, timeout_s: float | None = None, *, with_server: bool | None = None
    ) -> LocalStack:
        """The broker, then (unless ``with_server`` or the field says not) the server; a caller
        with something to register first (``vigie devices import``, a buttons file) starts
        the server itself with :meth:`start_server`."""
        if self.broker_kind == "mosquitto":
            self.mosquitto = LocalMosquitto(self.workdir / "broker").start()
        elif self.broker_kind == "embedded":
            (self.workdir / "broker").mkdir(parents=True, exist_ok=True)
            broker_files.write_passwd(self.passwd_file, {})
            broker_files.write_acl(self.workdir / "broker" / "acl", [])
            self.embedded = EmbeddedBroker(
                passwd_file=self.passwd_file, acl_file=self.workdir / "broker" / "acl"
            ).start()
        else:
            raise ValueError(f"broker inconnu : {self.broker_kind!r} (mosquitto ou embedded)")
        if self.with_server if with_server is None else with_server:
            self.start_server(timeout_s)
        return self

    def start_server(self, timeout_s: float | None = None) -> None:
        """Start `vigie server` and wait for /healthz (``timeout_s``: None for the deadline
        `vigie.launch` derives from the starts measured on this machine)."""
        self.http_port = free_port()
        self.server = launch.spawn(
            [sys.executable, "-m", "alert_server.cli", "server", "--port", str(self.http_port)],
            env=self.env(),
            cwd=_REPO,
            log_path=self.workdir / "server.log",
        )

        def healthy() -> bool:
            return launch.http_status("127.0.0.1", self.http_port) == 200

        try:
            # The server is killed by wait_ready when it does not get there.
            launch.wait_ready(self.server, healthy, what="vigie server", deadline_s=timeout_s)
        except launch.LaunchFailed as exc:
            tail = (self.workdir / "server.log").read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"vigie server n'a pas démarré ({exc}) :\n{tail}") from exc

    def provisioner(self) -> VigieCliProvisioner:
        return VigieCliProvisioner(env=self.env())

    def reload_broker(self) -> None:
        if self.mosquitto is not None:
            self.mosquitto.reload()
        # The embedded broker re-reads its password file when it changes.

    # BrokerControl, for outage scenarios (Mosquitto only: SIGKILL, then restart on the same
    # ports and data folder).
    def kill_broker(self) -> None:
        if self.mosquitto is None:
            raise RuntimeError("panne du broker : seulement avec Mosquitto")
        self.mosquitto.kill()

    def restart_broker(self) -> None:
        if self.mosquitto is None:
            raise RuntimeError("panne du broker : seulement avec Mosquitto")
        self.mosquitto.start()

    def stop(self) -> None:
        stop_process(self.server)
        self.server = None
        if self.mosquitto is not None:
            self.mosquitto.stop()
        if self.embedded is not None:
            self.embedded.stop()


@dataclass
class StackBrokerControl:
    stack: LocalStack

    def stop(self) -> None:
        self.stack.kill_broker()

    def start(self) -> None:
        self.stack.restart_broker()
