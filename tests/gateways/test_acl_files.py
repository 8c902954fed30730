"""The buttons' block of the devices' ACL survives `vigie devices add/revoke` (which rewrite the
file), and its users are never mistaken for revoked devices."""

from __future__ import annotations

from pathlib import Path

from alert_server.gateways.buttons import acl_rules, parse_buttons
from tests.gateways.conftest import buttons_yaml
from vigie.brokers import files as broker_files


def test_buttons_block_is_kept_and_not_read_as_revoked(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    servers, devices = acl_rules(parse_buttons(buttons_yaml(), "b.yaml"))
    broker_files.write_acl(acl, ["old-device"], devices)
    assert broker_files.read_revoked(acl) == ["old-device"]
    # What `vigie devices revoke` does: rewrite with one more revoked device.
    broker_files.write_acl(acl, [*broker_files.read_revoked(acl), "nurse-1"])
    text = acl.read_text(encoding="utf-8")
    assert "user pharma-tasmota\ntopic write stat/bouton-reserve/RESULT" in text
    assert sorted(broker_files.read_revoked(acl)) == ["nurse-1", "old-device"]
    # Revoked devices come first: Mosquitto checks their deny before any button's grant.
    assert text.index("user nurse-1") < text.index("user pharma-shelly")
    # The servers' rules: the server's own, then read access to the buttons' topics only.
    rendered = broker_files.render_servers_acl(servers)
    assert rendered.startswith(broker_files.render_servers_acl())
    assert "topic write" not in rendered.removeprefix(broker_files.render_servers_acl())
