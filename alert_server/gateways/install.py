"""Wiring of the gateways into one server process (called by ``alert_server.main``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from alert_server.gateways import osmand
from alert_server.gateways.intake import Intake

if TYPE_CHECKING:
    from alert_server.main import Runtime


class Gateways:
    """The gateways of one server: started after the ingest writer, stopped before it."""

    def __init__(self, runtime: Runtime) -> None:
        s = runtime.settings
        self.intake = Intake(runtime.ingestor, runtime.presence, runtime.pipeline.on_position)
        self.osmand = osmand.OsmandGateway(
            self.intake,
            osmand.Identities(runtime.engine),
            osmand.RateLimiter(s.osmand_rate_per_s, s.osmand_burst),
            osmand.OsmandMetrics(runtime.metrics.registry),
            commit_timeout_s=s.gateway_commit_timeout_s,
        )

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None


def install_gateways(app: FastAPI, runtime: Runtime) -> Gateways:
    gateways = Gateways(runtime)
    app.include_router(osmand.make_router(gateways.osmand))
    return gateways
