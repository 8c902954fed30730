"""Start-up times a person waits for: ``vigie --help``, ``vigie devices list``, ``vigie server``
until ``/healthz`` answers, ``vigie demo`` until it prints the console URL (first and second run).

Each is run as a person would run it, a fresh process each time, repeated; the median and the
best are reported (the best is the least disturbed by other work on the machine).

    uv run python benchmarks/startup.py [--repeat 5] [--demo-runs 2] [--json out.json]

Needs ``VIGIE_GEO_DIR`` for the server (boundaries imported first, as in production) and the
demo; ``mosquitto`` for the demo. The geo parse cache goes to a temporary ``XDG_CACHE_HOME``,
so the demo's first run is cold and its second run warm.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from vigie.brokers.mosquitto import LocalMosquitto

REPO = Path(__file__).resolve().parent.parent
VIGIE = [sys.executable, "-m", "alert_server.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stats(xs: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(xs), "best_s": min(xs), "runs_s": xs}


def time_command(args: list[str], env: dict[str, str], repeat: int) -> dict[str, Any]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([*VIGIE, *args], env=env, cwd=REPO, check=True, capture_output=True)
        out.append(time.perf_counter() - t0)
    return _stats(out)


def time_server(env: dict[str, str], repeat: int) -> dict[str, Any]:
    out = []
    for _ in range(repeat):
        port = _free_port()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [*VIGIE, "server", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = t0 + 300
            while time.perf_counter() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError("server exited")
                time.sleep(0.02)
            out.append(time.perf_counter() - t0)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return _stats(out)


def time_demo(env: dict[str, str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [*VIGIE, "demo", "--port", str(_free_port())],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if "Console :" in line:
                    out.append(time.perf_counter() - t0)
                    break
            else:
                raise RuntimeError("demo exited before printing its URL")
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--demo-runs", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    geo_dir = os.environ.get("VIGIE_GEO_DIR")
    result: dict[str, Any] = {"loadavg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="vigie-startup-") as tmp:
        broker = LocalMosquitto(Path(tmp) / "broker").start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
        env.update(
            XDG_CACHE_HOME=str(Path(tmp) / "cache"),
            VIGIE_DATABASE_URL=f"sqlite:///{tmp}/vigie.db",
            VIGIE_MQTT_URL=broker.server_url(),
            VIGIE_BROKER_PASSWD_FILE=str(broker.passwd_file),
            VIGIE_BROKER_ACL_FILE=str(broker.acl_file),
            VIGIE_SECRET_KEY=secrets.token_hex(32),
            VIGIE_TELEPHONY="simulated",
        )
        try:
            _measure(args, env, geo_dir, tmp, result)
        finally:
            broker.stop()
    result["loadavg_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def _measure(
    args: argparse.Namespace, env: dict[str, str], geo_dir: str | None, tmp: str, result: Any
) -> None:
    result["help"] = time_command(["--help"], env, args.repeat)
    subprocess.run([*VIGIE, "devices", "list"], env=env, cwd=REPO, check=True, capture_output=True)
    result["devices_list"] = time_command(["devices", "list"], env, args.repeat)
    if geo_dir:
        env["VIGIE_GEO_DIR"] = geo_dir
        # First start imports the boundaries into the database (not measured).
        time_server(env, 1)
        result["server_healthz"] = time_server(env, args.repeat)
        if args.demo_runs:
            demo_env = {k: v for k, v in env.items() if not k.startswith("VIGIE_")}
            demo_env["VIGIE_GEO_DIR"] = geo_dir
            demo_env["XDG_CACHE_HOME"] = str(Path(tmp) / "demo-cache")
            result["demo_url_s"] = time_demo(demo_env, args.demo_runs)


if __name__ == "__main__":
    sys.exit(main())
