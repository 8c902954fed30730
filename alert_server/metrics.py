"""Prometheus metrics of one server instance (its own registry, served at /metrics)."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, Histogram

from vigie.persistence import sqlite_memory


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Python's cycle collector: its collections by generation (each one pauses every
        # thread), and the objects set apart from its scans once the server has started.
        GCCollector(registry=r)
        Gauge(
            "vigie_gc_frozen_objects",
            "Objects set apart from the cycle collector's scans at the end of start-up",
            registry=r,
        ).set_function(gc.get_freeze_count)
        # SQLite's own heap in this process: each pooled connection keeps a page cache (up to
        # 2 MiB). Read beside the process's memory, it tells SQLite's share of a growth.
        memory = sqlite_memory()
        if memory is not None:
            Gauge(
                "vigie_sqlite_memory_bytes",
                "Memory held by SQLite in this process: page caches, statements, schemas",
                registry=r,
            ).set_function(memory)
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
