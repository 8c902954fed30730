"""The simulator's Traccar Client and MQTT buttons speak what the real gateways read (the same
server as the gateway tests): what `vigie sim`, `vigie demo` and the load run send is stored."""

from __future__ import annotations

from alert_server.gateways.buttons import parse_buttons
from device_sim.gateways import BUTTON_KINDS, MqttButton, OsmandDevice, OsmandLoad, buttons_file
from tests.gateways.conftest import BUTTONS, Stack
from tests.support import wait_until


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
