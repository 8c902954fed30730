"""Helpers shared by the benchmarks: machine description, process memory, a bare MQTT echo.

Not a benchmark itself (``run_all.py`` runs the benchmarks).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import re
import shutil
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt


# -- machine -------------------------------------------------------------------------------
def cpu_model() -> str:
    with contextlib.suppress(OSError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def ram_gib() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def mosquitto_version() -> str | None:
    exe = shutil.which("mosquitto")
    if exe is None:
        return None
    # ``mosquitto -h`` prints "mosquitto version 2.0.11" and exits non-zero.
    out = subprocess.run([exe, "-h"], capture_output=True, text=True, check=False)
    m = re.search(r"mosquitto version (\S+)", out.stdout + out.stderr)
    return m.group(1) if m else "?"


def postgres_version(dsn: str) -> str | None:
    """The server's version (``SHOW server_version``), None if it cannot be reached."""
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else None
    except Exception:
        return None


def machine_info() -> dict[str, Any]:
    soft_hard = None
    with contextlib.suppress(Exception):
        import resource

        soft_hard = list(resource.getrlimit(resource.RLIMIT_NOFILE))
    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "ram_gib": round(ram_gib(), 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "mosquitto": mosquitto_version(),
        "nofile_soft_hard": soft_hard,
        "loadavg": list(os.getloadavg()),
    }


# -- process memory ------------------------------------------------------------------------
def _kib_field(path: Path, name: str) -> int | None:
    try:
        with path.open() as fh:
            for line in fh:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kib(pid: int | str = "self") -> int | None:
    """Resident set size (``VmRSS`` of ``/proc/<pid>/status``), KiB."""
    return _kib_field(Path(f"/proc/{pid}/status"), "VmRSS")


def pss_kib(pid: int | str = "self") -> int | None:
    """Proportional set size (``/proc/<pid>/smaps_rollup``), KiB; None when not readable."""
    return _kib_field(Path(f"/proc/{pid}/smaps_rollup"), "Pss")


def memory_of(pid: int | str = "self") -> dict[str, int | None]:
    """RSS and PSS, in total and for anonymous memory only (heap, stacks: what a process
    allocates; the file-backed part is mostly shared libraries), KiB."""
    status, rollup = Path(f"/proc/{pid}/status"), Path(f"/proc/{pid}/smaps_rollup")
    return {
        "rss_kib": _kib_field(status, "VmRSS"),
        "rss_anon_kib": _kib_field(status, "RssAnon"),
        "pss_kib": _kib_field(rollup, "Pss"),
        "pss_anon_kib": _kib_field(rollup, "Pss_Anon"),
    }


# -- output --------------------------------------------------------------------------------
def write_json(path: Path | None, data: Any) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


# -- the cycle collector -------------------------------------------------------------------
class GcPauses:
    """The cycle collector's collections while it is started, and the longest pause (every
    thread of the process waits through one). ``settle`` first does what ``vigie server`` does
    once started (alert_server/cli.py): one collection, then every object alive set apart from
    the later ones, so that a benchmark running the server's parts in its own process is not
    slowed by scans of its own set-up that the server never makes."""

    def __init__(self) -> None:
        self.count = 0
        self.longest_ms = 0.0
        self._t0 = 0.0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.count += 1
            self.longest_ms = max(self.longest_ms, (time.perf_counter() - self._t0) * 1000)

    def start(self, *, settle: bool = True) -> GcPauses:
        if settle:
            gc.collect()
            gc.freeze()
        gc.callbacks.append(self._on_gc)
        return self

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        gc.unfreeze()


# -- a bare MQTT "server" ------------------------------------------------------------------
class MqttEcho:
    """A bare paho subscriber on the server account: it subscribes to every uplink like the
    server does, and answers each alert at once with ``alert.received`` on the device's cmd
    topic. It stores nothing, routes nothing: the baseline for press → ``alert.received``."""

    def __init__(self, host: str, port: int, username: str, password: str) -> None:
        self.messages = 0
        self.alerts = 0
        ready = threading.Event()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="bench-echo", protocol=mqtt.MQTTv5
        )
        c.username_pw_set(username, password)
        c.max_inflight_messages_set(100)
        c.on_connect = lambda cl, *a: cl.subscribe("vigie/v1/dev/+/+", 1)
        c.on_subscribe = lambda *a: ready.set()
        c.on_message = self._on
        c.on_socket_open = lambda cl, u, s: s.setsockopt(6, 1, 1)  # TCP_NODELAY
        c.connect(host, port)
        c.loop_start()
        if not ready.wait(10):
            raise RuntimeError("echo baseline: no SUBACK from the broker")
        self.client = c

    def _on(self, client: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages += 1
        if not msg.topic.endswith("/alert"):
            return
        self.alerts += 1
        device_id = msg.topic.split("/")[3]
        try:
            aid = json.loads(msg.payload)["alert_id"]
        except (ValueError, KeyError, TypeError):
            return
        client.publish(
            f"vigie/v1/dev/{device_id}/cmd",
            json.dumps({"v": 1, "type": "alert.received", "alert_id": aid}),
            qos=1,
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
