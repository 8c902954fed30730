"""Topic names of protocol.md: the single source of truth for the whole code base."""

from __future__ import annotations

import re
from typing import Final

from vigie.vocabulary import UplinkTopic

PREFIX: Final = "vigie/v1/dev"
DEVICE_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{3,64}$")
# Reserved: the server's own broker account. No device may take this name.
SERVER_USERNAME: Final = "vigie-server"
# The subscription probe (operations.md 1.1): each server sends itself a message under this
# prefix and reads it back through the same kind of subscription it uses for devices.
PROBE_PREFIX: Final = "vigie/v1/probe"
# Server presence on a shared subscription (alert_server/ingest/rescue.py): each server keeps a
# retained "online" here and leaves a retained "offline" as its last will, so that a survivor
# can take over the persistent session of a server that died (mosquitto#2662).
SERVERS_PREFIX: Final = "vigie/v1/servers"

Uplink = UplinkTopic
UPLINKS: Final[tuple[Uplink, ...]] = tuple(UplinkTopic)
# QoS of the server's subscriptions: everything that matters is QoS 1 end to end.
SUBSCRIPTION_QOS: Final[dict[Uplink, int]] = {
    UplinkTopic.ALERT: 1,
    UplinkTopic.CANCEL: 1,
    UplinkTopic.SESSION: 1,
    UplinkTopic.HB: 1,
    UplinkTopic.POS: 1,
    UplinkTopic.STATUS: 1,
}


def uplink(device_id: str, suffix: Uplink) -> str:
    return f"{PREFIX}/{device_id}/{suffix}"


def cmd(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/cmd"


def subscriptions(shared_group: str = "") -> list[tuple[str, int]]:
    """Topic filters the server subscribes to (with ``$share/<group>/`` when configured)."""
    share = f"$share/{shared_group}/" if shared_group else ""
    return [(f"{share}{PREFIX}/+/{s}", SUBSCRIPTION_QOS[s]) for s in UPLINKS]


def parse(topic: str) -> tuple[str, str] | None:
    """``(device_id, suffix)`` for an uplink topic; None when the topic is not one of ours.

    The device id is returned even when it does not match DEVICE_ID_RE: the caller decides
    (an alert on a badly named topic is still kept).
    """
    if not topic.startswith(PREFIX + "/"):
        return None
    rest = topic[len(PREFIX) + 1 :].split("/")
    if len(rest) != 2 or not rest[0] or rest[1] not in UPLINKS:
        return None
    return rest[0], rest[1]


def valid_device_id(device_id: str) -> bool:
    return bool(DEVICE_ID_RE.match(device_id)) and device_id != SERVER_USERNAME
