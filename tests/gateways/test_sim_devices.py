"""The simulator's Traccar Client and MQTT buttons speak what the real gateways read (the same
server as the gateway tests): what `vigie sim`, `vigie demo` and the load run send is stored."""

from __future__ import annotations

from alert_server.gateways.buttons import parse_buttons
from device_sim.gateways import BUTTON_KINDS, MqttButton, OsmandDevice, buttons_file
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
