"""Prometheus metrics of one server instance (its own registry, served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "vigie_mqtt_messages", "MQTT messages received, by uplink type", ["type"], registry=r
        )
        self.rejected = Counter(
            "vigie_mqtt_rejected",
            "MQTT messages rejected (or kept as alerts with unknown details), by reason",
            ["type", "reason"],
            registry=r,
        )
        self.unknown_fields = Counter(
            "vigie_mqtt_unknown_fields",
            "Messages carrying fields the protocol does not define",
            ["type"],
            registry=r,
        )
        self.alerts_stored = Counter("vigie_alerts_stored", "New alerts stored", registry=r)
        self.alert_repeats = Counter(
            "vigie_alert_repeats", "Repeats of an already stored alert_id", registry=r
        )
        self.alerts_merged = Counter(
            "vigie_alerts_merged",
            "New alerts attached to their device's running incident (a flood of presses)",
            registry=r,
        )
        self.pin_checks = Counter(
            "vigie_pin_checks", "Cancel PINs decided, by verdict", ["verdict"], registry=r
        )
        self.alerts_flagged = Counter(
            "vigie_alerts_flagged", "Alerts stored with a flag, by flag", ["flag"], registry=r
        )
        self.ingest_batch_seconds = Histogram(
            "vigie_ingest_batch_seconds", "Time to commit one ingest batch", registry=r
        )
        self.ingest_queue = Gauge(
            "vigie_ingest_queue", "Messages waiting to be committed", registry=r
        )
        self.mqtt_connected = Gauge(
            "vigie_mqtt_connected", "1 when the broker connection is up", registry=r
        )
        self.db_errors = Counter(
            "vigie_db_errors", "Database errors while ingesting (retried)", registry=r
        )
