"""The composition root: builds and wires every part of one server (``Runtime.build``), then
the FastAPI app around it (``create_app``); starts them in order and stops them in reverse."""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor as SchedulerPool
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text

from alert_server import audit as audit_trail
from alert_server.alerts import dispatch_timeline
from alert_server.background import BACKGROUND_JOBS, Background
from alert_server.dashboard import install_dashboard
from alert_server.db import make_engine, migrate, read_scope
from alert_server.devices.pins import PinGate, PinPolicy
from alert_server.devices.presence import PresenceTracker
from alert_server.dispatch_bridge import DispatchBridge, WorkerOkBridge
from alert_server.downlink import Downlink
from alert_server.followup import api as followup_api
from alert_server.gateways.install import Gateways, install_gateways
from alert_server.geo import service as geo_service
from alert_server.geo.providers import HttpGeolocationProvider, OfflineRadioTable, RadioLocator
from alert_server.ingest.handler import Ingestor
from alert_server.ingest.links import Link, build_link
from alert_server.metrics import Metrics
from alert_server.phoneapp.routes import install_phone_app
from alert_server.pipeline import SWEEP_GRACE, Pipeline
from alert_server.referents import service as referents_service
from alert_server.safety import UnsafeConfiguration, problems
from alert_server.safety import check as check_safety
from alert_server.settings import Settings
from dispatch import DispatchConfig, Dispatcher
from dispatch.channels.base import ChecksCredentials, Closes, Notifier, ProviderHealth
from dispatch.channels.simulated import SimulatedNotifier
from dispatch.channels.twilio import TwilioNotifier
from dispatch.clock import JOB_THREADS as DISPATCH_JOB_THREADS
from dispatch.webhooks import make_router
from vigie.persistence import WalCheckpointer
from vigie.timeutil import utcnow

log = logging.getLogger(__name__)

# The server's own periodic jobs, on their own executor of the one scheduler.
SERVER_EXECUTOR = "server"
PIPELINE_SWEEP = "pipeline-sweep"
SERVER_JOBS = (PIPELINE_SWEEP, *BACKGROUND_JOBS)


def build_scheduler() -> BackgroundScheduler:
    """The one scheduler of a server process. Dispatch's clock (sweep and wake-ups) runs on
    its default executor, sized as dispatch needs; the server's jobs on ``SERVER_EXECUTOR``,
    one thread each (every job is ``max_instances=1``): no job waits for a thread behind
    another, and the server's jobs can be stopped, waiting for a running one, before the
    parts they use while dispatch's clock keeps running until dispatch stops."""
    return BackgroundScheduler(
        jobstores={"default": MemoryJobStore()},
        executors={
            "default": SchedulerPool(DISPATCH_JOB_THREADS),
            SERVER_EXECUTOR: SchedulerPool(len(SERVER_JOBS)),
        },
        timezone=UTC,
    )


@dataclass
class Runtime:
    """Everything one server process runs, in start order."""

    settings: Settings
    engine: Engine
    metrics: Metrics
    presence: PresenceTracker
    pipeline: Pipeline
    ingestor: Ingestor
    link: Link
    dispatcher: Dispatcher
    notifier: Notifier
    # The last request to the telephony provider (shared with the notifier), for /healthz.
    provider_health: ProviderHealth
    # The one scheduler: dispatch's clock and the server's jobs (``build_scheduler``).
    scheduler: BackgroundScheduler
    # Timed visits, worker notices and SMS, retention purge (jobs on ``scheduler``).
    background: Background | None = None
    # SQLite: the write-ahead log copied into the database off the writers' commits.
    checkpointer: WalCheckpointer | None = None

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        # `vigie server` refuses first with a one-line message; this keeps any other way of
        # building a server (tests, embedding) from running on an unsafe configuration.
        check_safety(settings)
        engine = make_engine(settings.database_url, checkpoints_elsewhere=True)
        metrics = Metrics()
        presence = PresenceTracker(
            engine,
            settings.presence_flush_s,
            position_retention=timedelta(days=settings.retention_position_days),
        )
        # Built in order, nothing attached afterwards: the link first (it publishes once
        # connected), the downlink on it, ..., the ingest writer, which the link hands every
        # message to from ``start`` on (``Runtime.start``).
        link = build_link(
            settings, on_connected=lambda up: metrics.mqtt_connected.set(1 if up else 0)
        )
        downlink = Downlink(link.publish)
        pin_policy = PinPolicy(
            max_failures=settings.pin_max_failures,
            window_s=settings.pin_window_s,
            lockout_s=settings.pin_lockout_s,
        )

        provider_health = ProviderHealth()
        notifier = _notifier(settings, provider_health)
        scheduler = build_scheduler()
        dispatcher = Dispatcher(
            engine=engine,
            notifier=notifier,
            # Dispatch tells the alert server about acknowledgements through these hooks.
            hooks=DispatchBridge(engine, downlink=downlink),
            # The worker's "I am fine" on the verification call lands on the alert.
            verification_hooks=WorkerOkBridge(engine, downlink),
            background=True,
            scheduler=scheduler,
            config=dispatch_config(settings),
        )
        pipeline = Pipeline(
            engine,
            presence=presence,
            downlink=downlink,
            dispatcher=dispatcher,
            providers=_providers(settings),
            provider_timeout_s=settings.geo_provider_timeout_s,
            pin_policy=pin_policy,
            session_default_duration_s=settings.session_default_duration_s,
            session_checkin_extend_s=settings.session_checkin_extend_s,
            flood_window_s=settings.flood_window_s,
        )
        ingestor = Ingestor(
            engine,
            presence=presence,
            pipeline=pipeline,
            metrics=metrics,
            downlink=downlink,
            pins=PinGate(engine, policy=pin_policy),
        )
        background = Background.build(
            settings,
            engine,
            downlink=downlink,
            alert_stored=pipeline.alert_stored,
            notifier=notifier,
        )
        return cls(
            settings,
            engine,
            metrics,
            presence,
            pipeline,
            ingestor,
            link,
            dispatcher=dispatcher,
            notifier=notifier,
            provider_health=provider_health,
            scheduler=scheduler,
            background=background,
            checkpointer=WalCheckpointer(engine),
        )

    def start(self, *, before_intake: Callable[[], None] | None = None) -> None:
        """Start everything; ``before_intake`` runs once the reference data are loaded,
        before the first message is taken or the first escalation step is run."""
        migrate(self.engine)
        if self.checkpointer is not None:
            self.checkpointer.start()
        self._load_reference_data()
        if before_intake is not None:
            before_intake()
        self.presence.start()
        # The one scheduler: dispatch's clock first (its jobs), the server's jobs below.
        self.scheduler.start()
        self.dispatcher.start_background()
        self.ingestor.start()
        self.ingestor.pins.start()
        self.link.start(self.ingestor.handle)
        self.scheduler.add_job(
            self.pipeline.sweep,
            "interval",
            seconds=5,
            id=PIPELINE_SWEEP,
            executor=SERVER_EXECUTOR,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        if self.background is not None:
            self.background.schedule(self.scheduler, executor=SERVER_EXECUTOR)
        # Alerts stored by a server that died before routing them: do not wait for the sweep.
        self.pipeline.sweep(utcnow() + SWEEP_GRACE)
        if isinstance(self.notifier, ChecksCredentials):
            # Rejected Twilio credentials show on /healthz now rather than at the first alert;
            # in the background, so a slow provider never delays the start.
            threading.Thread(
                target=self.notifier.check_credentials, name="vigie-telephony-check", daemon=True
            ).start()
        log.info(
            "vigie server started (database %s, telephony %s)",
            self.engine.url.render_as_string(),
            self.notifier.name,
        )

    def _load_reference_data(self) -> None:
        s = self.settings
        if s.geo_dir is not None:
            summary = geo_service.load_from_dir(self.engine, s.geo_dir)
            log.info("boundaries from %s: %s", s.geo_dir, summary)
        if geo_service.current_index(self.engine) is None:
            log.warning(
                "no boundaries loaded (vigie geo import or VIGIE_GEO_DIR): every alert goes "
                "to the national fallback"
            )
        if s.referents_file is not None:
            referents_service.sync_from_file(self.engine, s.referents_file)
        if referents_service.current_directory(self.engine) is None:
            log.error(
                "no referent directory loaded (vigie referents import or VIGIE_REFERENTS_FILE):"
                " alerts are stored but nobody can be called"
            )

    def stop(self) -> None:
        # Reverse order. Ingest first stops taking messages and commits/acks what it holds,
        # while the broker connection is still up; anything not acknowledged stays queued in
        # the broker session for the next start.
        self._stop_server_jobs()
        self.ingestor.stop()
        self.pipeline.shutdown()
        self.link.stop()
        self.dispatcher.shutdown(wait=True)
        self.scheduler.shutdown(wait=True)
        if isinstance(self.notifier, Closes):
            self.notifier.close()
        self.presence.stop()
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()
        log.info("vigie server stopped")

    def _stop_server_jobs(self) -> None:
        """No server job starts any more, and one still running is waited for (its executor
        is shut down); dispatch's clock goes on until ``dispatcher.shutdown``."""
        for job_id in SERVER_JOBS:
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(job_id)
        if self.scheduler.running:
            self.scheduler.remove_executor(SERVER_EXECUTOR, shutdown=True)

    def healthy(self) -> dict[str, bool]:
        db_ok = True
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            db_ok = False
        return {
            "database": db_ok,
            "broker": self.link.connected.is_set(),
            # The message this server sent itself through its subscription came back.
            "subscription": self.link.probe.ok.is_set(),
        }


def _notifier(settings: Settings, health: ProviderHealth) -> Notifier:
    """The telephony ``VIGIE_TELEPHONY`` names, never another one (``check_safety`` has made
    sure that the Twilio settings are all there when it says "twilio")."""
    s = settings
    if s.telephony == "twilio" and s.twilio_account_sid and s.twilio_auth_token and s.twilio_from:
        return TwilioNotifier(
            account_sid=s.twilio_account_sid,
            auth_token=s.twilio_auth_token.get_secret_value(),
            from_number=s.twilio_from,
            api_base=s.twilio_api_base,
            public_url=s.public_url,
            health=health,
        )
    if s.telephony == "simulated":
        log.warning(
            "VIGIE_TELEPHONY=simulated: no SMS and no call is sent%s",
            " (demo)" if s.demo else "",
        )
        return SimulatedNotifier(auto_ack_after_s=s.simulated_auto_ack_s, health=health)
    raise UnsafeConfiguration(problems(s) or [f"VIGIE_TELEPHONY={s.telephony!r}"])


def _providers(settings: Settings) -> list[RadioLocator]:
    providers: list[RadioLocator] = []
    if settings.geo_radio_table is not None:
        providers.append(OfflineRadioTable.from_csv(settings.geo_radio_table))
    if settings.geo_provider_url:
        providers.append(HttpGeolocationProvider(settings.geo_provider_url))
    return providers


def dispatch_config(settings: Settings) -> DispatchConfig:
    """Dispatch's settings from the server's (``VIGIE_*``; the rest keep dispatch's defaults)."""
    return DispatchConfig(
        public_url=settings.public_url,
        lease_s=settings.dispatch_lease_s,
        low_send_workers=settings.dispatch_low_send_workers,
        sms_ack_max_wrong=settings.sms_ack_max_wrong,
        sms_ack_lock_window_s=settings.sms_ack_lock_window_s,
        verify_s=settings.verify_automatic_s,
        verify_kinds=tuple(settings.verify_kinds),
    )


def create_app(settings: Settings, *, before_intake: Callable[[], None] | None = None) -> FastAPI:
    """The server's application; ``before_intake``: see ``Runtime.start``."""
    runtime = Runtime.build(settings)
    # Existing devices (OsmAnd, MQTT buttons): through the same ingest writer as MQTT uplinks.
    gateways = Gateways(
        settings=settings,
        engine=runtime.engine,
        ingestor=runtime.ingestor,
        presence=runtime.presence,
        on_position=runtime.pipeline.on_position,
        registry=runtime.metrics.registry,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start(before_intake=before_intake)
        # Existing devices (OsmAnd, MQTT buttons): after the ingest writer, stopped before it.
        gateways.start()
        try:
            yield
        finally:
            gateways.stop()
            runtime.stop()

    app = FastAPI(title="Vigie", version="0.1.0", lifespan=lifespan)
    app.state.runtime = runtime
    s = settings
    app.include_router(
        make_router(
            runtime.dispatcher,
            # Without Twilio there are no Twilio callbacks to trust: an unguessable token
            # makes every signature check fail.
            auth_token=(
                s.twilio_auth_token.get_secret_value()
                if s.twilio_auth_token is not None
                else secrets.token_hex(32)
            ),
            public_url=s.public_url,
        )
    )

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        checks = runtime.healthy()
        provider = runtime.provider_health.snapshot()
        # A provider that answers 5xx, 429 or nothing at the moment does not make the server
        # unhealthy (sends are retried); one that rejects our credentials does: nothing will
        # go out until the settings are fixed.
        ok = all(checks.values()) and not provider["credentials_rejected"]
        return JSONResponse(
            {
                "status": "ok" if ok else "degraded",
                **checks,
                "telephony": settings.telephony,
                "provider": provider,
            },
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    install_dashboard(
        app,
        runtime.settings,
        timeline_sources=[dispatch_timeline.source(runtime.dispatcher)],
    )
    install_phone_app(app)
    install_gateways(app, gateways)
    app.include_router(followup_api.router)
    app.include_router(audit_trail.router)
    install_internal_access(app, runtime)
    return app


def install_internal_access(app: FastAPI, runtime: Runtime) -> None:
    """/metrics and the API docs behind VIGIE_INTERNAL_ACCESS (alert_server/internal_access)."""
    from alert_server.internal_access import InternalAccess
    from alert_server.users import service as users_service
    from alert_server.users.schemas import ADMIN

    secret = runtime.settings.secret_key.get_secret_value()

    def is_admin_token(token: str) -> bool:
        with read_scope(runtime.engine) as session:
            p = users_service.principal_for_token(session, secret=secret, token=token, now=utcnow())
        return p is not None and p.role == ADMIN

    app.add_middleware(InternalAccess, settings=runtime.settings, is_admin_token=is_admin_token)
