"""From an MQTT message to a committed row, then ``alert.received``, then the PUBACK.

The paho thread only decodes and hands off (``Ingestor.handle``). Alerts, cancels and
sessions go to one writer thread that commits them in batches; heartbeats, positions and
status go to the in-memory presence tracker. Every QoS 1 message is acknowledged to the
broker only once its effect is durable.

Ingest reads and batches; what a message does to the alerts, visits and devices is decided by
the pipeline, inside the writer's transaction (``PipelinePort``). Presence and the PIN checks
are ports too (``Presence``, ``PinChecks``), plugged by the composition root.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, Engine
from sqlmodel import Session

from alert_server.db import database_unavailable, write_scope
from alert_server.downlink import AlertRef, Downlink
from alert_server.ingest.mqtt import Ack
from alert_server.metrics import Metrics
from alert_server.positions import LastPosition
from vigie import payloads, topics
from vigie.persistence import KeptConnection
from vigie.timeutil import utcnow
from vigie.vocabulary import AlertKind, DownlinkType, PinVerdict, UplinkTopic

log = logging.getLogger(__name__)

# Device clocks may drift; beyond this an alert is flagged (but always kept, and always timed
# by the server's clock for escalation).
CLOCK_SKEW_FUTURE = timedelta(minutes=2)
# An alert the device kept in its offline queue arrives late; it is flagged, not refused.
DELAYED_AFTER = timedelta(minutes=2)
RAW_MAX_CHARS = 16_384


@dataclass
class Inbound:
    device_id: str
    suffix: str
    payload: bytes
    # Called once the message is committed (the broker's PUBACK, or a gateway's answer);
    # None once the broker has its PUBACK already (a cancel, acknowledged at its PIN check).
    token: Ack | None
    received_at: datetime
    # A cancel, read and its PIN checked (off the writer) before it reaches the writer.
    cancel: payloads.CancelMsg | None = None
    verdict: PinVerdict | None = None


@dataclass
class AlertDraft:
    """What the server knows of an alert message, valid or not."""

    alert_id: str
    device_id: str
    kind: str
    original_kind: str | None
    flags: list[str]
    device_ts: datetime | None
    batt: int | None
    pos: payloads.Position | None
    raw: str
    errors: list[str] = field(default_factory=list)
    # Set while storing: the incident this press joined, and what its device must be told.
    incident_of: str | None = None
    incident_acknowledged_by: str | None = None
    incident_duress: bool = False

    def values(self, created_at: datetime) -> dict[str, Any]:
        pos = self.pos
        return {
            "alert_id": self.alert_id,
            "device_alert_id": self.alert_id,
            "device_id": self.device_id,
            "kind": self.kind,
            "original_kind": self.original_kind,
            "duress": False,
            "flags": sorted(set(self.flags)),
            "created_at": created_at,
            "last_press_at": created_at,
            "device_ts": self.device_ts,
            "batt": self.batt,
            "pos_lat": pos.lat if pos else None,
            "pos_lon": pos.lon if pos else None,
            "pos_acc_m": pos.acc_m if pos else None,
            "pos_at": (pos.ts or self.device_ts) if pos else None,
            "pos_src": pos.src if pos else None,
            "raw": self.raw,
        }


def _check_device(device_id: str, msg: Any) -> None:
    """A payload naming another device than its topic is refused (protocol.md): the topic is
    what the broker's ACL vouches for."""
    claimed = (msg.model_extra or {}).get("device_id")
    if claimed is not None and claimed != device_id:
        raise payloads.PayloadError(
            "device_mismatch", f"payload device_id {str(claimed)[:64]!r} != topic"
        )


def _readable_alert_id(value: object) -> str | None:
    if isinstance(value, str) and 1 <= len(value) <= 64 and value.isprintable():
        return value
    return None


_ALERT_ID_RE = re.compile(rb'"alert_id"\s*:\s*"([\x21\x23-\x5b\x5d-\x7e]{1,64})"')


def _lenient_decode(payload: bytes) -> dict[str, Any] | None:
    """Best effort on a payload the strict decoder refused (oversized, NaN, broken JSON):
    anything readable in it helps to identify and place the alert."""
    try:
        data = json.loads(payload.decode("utf-8", errors="replace"))
        if isinstance(data, dict):
            return data
    except (ValueError, RecursionError):
        pass
    m = _ALERT_ID_RE.search(payload)
    return {"alert_id": m.group(1).decode()} if m else None


def interpret_alert(device_id: str, payload: bytes, now: datetime) -> AlertDraft:
    """Read an alert message, salvaging every readable part of a malformed one.

    An alert is never dropped for being incomplete: unreadable parts become flags.
    """
    raw = payloads.db_text(payload[:RAW_MAX_CHARS].decode("utf-8", errors="replace"))
    flags: list[str] = []
    errors: list[str] = []
    if not topics.valid_device_id(device_id):
        flags.append("bad_device_id")
    data: dict[str, Any] | None = None
    msg: payloads.AlertMsg | None = None
    try:
        data = payloads.decode_json(payload)
        msg = payloads.AlertMsg.model_validate(data)
    except payloads.PayloadError as exc:
        flags.append("malformed")
        if exc.reason == "oversized":
            flags.append("oversized")
        errors.append(str(exc))
    except ValueError as exc:  # pydantic.ValidationError
        flags.append("malformed")
        errors.append(str(exc).splitlines()[0] + ": " + "; ".join(str(exc).splitlines()[1:3]))

    if data is None:
        data = _lenient_decode(payload)
    if data is not None and "device_id" in data and data["device_id"] != device_id:
        # The topic is what the broker's ACL vouches for; a payload naming another device
        # is suspicious but the alert is still escalated, as the topic's device's.
        flags.append("device_mismatch")
        errors.append(f"payload device_id {str(data['device_id'])[:64]!r} != topic {device_id!r}")

    if msg is not None:
        alert_id, kind_in, device_ts, batt, pos = msg.alert_id, msg.kind, msg.ts, msg.batt, msg.pos
        if msg.unknown_fields():
            flags.append("unknown_fields")
        if pos is not None and pos.ts is not None and pos.ts > now + CLOCK_SKEW_FUTURE:
            flags.append("clock_skew")
    else:
        alert_id, kind_in, device_ts, batt, pos = None, None, None, None, None
        if data is not None:
            alert_id = _readable_alert_id(data.get("alert_id"))
            k = data.get("kind")
            kind_in = k if isinstance(k, str) and 0 < len(k) <= 64 else None
            try:
                pos = payloads.Position.model_validate(data.get("pos"))
            except ValueError:
                pos = None
            b = data.get("batt")
            batt = b if isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 100 else None
            try:
                ts = data.get("ts")
                device_ts = payloads._parse_ts(ts) if ts is not None else None
            except ValueError:
                device_ts = None
        if alert_id is None:
            # Nothing identifies it: derive a stable id from the bytes, so that the broker's
            # redeliveries of this same message are still recognised as one alert.
            digest = hashlib.sha256(device_id.encode() + b"\0" + payload).hexdigest()
            alert_id = f"unreadable-{digest[:40]}"
            flags.append("no_alert_id")

    if kind_in in payloads.KNOWN_KINDS:
        kind, original = kind_in, None
    else:
        # Unknown (or unreadable) kinds are escalated as an SOS, the original kept.
        kind, original = "sos", payloads.db_text(kind_in) if kind_in else kind_in
        flags.append("unknown_kind")
    if device_ts is not None:
        if device_ts > now + CLOCK_SKEW_FUTURE:
            flags.append("clock_skew")
        elif device_ts < now - DELAYED_AFTER:
            flags.append("delayed")
    if pos is None:
        flags.append("no_position")
    assert alert_id is not None
    return AlertDraft(
        alert_id=alert_id,
        device_id=payloads.db_text(device_id[:64]),
        kind=kind,
        original_kind=original,
        flags=flags,
        device_ts=device_ts,
        batt=batt,
        pos=pos,
        raw=raw,
        errors=errors,
    )


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """What storing an alert message did (``PipelinePort.store_alert``)."""

    alert_id: str  # the server's key of the alert (new or repeated)
    created: bool  # False: a repeat of an alert already stored
    flags: list[str]  # as stored


class PipelinePort(Protocol):
    """What ingest needs from the rest of the server (implemented by ``pipeline.Pipeline``).

    The ``store_*``, ``on_cancel`` and ``on_session`` calls run on the writer thread, inside
    its transaction; what they return to do after the commit (tell the device) is run once
    the batch is committed."""

    def store_alert(
        self, session: Session | Connection, *, draft: AlertDraft, now: datetime
    ) -> StoredAlert:
        """Store an alert message: a new alert, a press joining its device's running incident
        (``draft.incident_*`` then say which and what its device must be told), or a repeat."""
        ...

    def store_unreadable_alert(self, session: Session, *, values: dict[str, Any]) -> StoredAlert:
        """The minimal record of an alert message that cannot be stored normally."""
        ...

    def alert_stored(self, alert_id: str) -> None: ...

    def on_cancel(
        self,
        session: Session,
        *,
        device_id: str,
        msg: payloads.CancelMsg,
        verdict: PinVerdict,
        now: datetime,
    ) -> list[Callable[[], None]]: ...

    def on_session(
        self, session: Session, *, device_id: str, msg: payloads.SessionMsg, now: datetime
    ) -> list[Callable[[], None]]: ...

    def on_position(self, device_id: str, position: LastPosition) -> None: ...


class Presence(Protocol):
    """Port: the devices' presence, kept in memory (``devices.presence.PresenceTracker``)."""

    def seen(
        self,
        device_id: str,
        at: datetime,
        *,
        online: bool | None = ...,
        batt: int | None = ...,
        charging: bool | None = ...,
        position: LastPosition | None = ...,
    ) -> None: ...

    def heartbeat(self, device_id: str, at: datetime) -> None: ...


class PinChecks(Protocol):
    """Port: the checks of cancel PINs, off the writer (``devices.pins.PinGate``)."""

    def submit(
        self, device_id: str, pin: str, done: Callable[[PinVerdict], None], *, subject: str = ""
    ) -> None:
        """Check ``pin``; ``done`` receives the verdict (on the checker's thread). ``subject``
        is the alert the cancel is about."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None:
        """Decide every check already submitted (checked, or within a bounded stop answered
        ``unverifiable``), then stop."""
        ...


class FairQueue:
    """The messages waiting for the writer: one line per device, served in turn.

    One device pressing as fast as it can (a stuck button, an attack) must not make another
    device's alert wait behind its flood: a batch takes one message from each waiting device in
    turn, and at most ``per_device`` from any one of them. A device's own messages keep their
    order (an alert before its cancel); the broker still gets its acknowledgements in arrival
    order (``AckSequencer``), only the commits and receipts are fair.
    """

    def __init__(self, per_device: int = 32) -> None:
        self.per_device = per_device
        self._cv = threading.Condition()
        self._lines: dict[str, deque[Inbound]] = {}
        self._turn: deque[str] = deque()
        self._size = 0
        self._closed = False

    def put(self, item: Inbound) -> int:
        """Queue ``item`` behind its device's earlier messages; returns the queue's size."""
        with self._cv:
            line = self._lines.get(item.device_id)
            if line is None:
                line = self._lines[item.device_id] = deque()
                self._turn.append(item.device_id)
            line.append(item)
            self._size += 1
            self._cv.notify()
            return self._size

    def close(self) -> None:
        """No more messages: ``take`` hands out what is left, then says it is finished."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def qsize(self) -> int:
        with self._cv:
            return self._size

    def take(self, max_items: int) -> tuple[list[Inbound], bool]:
        """Wait for messages and return up to ``max_items`` of them, the devices in turn; the
        flag is True once the queue is closed and empty (nothing will ever come again)."""
        with self._cv:
            while self._size == 0 and not self._closed:
                self._cv.wait()
            batch: list[Inbound] = []
            taken: dict[str, int] = {}
            skipped: list[str] = []
            while self._turn and len(batch) < max_items:
                device_id = self._turn.popleft()
                line = self._lines[device_id]
                if taken.get(device_id, 0) >= self.per_device:
                    skipped.append(device_id)  # its share of this batch is used up
                    continue
                batch.append(line.popleft())
                self._size -= 1
                taken[device_id] = taken.get(device_id, 0) + 1
                if line:
                    self._turn.append(device_id)
                else:
                    del self._lines[device_id]
            # The devices that used their share go first next time, in the same order.
            self._turn.extendleft(reversed(skipped))
            return batch, self._closed and self._size == 0


class Ingestor:
    def __init__(
        self,
        engine: Engine,
        *,
        presence: Presence,
        pipeline: PipelinePort,
        metrics: Metrics,
        downlink: Downlink,
        pins: PinChecks,
        batch_max: int = 200,
    ) -> None:
        self.engine = engine
        self.presence = presence
        self.pipeline = pipeline
        self.metrics = metrics
        self.downlink = downlink
        self.pins = pins
        self.batch_max = batch_max
        self._queue = FairQueue()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        # The writer's own connection for its batches of alerts (the one thread using it).
        self._kept = KeptConnection(engine)

    def _ack_item(self, item: Inbound) -> None:
        if item.token is not None:
            item.token()

    def submit(self, item: Inbound) -> None:
        """A message from a gateway (alert_server/gateways): the same writer, storage and
        rules as an MQTT uplink; ``item.token`` is called once its effect is committed."""
        self.metrics.ingest_queue.set(self._queue.put(item))

    # -- paho thread ---------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes, retain: bool, ack: Ack) -> None:
        """A message from the link (its thread): ``ack`` once its effect is durable."""
        if self._closing.is_set():
            # Shutting down: leave it unacknowledged; the broker keeps it for the next start.
            return
        parsed = topics.parse(topic)
        if parsed is None:
            self._reject("unknown", "bad_topic", topic, "not a Vigie uplink topic")
            ack()
            return
        device_id, suffix = parsed
        received_at = utcnow()
        self.metrics.messages.labels(suffix).inc()
        if suffix in ("alert", "session"):
            size = self._queue.put(Inbound(device_id, suffix, payload, ack, received_at))
            self.metrics.ingest_queue.set(size)
            return
        try:
            if not topics.valid_device_id(device_id):
                raise payloads.PayloadError("bad_device_id", f"invalid device id {device_id!r}")
            msg = payloads.parse_uplink(suffix, payload)
            _check_device(device_id, msg)
            self._count_unknown_fields(suffix, msg)
            if isinstance(msg, payloads.CancelMsg):
                self._check_pin(device_id, payload, msg, received_at)
            else:
                self._presence(device_id, msg, retain)
        except payloads.PayloadError as exc:
            self._reject(suffix, exc.reason, topic, str(exc))
            self.downlink.error(device_id, topic=topic, reason=exc.reason)
        ack()

    def _check_pin(
        self, device_id: str, payload: bytes, msg: payloads.CancelMsg, received_at: datetime
    ) -> None:
        """Hand the cancel to the PIN gate; its verdict goes to the writer.

        The broker gets this cancel's PUBACK now, not after the commit: PUBACKs leave in
        order, and one held for a PIN check (argon2) would hold back every later message of
        every device. If the server dies before the verdict is committed the cancel is lost,
        which fails safe: the alert keeps escalating and the device, with no
        ``alert.cancelled``, lets the worker type her PIN again. A stop does not wait for a
        flood of cancels: what the gate has not checked within its bound is answered
        ``unverifiable`` (``PinGate.stop``).
        """

        def decided(verdict: PinVerdict) -> None:
            item = Inbound(device_id, "cancel", payload, None, received_at, msg, verdict)
            self.metrics.ingest_queue.set(self._queue.put(item))

        self.pins.submit(device_id, msg.pin, decided, subject=msg.alert_id)

    def _presence(self, device_id: str, msg: Any, retain: bool) -> None:
        now = utcnow()
        if isinstance(msg, payloads.StatusMsg):
            # A retained status is old news, replayed by the broker on subscribe: it sets the
            # online flag but is not a sign of life.
            online = msg.state == "online"
            self.presence.seen(device_id, now, online=online)
            return
        position = None
        pos = getattr(msg, "pos", None)
        if pos is not None:
            position = LastPosition(pos.lat, pos.lon, pos.acc_m, pos.ts or msg.ts, pos.src)
        if isinstance(msg, payloads.HeartbeatMsg):
            self.presence.seen(
                device_id, now, batt=msg.batt, charging=msg.charging, position=position
            )
            self.presence.heartbeat(device_id, now)
        elif isinstance(msg, payloads.PosMsg) and position is not None:
            self.presence.seen(device_id, now, position=position)
            self.pipeline.on_position(device_id, position)

    def _count_unknown_fields(self, suffix: str, msg: Any) -> None:
        if msg.unknown_fields():
            self.metrics.unknown_fields.labels(suffix).inc()

    def _reject(self, type_: str, reason: str, topic: str, detail: str) -> None:
        self.metrics.rejected.labels(type_, reason).inc()
        # One line per rejected message would let a broken or hostile device fill the log:
        # the first of each kind and reason is written, the rest summarised once a minute.
        log.warning(
            "rejected %s message on %s (%s): %s",
            type_,
            topic,
            reason,
            detail,
            extra={"vigie_fields": {"type": type_, "reason": reason, "topic": topic}},
        )

    # -- writer thread -------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vigie-ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop taking messages, commit and acknowledge everything already taken."""
        self._closing.set()
        # The cancels already acknowledged to the broker are decided and committed first.
        self.pins.stop()
        self._queue.close()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._thread is None or not self._thread.is_alive():
            self._kept.close()

    def _run(self) -> None:
        finished = False
        while not finished:
            batch, finished = self._queue.take(self.batch_max)
            self.metrics.ingest_queue.set(self._queue.qsize())
            if batch:
                self._commit_with_retry(batch)
        self._kept.close()

    def _commit_with_retry(self, batch: list[Inbound]) -> None:
        delay = 0.05
        at_once = True
        while True:
            try:
                self._commit(batch)
                return
            except Exception as exc:
                self.metrics.db_errors.inc()
                if at_once and self._kept.lost_while_kept:
                    # The kept connection was dropped while idle (a database restart): the
                    # batch is tried again at once on a new one, checked by the pool.
                    at_once = False
                    log.warning(
                        "database connection lost, reconnecting: %s", str(exc).splitlines()[0][:200]
                    )
                    continue
                if not database_unavailable(exc):
                    log.exception("ingest commit failed for %d message(s); retrying", len(batch))
                    break
                # An outage (database down or restarting, locked, disk full): the whole batch
                # waits as it is, nothing is acknowledged, nothing is degraded.
                log.warning(
                    "database unavailable, %d message(s) waiting (retry in %.2f s): %s",
                    len(batch),
                    delay,
                    str(exc).splitlines()[0][:200],
                )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        # Isolate a message that fails on its own from the rest of the batch.
        for item in batch:
            self._commit_one(item)

    def _commit_one(self, item: Inbound) -> None:
        delay, failures = 0.05, 0
        while True:
            try:
                if failures < 3:
                    self._commit([item])
                elif item.suffix == "alert":
                    # The full path keeps failing on this alert: store it with its raw bytes
                    # only, flagged, rather than lose it. Only a database outage gets past this,
                    # and then retrying forever is right: nothing is acknowledged meanwhile.
                    self._commit_minimal_alert(item)
                else:
                    log.error(
                        "giving up on %s message from device_id=%s after %d attempts",
                        item.suffix,
                        item.device_id,
                        failures,
                    )
                    self._ack_item(item)
                return
            except Exception as exc:
                self.metrics.db_errors.inc()
                if database_unavailable(exc):
                    # Not this message's fault: it keeps its full path once the database is back.
                    log.warning("database unavailable for device_id=%s: %s", item.device_id, exc)
                else:
                    failures += 1
                    log.exception(
                        "ingest commit failed (attempt %d) device_id=%s", failures, item.device_id
                    )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _commit_minimal_alert(self, item: Inbound) -> None:
        now = item.received_at
        digest = hashlib.sha256(item.device_id.encode() + b"\0" + item.payload).hexdigest()
        try:
            data = payloads.decode_json(item.payload)
            alert_id = _readable_alert_id(data.get("alert_id")) or f"unreadable-{digest[:40]}"
        except payloads.PayloadError:
            alert_id = f"unreadable-{digest[:40]}"
        values = {
            "alert_id": alert_id,
            "device_id": payloads.db_text(item.device_id[:64]),
            "kind": AlertKind.SOS,
            "duress": False,
            "flags": ["ingest_error", "malformed"],
            "created_at": now,
            "raw": payloads.db_text(item.payload[:RAW_MAX_CHARS].decode("utf-8", errors="replace")),
        }
        with write_scope(self.engine) as session:
            stored = self.pipeline.store_unreadable_alert(session, values=values)
        self._received_sender(item.device_id, alert_id)()
        self._ack_item(item)
        if stored.created:
            self.metrics.alerts_stored.inc()
            self.pipeline.alert_stored(stored.alert_id)

    def _commit(self, batch: list[Inbound]) -> None:
        after: list[Callable[[], None]] = []
        new_alerts: list[str] = []
        # What each alert of the batch did: counted and logged once committed (an attempt
        # rolled back is neither).
        stored_alerts: list[tuple[StoredAlert, AlertDraft]] = []
        # A batch of alerts only (the usual case, and all of a flood) is written with Core
        # statements on a bare connection; a cancel or a visit goes through the ORM.
        scope = (
            self._kept.transaction()
            if all(item.suffix == "alert" for item in batch)
            else write_scope(self.engine)
        )
        with self.metrics.ingest_batch_seconds.time(), scope as session:
            for item in batch:
                # Every stored time is the arrival at the server, not the commit: a batch
                # that waited (a slow disk, a database restart) must not hide the wait.
                now = item.received_at
                if item.suffix == "alert":
                    stored, draft = self._store_alert(session, item, now)
                    stored_alerts.append((stored, draft))
                    if stored.created and draft.incident_of is None:
                        new_alerts.append(stored.alert_id)
                    after.append(self._received_sender(item.device_id, draft.alert_id))
                    if draft.incident_acknowledged_by is not None:
                        after.append(
                            self._acknowledged_sender(draft, draft.incident_acknowledged_by)
                        )
                elif item.suffix == "cancel":
                    after.extend(self._cancel(session, item, now))
                else:
                    after.extend(self._session(session, item, now))
        # Committed: count, tell each device, release the PUBACKs, start the escalations, and
        # only then write the log lines (the receipt does not wait for them).
        for stored, draft in stored_alerts:
            self._count_alert(stored, draft)
        for action in after:
            try:
                action()
            except Exception:
                log.exception("post-commit action failed")
        for item in batch:
            self._ack_item(item)
        for alert_id in new_alerts:
            self.pipeline.alert_stored(alert_id)
        for stored, draft in stored_alerts:
            self._log_alert(stored, draft)

    def _received_sender(self, device_id: str, alert_id: str) -> Callable[[], None]:
        ref = AlertRef(device_id, alert_id, quiet=False)
        return lambda: self.downlink.alert(ref, DownlinkType.ALERT_RECEIVED)

    def _acknowledged_sender(self, draft: AlertDraft, by: str) -> Callable[[], None]:
        ref = AlertRef(draft.device_id, draft.alert_id, quiet=draft.incident_duress)
        return lambda: self.downlink.alert(ref, DownlinkType.ALERT_ACKNOWLEDGED, by=by)

    def _store_alert(
        self, session: Session | Connection, item: Inbound, now: datetime
    ) -> tuple[StoredAlert, AlertDraft]:
        draft = interpret_alert(item.device_id, item.payload, now)
        return self.pipeline.store_alert(session, draft=draft, now=now), draft

    def _count_alert(self, stored: StoredAlert, draft: AlertDraft) -> None:
        """An alert's metrics, once committed (before its receipt: whoever reads them after
        the receipt finds it counted)."""
        if not stored.created:
            self.metrics.alert_repeats.inc()
            return
        self.metrics.alerts_stored.inc()
        for flag in set(stored.flags):
            self.metrics.alerts_flagged.labels(flag).inc()
        if "malformed" in draft.flags:
            self.metrics.rejected.labels("alert", "kept_as_alert").inc()
        if draft.incident_of is not None:
            self.metrics.alerts_merged.inc()

    def _log_alert(self, stored: StoredAlert, draft: AlertDraft) -> None:
        """An alert's log line, once its device is told and the broker has its PUBACK."""
        if not stored.created:
            return
        if "malformed" in draft.flags:
            log.warning(
                "malformed alert kept alert_id=%s device_id=%s: %s",
                draft.alert_id,
                draft.device_id,
                "; ".join(draft.errors),
            )
        if draft.incident_of is None:
            log.info(
                "alert stored alert_id=%s device_id=%s kind=%s flags=%s",
                stored.alert_id,
                draft.device_id,
                draft.kind,
                ",".join(stored.flags),
            )
        else:
            # A flood (one device pressing again and again) would be a line per press: the
            # first is written, the rest summarised once a minute per incident
            # (alert_server/logging_setup.py).
            log.info(
                "press joined incident alert_id=%s device_id=%s incident_of=%s",
                stored.alert_id,
                draft.device_id,
                draft.incident_of,
                extra={
                    "vigie_fields": {"device_id": draft.device_id, "incident_of": draft.incident_of}
                },
            )

    def _cancel(
        self, session: Session | Connection, item: Inbound, now: datetime
    ) -> list[Callable[[], None]]:
        assert isinstance(session, Session)  # a batch with a cancel has a session
        assert item.cancel is not None and item.verdict is not None
        return self.pipeline.on_cancel(
            session, device_id=item.device_id, msg=item.cancel, verdict=item.verdict, now=now
        )

    def _session(
        self, session: Session | Connection, item: Inbound, now: datetime
    ) -> list[Callable[[], None]]:
        assert isinstance(session, Session)  # a batch with a visit message has a session
        topic = topics.uplink(item.device_id, UplinkTopic.SESSION)
        try:
            if not topics.valid_device_id(item.device_id):
                raise payloads.PayloadError("bad_device_id", "invalid device id")
            msg = payloads.parse_uplink("session", item.payload)
            _check_device(item.device_id, msg)
        except payloads.PayloadError as exc:
            self._reject("session", exc.reason, topic, str(exc))
            return [self._session_refused(item, exc)]
        assert isinstance(msg, payloads.SessionMsg)
        self._count_unknown_fields("session", msg)
        if msg.pos is not None:
            p = msg.pos
            self.presence.seen(
                item.device_id,
                now,
                position=LastPosition(p.lat, p.lon, p.acc_m, p.ts or msg.ts, p.src),
            )
        return self.pipeline.on_session(session, device_id=item.device_id, msg=msg, now=now)

    def _session_refused(self, item: Inbound, exc: payloads.PayloadError) -> Callable[[], None]:
        """``session.rejected`` when the message names its session, ``error`` otherwise: the
        worker must know she is NOT being watched."""
        data = _lenient_decode(item.payload) or {}
        session_id = _readable_alert_id(data.get("session_id"))
        action = data.get("action") if data.get("action") in payloads.SESSION_ACTIONS else None
        reason = "memo_too_long" if exc.field == "memo" else "bad_payload"
        device_id = item.device_id
        topic = topics.uplink(device_id, UplinkTopic.SESSION)

        def tell() -> None:
            if session_id is None:
                self.downlink.error(device_id, topic=topic, reason=exc.reason)
            else:
                self.downlink.session(
                    device_id,
                    DownlinkType.SESSION_REJECTED,
                    session_id=session_id,
                    action=action,
                    reason=reason,
                )

        return tell
