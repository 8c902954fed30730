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
        # Wide: on a busy shared machine the server alone has taken up to two minutes to start.
        wait_until(lambda: b"Ctrl-C" in (tmp_path / "demo.out").read_bytes(), 600, "demo ready")
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
        # The phone app: the printed link enrols, and the credentials work over WebSocket.
        assert_phone_enrols(text, port)
        engine = make_engine(f"sqlite:///{workdir / 'vigie-demo.db'}")

        def routed() -> bool:
            with Session(engine) as s:
                return bool(
                    s.exec(select(Alert).where(Alert.dispatched_at.is_not(None))).first()  # type: ignore[union-attr]
                )

        # The fleet presses, the server stores and escalates (to the simulated telephony).
        wait_until(routed, 300, "an alert from the simulated fleet escalated")

        def stored_from(device_id: str) -> bool:
            with Session(engine) as s:
                return s.exec(select(Alert).where(Alert.device_id == device_id)).first() is not None

        # Existing devices too: a Traccar Client phone (OsmAnd), and with Mosquitto a
        # zigbee2mqtt button through the bridge.
        wait_until(lambda: stored_from("demo-traccar"), 300, "an SOS from Traccar Client")
        if broker == "mosquitto":
            wait_until(lambda: stored_from("demo-bouton-port"), 300, "a zigbee2mqtt press")
        engine.dispose()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert time.monotonic() - t0 < 45
        assert "Démonstration arrêtée." in (tmp_path / "demo.out").read_text()
        # A folder the user chose (--workdir) is theirs: kept, and said so.
        assert f"conservés dans {workdir}" in (tmp_path / "demo.out").read_text()
        assert (workdir / "vigie-demo.db").exists()
        # Nothing left listening.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()


def test_demo_folder_is_removed_unless_kept(tmp_path: Path) -> None:
    from alert_server.demo import finish_workdir

    for keep, owned, gone in ((False, True, True), (True, True, False), (False, False, False)):
        folder = tmp_path / f"demo-{keep}-{owned}"
        (folder / "broker").mkdir(parents=True)
        (folder / "vigie-demo.db").write_bytes(b"x" * 1000)
        line = finish_workdir(folder, keep=keep, owned=owned)
        assert folder.exists() is not gone
        assert str(folder) in line and (("effacés" in line) is gone)


def assert_phone_enrols(text: str, port: int) -> None:
    import re
    import threading

    import paho.mqtt.client as mqtt

    m = re.search(rf"http://127\.0\.0\.1:{port}/app/enrol\?code=(\S+)", text)
    assert m, text
    creds = httpx.post(
        f"http://127.0.0.1:{port}/app/api/enrol", json={"code": m.group(1)}, timeout=10
    ).json()
    assert creds["ws_url"].startswith("ws://127.0.0.1:"), creds
    done = threading.Event()
    rc: list[object] = []
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=creds["device_id"],
        protocol=mqtt.MQTTv311,
        transport="websockets",
    )
    c.username_pw_set(creds["mqtt_username"], creds["mqtt_password"])
    c.on_connect = lambda cl, u, f, code, p: (rc.append(code), done.set())
    c.connect("127.0.0.1", int(creds["ws_url"].rsplit(":", 1)[1]), keepalive=10)
    c.loop_start()
    try:
        assert done.wait(30), "no CONNACK over WebSocket"
        assert not rc[0].is_failure, rc  # type: ignore[attr-defined]
    finally:
        c.disconnect()
        c.loop_stop()
