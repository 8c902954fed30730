"""The MQTT button bridge against a real server and a real Mosquitto (SQLite and PostgreSQL):
each vendor's press is an alert at the registered site, other gestures are not, availability is
presence, a press made while the server is down or while the database is out is stored after
the restart, and a bad buttons file stops the server with a French error naming the line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlmodel import Session

from alert_server.devices.models import Device
from alert_server.gateways.buttons import ButtonsFileError, parse_buttons
from tests.gateways.conftest import BUTTONS, SITE, Stack, buttons_yaml, database_locked
from tests.support import vigie, wait_until

PRESSES = {
    "pharma-shelly": {"event": "L", "event_cnt": 4},
    "pharma-zigbee": {"action": "emergency", "battery": 90, "linkquality": 120},
    "pharma-tasmota": {"Button1": {"Action": "HOLD"}},
}
NOT_PRESSES = {
    "pharma-shelly": {"event": "SS", "event_cnt": 5},
    "pharma-zigbee": {"action": "double", "battery": 88},
    "pharma-tasmota": {"Button1": {"Action": "DOUBLE"}},
}


class Button:
    """The button (or the pharmacy's zigbee2mqtt/Tasmota bridge), logged in as its device."""

    def __init__(self, stack: Stack, device_id: str) -> None:
        self.device_id = device_id
        self.topic = BUTTONS[device_id][0]
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        c.username_pw_set(device_id, stack.passwords[device_id])
        c.connect(
            "127.0.0.1", stack.broker.port, keepalive=30, properties=Properties(PacketTypes.CONNECT)
        )
        c.loop_start()
        self.client = c

    def publish(self, body: object, topic: str | None = None) -> None:
        payload = body if isinstance(body, str) else json.dumps(body)
        # QoS 0, as these devices publish.
        self.client.publish(topic or self.topic, payload, qos=0).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _device(stack: Stack, device_id: str) -> Device:
    with Session(stack.db) as s:
        d = s.get(Device, device_id)
        assert d is not None
        return d


def test_each_vendor_press_is_an_alert_at_the_site_other_gestures_are_not(stack: Stack) -> None:
    for device_id, press in PRESSES.items():
        button = Button(stack, device_id)
        try:
            before = len(stack.alerts(device_id))
            button.publish(NOT_PRESSES[device_id])
            button.publish(press)
            wait_until(
                lambda d=device_id, n=before: len(stack.alerts(d)) > n, 60, f"{device_id} alert"
            )
            alert = stack.alerts(device_id)[-1]
            assert alert.kind == "sos"
            assert (alert.pos_lat, alert.pos_lon, alert.pos_src) == (SITE[0], SITE[1], "fixed")
            assert alert.alert_id.startswith("btn-")
            # The other gesture made no alert (it came first, on the same connection).
            assert len(stack.alerts(device_id)) == before + 1
        finally:
            button.close()


def test_availability_messages_are_presence(stack: Stack) -> None:
    shelly, zigbee = Button(stack, "pharma-shelly"), Button(stack, "pharma-zigbee")
    try:
        shelly.publish("false", topic="shellies/shellybutton1-A1B2C3/online")
        zigbee.publish({"state": "offline"}, topic="zigbee2mqtt/bouton-comptoir/availability")
        wait_until(
            lambda: (
                not _device(stack, "pharma-shelly").online
                and not _device(stack, "pharma-zigbee").online
            ),
            30,
            "offline",
        )
        shelly.publish("true", topic="shellies/shellybutton1-A1B2C3/online")
        wait_until(lambda: _device(stack, "pharma-shelly").online, 30, "online again")
    finally:
        shelly.close()
        zigbee.close()


def test_the_acl_gives_the_server_exactly_the_configured_topics(stack: Stack) -> None:
    servers_acl = stack.broker.servers_acl_file.read_text(encoding="utf-8")
    button_reads = {
        line.split(" ", 2)[2]
        for line in servers_acl.splitlines()
        if line.startswith("topic read ")
        and not line.startswith("topic read vigie/")
        and "$SYS" not in line
    }
    expected = {t for t, _ in BUTTONS.values()} | {
        "shellies/shellybutton1-A1B2C3/online",
        "zigbee2mqtt/bouton-comptoir/availability",
        "tele/bouton-reserve/LWT",
    }
    assert button_reads == expected
    # A device account can publish its own button's topic only: this is dropped by the broker.
    shelly = Button(stack, "pharma-shelly")
    try:
        before = len(stack.alerts("pharma-zigbee"))
        shelly.publish(PRESSES["pharma-zigbee"], topic=BUTTONS["pharma-zigbee"][0])
        shelly.publish(PRESSES["pharma-shelly"])
        n = len(stack.alerts("pharma-shelly"))
        wait_until(
            lambda: (
                len(stack.alerts("pharma-shelly")) > n - 1 and bool(stack.alerts("pharma-shelly"))
            ),
            60,
            "own press",
        )
        time.sleep(1)
        assert len(stack.alerts("pharma-zigbee")) == before
    finally:
        shelly.close()


def test_presses_survive_a_database_outage_a_crash_and_the_server_being_down(
    stack: Stack,
) -> None:
    """One restart for both paths (a server start is the slow part of these tests)."""
    journal = stack.dir / ".vigie-buttons-journal"
    zigbee_before = len(stack.alerts("pharma-zigbee"))
    tasmota_before = len(stack.alerts("pharma-tasmota"))
    zigbee = Button(stack, "pharma-zigbee")
    try:
        with database_locked(stack):
            zigbee.publish(PRESSES["pharma-zigbee"])
            # Journaled (the broker has forgotten it: QoS 0), then the server dies.
            wait_until(lambda: any(journal.glob("btn-*.json")), 60, "press journaled")
            stack.server.kill()
    finally:
        zigbee.close()
    assert len(stack.alerts("pharma-zigbee")) == zigbee_before
    # A press while the server is down: queued in the server's broker session.
    tasmota = Button(stack, "pharma-tasmota")
    try:
        tasmota.publish(PRESSES["pharma-tasmota"])
    finally:
        tasmota.close()
    stack.server.start()
    wait_until(
        lambda: len(stack.alerts("pharma-zigbee")) == zigbee_before + 1, 60, "journaled press"
    )
    wait_until(
        lambda: len(stack.alerts("pharma-tasmota")) == tasmota_before + 1, 60, "queued press"
    )
    wait_until(lambda: not any(journal.glob("btn-*.json")), 30, "journal emptied")


# -- the file ---------------------------------------------------------------------------------


def test_the_example_of_operations_md_reads() -> None:
    buttons = parse_buttons(buttons_yaml(), "b.yaml")
    assert [b.device_id for b in buttons] == list(BUTTONS)
    assert buttons[2].is_press({"Button1": {"Action": "HOLD"}})
    assert not buttons[2].is_press({"Button1": {"Action": "DOUBLE"}})


HEAD = "version: 1\nbuttons:\n  - device_id: a\n    topic: z/a\n"
ONE = "  - {device_id: a, topic: z/a, match: {action: [x]}}\n"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("version: 1\nbuttons:\n  - device_id: a\n    topic: [x\n", 4, "YAML illisible"),
        ("version: 2\nbuttons: []\n", 1, "version: 1"),
        (
            "version: 1\nbuttons:\n  - device_id: a\n    topic: 'z/#'\n    match: {action: [x]}\n",
            4,
            "sans + ni #",
        ),
        ("version: 1\nbuttons:\n  - device_id: a\n    topic: z/a\n", 3, "match"),
        (
            HEAD + "    match: {action: [x]}\n    kind: fall\n",
            6,
            "kind",
        ),
        (
            HEAD + "    match: {action: [x]}\n    colour: red\n",
            6,
            "clé inconnue",
        ),
        (
            "version: 1\nbuttons:\n" + ONE + ONE.replace("id: a", "id: b"),
            4,
            "déjà utilisé ligne 3",
        ),
    ],
)
def test_bad_files_name_the_line_in_french(text: str, line: int, words: str) -> None:
    with pytest.raises(ButtonsFileError) as exc:
        parse_buttons(text, "boutons.yaml")
    assert any(e.startswith(f"boutons.yaml:{line}:") and words in e for e in exc.value.errors), (
        exc.value.errors
    )


def test_an_unknown_device_stops_the_server_with_exit_2(
    sqlite_stack: Stack, tmp_path: Path
) -> None:
    # The file is checked before the server starts, the same way on both databases: SQLite.
    stack = sqlite_stack
    bad = tmp_path / "buttons.yaml"
    bad.write_text(
        buttons_yaml()
        + '  - device_id: pas-enregistre\n    topic: "z2m/x"\n    match: {action: [single]}\n'
    )
    out = vigie({**stack.env, "VIGIE_BUTTONS_FILE": str(bad)}, "server", "--port", "1")
    assert out.returncode == 2
    assert f"{bad}:{2 + 3 * len(BUTTONS) + 1}:" in out.stderr
    assert "pas-enregistre" in out.stderr and "n'est pas un boîtier enregistré" in out.stderr
