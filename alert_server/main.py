"""App factory and lifespan: start the database, presence, ingest, MQTT; stop in reverse order."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from apscheduler.schedulers.background import BackgroundScheduler
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text

from alert_server.db import make_engine, migrate
from alert_server.devices.presence import PresenceTracker
from alert_server.ingest.handler import Ingestor
from alert_server.ingest.mqtt import MqttLink
from alert_server.metrics import Metrics
from alert_server.pipeline import Pipeline
from alert_server.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything one server process runs, in start order."""

    settings: Settings
    engine: Engine
    metrics: Metrics
    presence: PresenceTracker
    pipeline: Pipeline
    ingestor: Ingestor
    link: MqttLink
    scheduler: BackgroundScheduler = field(
        default_factory=lambda: BackgroundScheduler(timezone="UTC")
    )

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        engine = make_engine(settings.database_url)
        metrics = Metrics()
        presence = PresenceTracker(engine, settings.presence_flush_s)
        link_holder: list[MqttLink] = []

        def publish(topic: str, payload: bytes) -> None:
            link_holder[0].publish(topic, payload, qos=1)

        pipeline = Pipeline(engine, presence=presence, publish=publish)
        ingestor = Ingestor(engine, presence=presence, pipeline=pipeline, metrics=metrics)
        link = MqttLink(
            settings.mqtt_url,
            client_id=settings.mqtt_client_id,
            protocol=settings.mqtt_protocol,
            session_expiry_s=settings.mqtt_session_expiry_s,
            shared_group=settings.mqtt_shared_group,
            on_message=ingestor.handle,
            on_connected=lambda up: metrics.mqtt_connected.set(1 if up else 0),
        )
        link_holder.append(link)
        ingestor.bind(publish=publish, ack=link.acks.done)
        return cls(settings, engine, metrics, presence, pipeline, ingestor, link)

    def start(self) -> None:
        migrate(self.engine)
        self.presence.start()
        self.ingestor.start()
        self.link.start()
        self.scheduler.add_job(
            self.pipeline.sweep,
            "interval",
            seconds=5,
            id="pipeline-sweep",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        self.scheduler.start()
        log.info("vigie server started (database %s)", self.engine.url.render_as_string())

    def stop(self) -> None:
        # Reverse order. Ingest first stops taking messages and commits/acks what it holds,
        # while the broker connection is still up; anything not acknowledged stays queued in
        # the broker session for the next start.
        self.scheduler.shutdown(wait=True)
        self.ingestor.stop()
        self.pipeline.shutdown()
        self.link.stop()
        self.presence.stop()
        self.engine.dispose()
        log.info("vigie server stopped")

    def healthy(self) -> dict[str, bool]:
        db_ok = True
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            db_ok = False
        return {"database": db_ok, "broker": self.link.connected.is_set()}


def create_app(settings: Settings) -> FastAPI:
    runtime = Runtime.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        try:
            yield
        finally:
            runtime.stop()

    app = FastAPI(title="Vigie", version="0.1.0", lifespan=lifespan)
    app.state.runtime = runtime

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        checks = runtime.healthy()
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "degraded", **checks}, status_code=200 if ok else 503
        )

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
