"""``vigie demo`` starts, serves /healthz, routes alerts from its simulated fleet, and stops
cleanly on Ctrl-C — with Mosquitto and with the embedded Python broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from alert_server.alerts.models import Alert
from alert_server.db import make_engine
from tests.support import REPO, wait_until
from vigie.brokers.mosquitto import free_port


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_starts_serves_and_stops_cleanly(tmp_path: Path, broker: str) -> None:
    port = free_port()
    workdir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
    args = ["demo", "--port", str(port), "--workdir", str(workdir), "--press-every", "1"]
    if broker == "embedded":
        args.append("--no-mosquitto")
    out = (tmp_path / "demo.out").open("w+b")
    proc = subprocess.Popen(
        [sys.executable, "-m", "alert_server.cli", *args],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    try:
        wait_until(lambda: b"Ctrl-C" in (tmp_path / "demo.out").read_bytes(), 120, "demo ready")
        text = (tmp_path / "demo.out").read_text()
        assert f"http://127.0.0.1:{port}/dashboard/" in text
        assert "Mot de passe" in text
        assert ("intégré" in text) == (broker == "embedded")
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200
        assert health.json()["telephony"] == "simulated"
        login = httpx.get(f"http://127.0.0.1:{port}/dashboard/login", timeout=5)
        assert login.status_code == 200
        # The demo's discreet line, not the red banner of a server that calls nobody.
        assert "Démonstration : téléphonie simulée" in login.text
        assert "Téléphonie SIMULÉE" not in login.text
        engine = make_engine(f"sqlite:///{workdir / 'vigie-demo.db'}")

        def routed() -> bool:
            with Session(engine) as s:
                return bool(
                    s.exec(select(Alert).where(Alert.dispatched_at.is_not(None))).first()  # type: ignore[union-attr]
                )

        # The fleet presses, the server stores and escalates (to the simulated telephony).
        wait_until(routed, 60, "an alert from the simulated fleet escalated")
        engine.dispose()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert time.monotonic() - t0 < 45
        assert "Démonstration arrêtée." in (tmp_path / "demo.out").read_text()
        # Nothing left listening.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
