"""Worker notices: low battery and "offline outside a session", by SMS to the worker only.

Never to the police: these are the worker's own business (a flat battery is not an alarm).
At most once per episode: an episode (``worker_notice`` row) opens when the condition appears,
says it once, and only ends after the condition has been clear for ``rearm_s``: a device that
flaps between online and offline, or a battery hovering around the threshold, makes one SMS.
Offline DURING a session is not a notice but an alert (``alert_server.sessions``).

The devices, their workers and the running visits belong to other stages: ``detect`` is
handed what it needs of them (``WatchedDevice``, the devices in a visit), read in the same
transaction through the ports ``WorkerMessenger`` is built with.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import delete, select, update
from sqlmodel import Session

from alert_server.followup import outbox
from alert_server.followup.models import LOW_BATTERY, OFFLINE, WorkerMessage, WorkerNotice
from dispatch.messages import PARIS, to_gsm7
from vigie.persistence import insert_ignore
from vigie.timeutil import as_utc

log = logging.getLogger(__name__)

NOTICE = WorkerNotice.__table__  # type: ignore[attr-defined]


class WatchedDevice(Protocol):
    """A device in service (not revoked) and its worker, as the notices need them."""

    @property
    def device_id(self) -> str: ...

    @property
    def online(self) -> bool: ...

    @property
    def last_seen_at(self) -> datetime | None: ...

    @property
    def batt(self) -> int | None: ...

    @property
    def charging(self) -> bool | None: ...

    @property
    def worker_id(self) -> int: ...

    @property
    def phone(self) -> str: ...


class WatchedDevices(Protocol):
    """Port: every device in service with its worker (``devices.service.in_service``)."""

    def __call__(self, session: Session) -> Iterable[WatchedDevice]: ...


class DevicesInVisit(Protocol):
    """Port: the devices with an open visit (``sessions.service.devices_in_visit``)."""

    def __call__(self, session: Session) -> Collection[str]: ...


@dataclass(frozen=True)
class NoticeConfig:
    enabled: bool = True
    low_battery_pct: int = 15
    offline_after_s: float = 900.0
    rearm_s: float = 1800.0


@dataclass
class NoticeReport:
    opened: int = 0
    queued: list[str] = field(default_factory=list)
    closed: int = 0


def detect(
    session: Session,
    *,
    now: datetime,
    config: NoticeConfig,
    devices: Iterable[WatchedDevice],
    in_visit: Collection[str],
    only: Collection[str] | None = None,
) -> NoticeReport:
    """Open, notify and close episodes from the devices' stored presence. Idempotent.

    ``devices``: the devices in service; ``in_visit``: those with an open visit; ``only``:
    look at these devices alone (those ``changing`` found)."""
    report = NoticeReport()
    for step in _steps(session, now=now, config=config, devices=devices, in_visit=in_visit):
        if only is None or step.device_id in only:
            _track(session, report, step, now=now, config=config)
    return report


def changing(
    session: Session,
    *,
    now: datetime,
    config: NoticeConfig,
    devices: Iterable[WatchedDevice],
    in_visit: Collection[str],
) -> set[str]:
    """The devices whose episodes ``detect`` would change now: a read, which on SQLite takes
    no write lock (every alert's commit waits for it; most ticks change nothing)."""
    return {
        step.device_id
        for step in _steps(session, now=now, config=config, devices=devices, in_visit=in_visit)
        if _writes(step, now=now, config=config)
    }


@dataclass(frozen=True, slots=True)
class _Step:
    """One condition of one device, as the tick sees it."""

    device: WatchedDevice
    kind: str
    present: bool
    delay_s: float
    episode: WorkerNotice | None

    @property
    def device_id(self) -> str:
        return self.device.device_id


def _steps(
    session: Session,
    *,
    now: datetime,
    config: NoticeConfig,
    devices: Iterable[WatchedDevice],
    in_visit: Collection[str],
) -> Iterator[_Step]:
    episodes = {(e.device_id, e.kind): e for e in session.execute(select(WorkerNotice)).scalars()}
    for d in devices:
        batt = d.batt
        low = batt is not None and batt <= config.low_battery_pct and d.charging is not True
        # Never seen at all is not "offline" (a device still in its box); in a session it is
        # the session's business (an alert after its own delay).
        offline = not d.online and d.last_seen_at is not None and d.device_id not in in_visit
        for kind, present, delay_s in (
            (LOW_BATTERY, low, 0.0),
            (OFFLINE, offline, config.offline_after_s),
        ):
            yield _Step(d, kind, present, delay_s, episodes.get((d.device_id, kind)))


def _writes(step: _Step, *, now: datetime, config: NoticeConfig) -> bool:
    """Whether ``_track`` writes anything for this step (it writes nothing otherwise)."""
    episode = step.episode
    if not step.present:
        # A condition gone: its episode is dropped (at once if nothing was said, after the
        # re-arm delay otherwise) or marked clear.
        return episode is not None and (
            episode.notified_at is None
            or episode.clear_since is None
            or now - as_utc(episode.clear_since) >= timedelta(seconds=config.rearm_s)
        )
    if episode is None or episode.clear_since is not None:
        return True  # opened, or back before it was over
    # Told once per episode, once the condition has lasted its delay.
    return episode.notified_at is None and now - as_utc(episode.detected_at) >= timedelta(
        seconds=step.delay_s
    )


def _track(
    session: Session, report: NoticeReport, step: _Step, *, now: datetime, config: NoticeConfig
) -> None:
    if not _writes(step, now=now, config=config):
        return
    episode, kind, delay_s = step.episode, step.kind, step.delay_s
    d = step.device
    device_id, worker_id, phone, batt, last_seen_at = (
        d.device_id,
        d.worker_id,
        d.phone,
        d.batt,
        d.last_seen_at,
    )
    key = (NOTICE.c.device_id == device_id) & (NOTICE.c.kind == kind)
    if not step.present:
        if episode is None:
            return
        if episode.notified_at is None:
            # Gone before anything was said: nothing to remember.
            session.execute(delete(NOTICE).where(key))
            return
        clear_since = as_utc(episode.clear_since) if episode.clear_since else now
        if now - clear_since >= timedelta(seconds=config.rearm_s):
            session.execute(delete(NOTICE).where(key))
            report.closed += 1
        elif episode.clear_since is None:
            session.execute(update(NOTICE).where(key).values(clear_since=now))
        return

    if episode is None:
        opened = {"device_id": device_id, "kind": kind, "detected_at": now}
        if not insert_ignore(session, WorkerNotice, opened, keys=["device_id", "kind"]):
            return  # another server opened it just now: its tick carries on
        report.opened += 1
        detected_at = now
        notified = False
    else:
        detected_at = as_utc(episode.detected_at)
        notified = episode.notified_at is not None
        if episode.clear_since is not None:
            values: dict[str, object] = {"clear_since": None}
            if not notified:
                # A new stretch of the condition (not yet told): its delay starts again.
                values["detected_at"] = detected_at = now
            session.execute(update(NOTICE).where(key).values(**values))
    if notified or now - detected_at < timedelta(seconds=delay_s):
        return
    # Compare-and-set: one server tells, once.
    res = session.execute(
        update(NOTICE).where(key, NOTICE.c.notified_at.is_(None)).values(notified_at=now)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return
    context: dict[str, object] = {"device_id": device_id}
    if kind == LOW_BATTERY:
        context["batt"] = batt
    elif last_seen_at is not None:
        context["last_seen_at"] = as_utc(last_seen_at).isoformat()
    outbox.queue(
        session,
        dedupe_key=f"{kind}:{device_id}:{detected_at.isoformat()}",
        kind=kind,
        phone=phone,
        now=now,
        worker_id=worker_id,
        device_id=device_id,
        context=context,
    )
    report.queued.append(f"{kind}:{device_id}")
    log.info("worker notice queued kind=%s device_id=%s", kind, device_id)


def text(message: WorkerMessage) -> str:
    """The SMS of a notice, in French, GSM-7."""
    ctx = message.context
    if message.kind == LOW_BATTERY:
        batt = ctx.get("batt")
        level = f" ({batt} %)" if batt is not None else ""
        body = (
            f"Vigie : la batterie de votre balise est faible{level}. Rechargez-la dès que "
            "possible : une balise éteinte ne peut pas donner l'alerte."
        )
    else:
        since = ""
        if ctx.get("last_seen_at"):
            seen = datetime.fromisoformat(str(ctx["last_seen_at"])).astimezone(PARIS)
            since = f" depuis {seen:%H:%M}"
        body = (
            f"Vigie : votre balise n'est plus connectée{since}. Tant qu'elle est hors ligne, "
            "vos alertes ne peuvent pas partir. Vérifiez qu'elle est allumée et a du réseau."
        )
    return to_gsm7(body)
