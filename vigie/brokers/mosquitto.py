"""A local Mosquitto started from ``broker_config/`` (tests, development, ``vigie demo``)."""

from __future__ import annotations

import getpass
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from vigie.brokers import files as broker_files
from vigie.topics import SERVER_USERNAME

REPO_ROOT = Path(__file__).resolve().parents[2]
BROKER_CONFIG_DIR = REPO_ROOT / "broker_config"


def stop_process(proc: subprocess.Popen[bytes] | None, timeout_s: float = 30.0) -> None:
    """SIGTERM (a clean shutdown), then SIGKILL if it does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# Linux: the ports the kernel gives to outgoing connections (net.ipv4.ip_local_port_range).
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Below this, the ports of services a machine may run (PostgreSQL, brokers, web servers…).
_LOWEST_PORT = 10_000
_random = random.SystemRandom()  # never the tests' seeded ``random``: workers must differ


def ephemeral_range(file: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int] | None:
    """(lowest, highest) port the kernel hands to outgoing connections; None if unknown."""
    try:
        low, high = (int(x) for x in file.read_text().split())
    except (OSError, ValueError):
        return None
    return low, high


def free_port(*, ephemeral: tuple[int, int] | None = None) -> int:
    """A TCP port free on 127.0.0.1 now, outside the range of ports the kernel gives to
    outgoing connections (``ephemeral``, read from the system by default).

    A server stopped and started again on the same port (a restart test, a broker restarted
    under its devices' sessions) must find its port free. A port from the ephemeral range, as
    ``bind(0)`` returns, can be taken in between by any outgoing connection of the machine:
    a server restarted during a whole test run was refused with EADDRINUSE. Outside that
    range only another listener can take it, and that one would have to draw the same port
    among ~27,000.
    """
    low, high = ephemeral or ephemeral_range() or (0, -1)
    if high >= low:
        candidates = [
            *range(_LOWEST_PORT, min(low, 65536)),
            *range(max(high + 1, _LOWEST_PORT), 65536),
        ]
        for _ in range(100 if candidates else 0):
            port = _random.choice(candidates)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue  # someone listens there (or it is in TIME_WAIT): draw again
                return port
    # No known range (not Linux), or nothing free outside it: the kernel's choice.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@dataclass
class LocalMosquitto:
    """Mosquitto on two free loopback ports: one for devices, one for servers, each with its own
    password file and ACL (``per_listener_settings true``): a device account cannot log in on
    the servers' listener."""

    data_dir: Path
    port: int = 0
    server_port: int = 0
    ws_port: int = 0  # MQTT over WebSocket for phones (same device accounts and ACL)
    server_password: str = field(default_factory=broker_files.generate_password)
    process: subprocess.Popen[bytes] | None = None

    @property
    def passwd_file(self) -> Path:
        return self.data_dir / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.data_dir / "acl"

    @property
    def servers_passwd_file(self) -> Path:
        return self.data_dir / "servers.passwd"

    @property
    def servers_acl_file(self) -> Path:
        return self.data_dir / "servers.acl"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "mosquitto.pid"

    @property
    def conf_file(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    def ws_url(self) -> str:
        """The phones' MQTT-over-WebSocket URL (``VIGIE_MQTT_WS_URL``)."""
        return f"ws://127.0.0.1:{self.ws_port}"

    def server_url(self) -> str:
        return f"mqtt://{SERVER_USERNAME}:{self.server_password}@127.0.0.1:{self.server_port}"

    @staticmethod
    def available() -> bool:
        return shutil.which("mosquitto") is not None

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.server_port = self.server_port or free_port()
        self.ws_port = self.ws_port or free_port()
        # Devices' files (vigie devices add/revoke write them): no server account in there.
        if not self.passwd_file.exists():
            broker_files.write_passwd(self.passwd_file, {})
        if not self.acl_file.exists():
            broker_files.write_acl(self.acl_file, [])
        broker_files.write_passwd(
            self.servers_passwd_file,
            {SERVER_USERNAME: broker_files.mosquitto_hash(self.server_password)},
        )
        broker_files.write_servers_acl(self.servers_acl_file)
        template = (BROKER_CONFIG_DIR / "mosquitto.local.conf").read_text(encoding="utf-8")
        self.conf_file.write_text(
            template.format(
                port=self.port,
                server_port=self.server_port,
                ws_port=self.ws_port,
                data_dir=self.data_dir,
                passwd_file=self.passwd_file,
                acl_file=self.acl_file,
                servers_passwd_file=self.servers_passwd_file,
                servers_acl_file=self.servers_acl_file,
                pid_file=self.pid_file,
                user=getpass.getuser(),
            ),
            encoding="utf-8",
        )

    def start(self) -> LocalMosquitto:
        if self.conf_file.exists() is False or not self.port:
            self.prepare()
        exe = shutil.which("mosquitto")
        if exe is None:
            raise RuntimeError("mosquitto is not installed")
        self.process = subprocess.Popen(
            [exe, "-c", str(self.conf_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.port)
            wait_for_port(self.server_port)
            wait_for_port(self.ws_port)
        except OSError as exc:
            err = b""
            if self.process.poll() is not None and self.process.stderr is not None:
                err = self.process.stderr.read()
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {err.decode(errors='replace')}") from exc
        return self

    def reload(self) -> None:
        broker_files.reload_broker(self.pid_file)

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None

    def kill(self) -> None:
        """Crash the broker (SIGKILL): for outage tests."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None
