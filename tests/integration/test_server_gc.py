"""``vigie server`` keeps Python's cycle collector off while it starts, then sets the start-up's
objects apart from its scans and turns it back on, before it takes its first message.

A server left with the collector off would keep every cycle of garbage it ever made; one that
never set its start-up apart would scan the map index and every module again at each full
collection, a pause of every thread.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support import ServerProcess, server_env, wait_until
from vigie.brokers.mosquitto import LocalMosquitto


def _gc_figures(server: ServerProcess) -> tuple[float, float]:
    """(objects set apart, automatic collections of the youngest generation so far)."""
    frozen = young = 0.0
    for family in text_string_to_metric_families(server.get("/metrics")):
        for sample in family.samples:
            if sample.name == "vigie_gc_frozen_objects":
                frozen = sample.value
            elif sample.name == "python_gc_collections_total" and sample.labels == {
                "generation": "0"
            }:
                young = sample.value
    return frozen, young


def test_the_collector_is_back_on_with_the_start_up_set_apart_before_the_first_message(
    broker: LocalMosquitto, tmp_path: Path
) -> None:
    server = ServerProcess(
        server_env(broker, f"sqlite:///{tmp_path / 'vigie.db'}"), tmp_path / "server.log"
    ).start()
    try:
        # Healthy means started, ingest included: the one collection over the start-up's
        # objects (a pause of every thread) is over by then, so no alert waits for it.
        frozen, first_young = _gc_figures(server)
        assert frozen > 0, "the start-up's objects are not set apart (vigie_gc_frozen_objects)"
        # Each scrape makes thousands of objects: with the collector on, the youngest
        # generation is collected again and again meanwhile.
        wait_until(
            lambda: _gc_figures(server)[1] > first_young,
            60,
            "automatic collections after start-up (python_gc_collections_total, generation 0)",
        )
    finally:
        server.stop()
