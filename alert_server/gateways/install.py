"""The gateways of one server process, built from the parts they use (by ``alert_server.app``,
the composition root): the ingest writer, presence, the pipeline's position hook."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from alert_server.devices.presence import PresenceTracker
from alert_server.gateways import buttons, osmand
from alert_server.gateways.intake import Intake
from alert_server.ingest.handler import Ingestor
from alert_server.positions import LastPosition
from alert_server.settings import Settings
from vigie.brokers import files as broker_files

log = logging.getLogger(__name__)


class Gateways:
    """The gateways of one server: started after the ingest writer, stopped before it."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        ingestor: Ingestor,
        presence: PresenceTracker,
        on_position: Callable[[str, LastPosition], None],
        registry: CollectorRegistry,
    ) -> None:
        s = settings
        self.settings = settings
        self.engine = engine
        self.intake = Intake(ingestor, presence, on_position)
        self.osmand = osmand.OsmandGateway(
            self.intake,
            osmand.Identities(engine),
            osmand.RateLimiter(s.osmand_rate_per_s, s.osmand_burst),
            osmand.OsmandMetrics(registry),
            commit_timeout_s=s.gateway_commit_timeout_s,
        )
        self.button_metrics = buttons.ButtonMetrics(registry)
        self.bridge: buttons.ButtonBridge | None = None

    def start(self) -> None:
        s = self.settings
        if s.buttons_file is None:
            return
        # Read whole and checked against the registered devices (the database is migrated by
        # now): any error and nothing is loaded, the server does not start.
        found = buttons.load_file(s.buttons_file, self.engine)
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
            engine=self.engine,
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


def install_gateways(app: FastAPI, gateways: Gateways) -> None:
    """The OsmAnd endpoint on the server's HTTP app."""
    app.include_router(osmand.make_router(gateways.osmand))
