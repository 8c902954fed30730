"""The AMQP transport's pure parts and its configuration checks (no broker needed)."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from alert_server.ingest.amqp import AmqpLink, parse_urls, routing_key, topic_of
from alert_server.ingest.probe import SubscriptionProbe
from alert_server.safety import problems
from alert_server.settings import Settings
from vigie import topics


def test_routing_keys_are_the_mqtt_plugins_mapping() -> None:
    # RabbitMQ's MQTT plugin swaps "/" and "." between MQTT topics and routing keys.
    assert routing_key(topics.uplink("dev-1", "alert")) == "vigie.v1.dev.dev-1.alert"
    assert routing_key(topics.cmd("dev-1")) == "vigie.v1.dev.dev-1.cmd"
    assert topic_of("vigie.v1.dev.dev-1.hb") == "vigie/v1/dev/dev-1/hb"
    assert topics.parse(topic_of(routing_key(topics.uplink("a_b-c", "session")))) == (
        "a_b-c",
        "session",
    )


def test_amqp_urls_are_checked() -> None:
    assert len(parse_urls("amqp://u:p@h1:5672/%2F, amqp://u:p@h2:5673/%2F")) == 2
    with pytest.raises(ValueError, match="VIGIE_AMQP_URL"):
        parse_urls("")
    with pytest.raises(ValueError, match="amqp://"):
        parse_urls("mqtt://h:1883")


def test_a_downlink_matched_by_the_binding_never_reaches_ingest() -> None:
    seen: list[str] = []
    link = AmqpLink("amqp://u:p@127.0.0.1:1/%2F", client_id="vigie-server")
    # Started (nothing listens on port 1: its connection thread only retries) to receive.
    link.start(lambda t, *a: seen.append(t))
    link.stop()

    class Method:
        def __init__(self, key: str, tag: int) -> None:
            self.routing_key, self.delivery_tag = key, tag

    class Channel:
        def __init__(self) -> None:
            self.acked: list[int] = []

        def basic_ack(self, tag: int) -> None:
            self.acked.append(tag)

    ch = Channel()
    link._on_delivery(ch, Method("vigie.v1.dev.d1.cmd", 1), None, b"{}")
    link._on_delivery(ch, Method("vigie.v1.dev.d1.alert", 2), None, b"{}")
    assert seen == ["vigie/v1/dev/d1/alert"]
    assert ch.acked == [1]  # the alert waits for its commit


def test_probe_only_accepts_its_own_nonce_and_fails_when_nothing_comes_back() -> None:
    probe = SubscriptionProbe("test", timeout_s=0.3, clock=time.monotonic)
    nonce = probe.new_nonce()
    assert not probe.arrived(b"vigie-probe:someone-else")
    assert probe.arrived(nonce) and probe.ok.is_set()
    silent = SubscriptionProbe("silent", timeout_s=0.3, clock=time.monotonic)
    silent.new_nonce()
    assert silent.failed.wait(10) and not silent.ok.is_set()


def _settings(**kw: str) -> Settings:
    key = SecretStr("k" * 8 + "0123456789abcdef" * 3)
    return Settings.model_validate({"telephony": "simulated", "secret_key": key, **kw})


def test_ingest_choice_is_checked() -> None:
    assert not any("VIGIE_INGEST" in p or "VIGIE_AMQP" in p for p in problems(_settings()))
    assert any("VIGIE_INGEST" in p for p in problems(_settings(ingest="kafka")))
    assert any("VIGIE_AMQP_URL" in p for p in problems(_settings(ingest="amqp")))
    ok = _settings(ingest="amqp", amqp_url="amqp://u:p@h:5672/%2F")
    assert not any("VIGIE_AMQP" in p for p in problems(ok))
