"""Wiring of the gateways into one server process (called by ``alert_server.main``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import FastAPI

from alert_server.devices import broker_files
from alert_server.gateways import buttons, osmand
from alert_server.gateways.intake import Intake

if TYPE_CHECKING:
    from alert_server.main import Runtime

log = logging.getLogger(__name__)


class Gateways:
    """The gateways of one server: started after the ingest writer, stopped before it."""

    def __init__(self, runtime: Runtime) -> None:
        s = runtime.settings
        self.runtime = runtime
        self.intake = Intake(runtime.ingestor, runtime.presence, runtime.pipeline.on_position)
        self.osmand = osmand.OsmandGateway(
            self.intake,
            osmand.Identities(runtime.engine),
            osmand.RateLimiter(s.osmand_rate_per_s, s.osmand_burst),
            osmand.OsmandMetrics(runtime.metrics.registry),
            commit_timeout_s=s.gateway_commit_timeout_s,
        )
        self.button_metrics = buttons.ButtonMetrics(runtime.metrics.registry)
        self.bridge: buttons.ButtonBridge | None = None

    def start(self) -> None:
        s = self.runtime.settings
        if s.buttons_file is None:
            return
        # Read whole and checked against the registered devices (the database is migrated by
        # now): any error and nothing is loaded, the server does not start.
        found = buttons.load_file(s.buttons_file, self.runtime.engine)
        servers_rules, device_rules = buttons.acl_rules(found)
        if s.broker_servers_acl_file is not None:
            broker_files.write_servers_acl(s.broker_servers_acl_file, servers_rules)
        if s.broker_acl_file is not None:
            revoked = broker_files.read_revoked(s.broker_acl_file)
            broker_files.write_acl(s.broker_acl_file, revoked, device_rules)
        if s.broker_servers_acl_file is not None or s.broker_acl_file is not None:
            broker_files.reload_broker(s.broker_pid_file)
        self.bridge = buttons.ButtonBridge(
            found,
            intake=self.intake,
            engine=self.runtime.engine,
            journal=buttons.Journal(buttons.journal_dir(s.buttons_file, s.buttons_journal_dir)),
            mqtt_url=s.mqtt_url,
            client_id=f"{s.mqtt_client_id}-buttons",
            session_expiry_s=s.mqtt_session_expiry_s,
            shared_group=s.mqtt_shared_group,
            metrics=self.button_metrics,
        )
        self.bridge.start()
        log.info("MQTT buttons: %d from %s", len(found), s.buttons_file)

    def stop(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()


def install_gateways(app: FastAPI, runtime: Runtime) -> Gateways:
    gateways = Gateways(runtime)
    app.include_router(osmand.make_router(gateways.osmand))
    return gateways
