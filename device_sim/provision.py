"""Giving simulated devices their MQTT credentials (and, when possible, a registered worker).

- ``VigieCliProvisioner`` runs ``vigie devices add … --json``, the real path: the server then
  knows the worker's PIN and duress PIN, so cancels are checked for real.
- ``write_broker_passwords`` writes many devices straight into the broker's password file in
  one go and reloads the broker. A TEST SHORTCUT for load runs (10,000 × ``vigie devices add``
  would take longer than the run itself): the devices exist only on the broker, the server
  stores their alerts flagged ``unknown_device`` and cannot check their PINs.
- ``StaticProvisioner``: credentials already known (a CSV ``device_id,password``).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from vigie.brokers import files as broker_files

_REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class DeviceSpec:
    device_id: str
    role: str = "nurse"
    worker: str = ""
    phone: str = "+33612345678"
    pin: str = "2468"
    duress_pin: str = "1357"
    site_lat: float | None = None
    site_lon: float | None = None
    site_label: str | None = None


class Provisioner(Protocol):
    # True when the server knows the devices' PINs (cancel/duress can be checked).
    registers_workers: bool

    def provision(self, spec: DeviceSpec) -> str:
        """Make the device known; return its MQTT password."""
        ...


class ProvisioningError(RuntimeError):
    pass


@dataclass
class VigieCliProvisioner:
    """``vigie devices add`` in a subprocess, with the given environment (``VIGIE_*``)."""

    env: Mapping[str, str] | None = None
    config: Path | None = None
    registers_workers: bool = True

    def provision(self, spec: DeviceSpec) -> str:
        args = [
            sys.executable, "-m", "alert_server.cli", "devices", "add", spec.device_id,
            "--worker", spec.worker or f"Travailleur {spec.device_id}",
            "--role", spec.role,
            "--phone", spec.phone,
            "--pin", spec.pin,
            "--duress-pin", spec.duress_pin,
            "--json",
        ]  # fmt: skip
        if spec.site_lat is not None and spec.site_lon is not None:
            args += ["--site-lat", str(spec.site_lat), "--site-lon", str(spec.site_lon)]
            if spec.site_label:
                args += ["--site-label", spec.site_label]
        if self.config is not None:
            args += ["--config", str(self.config)]
        env = dict(self.env) if self.env is not None else dict(os.environ)
        for _ in range(5):
            out = subprocess.run(
                args, env=env, capture_output=True, text=True, cwd=_REPO, timeout=120, check=False
            )
            # SQLite: a registration racing the server's own commits can fail at once with
            # "database is locked"; the command writes all or nothing, so trying again is safe.
            if out.returncode == 0 or "database is locked" not in out.stderr:
                break
            time.sleep(0.2)
        if out.returncode != 0:
            raise ProvisioningError(
                f"vigie devices add {spec.device_id}: {out.stderr.strip() or out.stdout.strip()}"
            )
        return str(json.loads(out.stdout)["mqtt_password"])


@dataclass
class StaticProvisioner:
    passwords: Mapping[str, str]
    registers_workers: bool = False

    @classmethod
    def from_csv(cls, path: Path, registers_workers: bool = False) -> StaticProvisioner:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = {r[0]: r[1] for r in csv.reader(fh) if len(r) >= 2 and not r[0].startswith("#")}
        rows.pop("device_id", None)  # header
        return cls(rows, registers_workers)

    def provision(self, spec: DeviceSpec) -> str:
        try:
            return self.passwords[spec.device_id]
        except KeyError:
            raise ProvisioningError(f"{spec.device_id}: pas de mot de passe connu") from None


def write_broker_passwords(
    passwd_file: Path,
    passwords: Mapping[str, str],
    *,
    reload: Callable[[], object] | None = None,
    pid_file: Path | None = None,
) -> None:
    """Add (or replace) many accounts in the broker's password file in one write, then reload.

    TEST SHORTCUT (see the module docstring): same ``$7$`` format and atomic write as
    ``broker_files.set_password``, without re-reading and re-writing the whole file per device.
    """
    entries = broker_files.read_passwd(passwd_file)
    for username, password in passwords.items():
        entries[username] = broker_files.mosquitto_hash(password)
    broker_files.write_passwd(passwd_file, entries)
    if reload is not None:
        reload()
    else:
        broker_files.reload_broker(pid_file)


@dataclass
class BrokerFileProvisioner:
    """One device at a time into the broker's password file (test shortcut, no worker)."""

    passwd_file: Path
    pid_file: Path | None = None
    reload: Callable[[], object] | None = None
    registers_workers: bool = False
    issued: dict[str, str] = field(default_factory=dict)

    def provision(self, spec: DeviceSpec) -> str:
        password = broker_files.generate_password()
        write_broker_passwords(
            self.passwd_file, {spec.device_id: password}, reload=self.reload, pid_file=self.pid_file
        )
        self.issued[spec.device_id] = password
        return password


def wait_credentials_active(
    host: str,
    port: int,
    device_id: str,
    password: str,
    *,
    protocol: str = "5",
    timeout_s: float = 15.0,
) -> bool:
    """Connect as ``device_id`` until the broker accepts it: a reload (SIGHUP) is asynchronous,
    so freshly written accounts are not usable the instant the file is replaced."""
    import paho.mqtt.client as mqtt

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result: dict[str, bool] = {}
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=device_id,
            protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311,
        )
        c.username_pw_set(device_id, password)
        c.on_connect = lambda cl, u, f, rc, p, r=result: r.setdefault("ok", not rc.is_failure)
        try:
            c.connect(host, port, keepalive=10)
            t_end = time.monotonic() + 2.0
            while "ok" not in result and time.monotonic() < t_end:
                c.loop(0.05)
        except OSError:
            pass
        finally:
            if result.get("ok"):
                c.disconnect()
                c.loop(0.05)
            sock = c.socket()
            if sock is not None:
                sock.close()
        if result.get("ok"):
            return True
        time.sleep(0.2)
    return False
