"""The simulator's Traccar Client and MQTT buttons speak what the real gateways read (the same
server as the gateway tests): what `vigie sim`, `vigie demo` and the load run send is stored."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from alert_server.gateways.buttons import parse_buttons
from device_sim.gateways import BUTTON_KINDS, MqttButton, OsmandDevice, OsmandLoad, buttons_file
from tests.gateways.conftest import BUTTONS, Stack
from tests.support import REPO, wait_until


def test_simulated_traccar_client_v10_and_v9(stack: Stack) -> None:
    for version in (10, 9):
        device_id = f"sim-traccar-v{version}"
        ident = stack.add_osmand(device_id)["osmand_id"]
        phone = OsmandDevice(
            stack.server.url + "/gateway/osmand", ident, 43.6, 1.44, version=version
        )  # type: ignore[arg-type]
        assert phone.position() == 200
        assert stack.alerts(device_id) == []
        assert phone.sos() == 200
        (alert,) = stack.alerts(device_id)
        assert alert.kind == "sos" and alert.batt == 80 and alert.pos_lat == 43.6


def test_simulated_buttons_of_each_kind(stack: Stack) -> None:
    names = {"shelly": "A1B2C3", "zigbee": "bouton-comptoir", "tasmota": "bouton-reserve"}
    devices = {"shelly": "pharma-shelly", "zigbee": "pharma-zigbee", "tasmota": "pharma-tasmota"}
    for kind in BUTTON_KINDS:
        device_id = devices[kind]
        assert (
            parse_buttons(buttons_file([(device_id, kind, names[kind])]), "x")[0].topic
            == BUTTONS[device_id][0]
        )
        before = len(stack.alerts(device_id))
        button = MqttButton(
            kind, names[kind], device_id, stack.passwords[device_id], "127.0.0.1", stack.broker.port
        )
        try:
            assert button.start()
            button.press()
            wait_until(
                lambda d=device_id, n=before: len(stack.alerts(d)) == n + 1, 60, f"{kind} press"
            )
        finally:
            button.stop()


def test_the_load_mix_of_traccar_phones(stack: Stack) -> None:
    phones = [
        OsmandDevice(
            stack.server.url + "/gateway/osmand",
            stack.add_osmand(f"sim-load-{i}")["osmand_id"],
            45.0,
            4.0 + i / 100,
        )
        for i in range(2)
    ]
    mix = OsmandLoad(phones, sos_rate=5.0, position_every_s=0.5, seed=3)
    mix.start()
    wait_until(lambda: sum(1 for p in phones for s in p.sent if s[0] == "sos") >= 3, 60, "SOS")
    mix.stop()
    sos = [s for p in phones for s in p.sent if s[0] == "sos"]
    assert all(status == 200 for _, status, _ in sos)
    stored = sum(len(stack.alerts(f"sim-load-{i}")) for i in range(2))
    # Every SOS answered 200 is stored (two within one second may be one alert: same id).
    assert 1 <= stored <= len(sos)
    assert "SOS" in mix.summary() and f"{len(sos)}" in mix.summary()


def test_sim_load_spawn_mixes_phones_and_buttons_with_the_fleet(tmp_path: Path) -> None:
    """`vigie sim load --spawn --osmand --buttons`: phones and buttons registered through one
    `vigie devices import` before the server starts, every button seen online before it is
    pressed, and every press stored (counted in the spawned system's database)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
    env.update(TMPDIR=str(tmp_path), VIGIE_GEO_DIR=os.environ.get("VIGIE_GEO_DIR", ""))
    out = subprocess.run(
        [sys.executable, "-m", "alert_server.cli", "sim", "load", "--spawn",
         "--devices", "3", "--hb-interval", "2", "--alert-rate", "0.5", "--duration", "6",
         "--drain", "30", "--osmand", "2", "--osmand-sos-rate", "0.5",
         "--buttons", "3", "--button-rate", "1"],
        env=env, capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traccar Client (OsmAnd) : 2 téléphones" in out.stdout
    found = re.search(r"Boutons MQTT \(shelly, tasmota, zigbee\) : 3 boutons, 3 connectés, (\d+)",
                      out.stdout)  # fmt: skip
    assert found, out.stdout
    presses = int(found.group(1))
    assert presses >= 1
    (db,) = tmp_path.glob("vigie-sim-*/vigie.db")
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute(
            "SELECT count(*) FROM alert WHERE device_id LIKE 'bouton-%'"
        ).fetchone()
    assert stored == presses
