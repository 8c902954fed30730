"""The escalation engine: ``tick(now)`` claims due notification rows exactly once and sends them.

Timers are rows (``dispatch_notification.next_action_at``). A tick:
1. declares exhausted the escalations whose last pass is over;
2. claims due rows with ONE conditional UPDATE (compare-and-set on the status; on PostgreSQL
   the batch is picked with ``FOR UPDATE SKIP LOCKED`` so several servers split the work),
   giving each claim a token and a lease; a row whose lease expired (its server died) is
   claimable again;
3. for each claimed row, in a worker thread: re-checks the claim with a second compare-and-set
   (claimed → sending) and commits BEFORE calling the provider, calls it, then stores the SID.

Safety decisions:
- A row is never handed to the provider unless this server holds its claim token and its
  status is still ``claimed``: an acknowledgement cancels claimed rows in its own transaction,
  so nothing is sent after the acknowledgement committed.
- A retry is a row update with a later ``next_action_at``, never a sleep: a failing provider
  cannot delay the next step (a separate row with its own time).
- A server dying after the provider accepted the message and before the SID is stored leaves
  the row ``sending``: when its lease expires the server taking it over first asks the
  provider what it accepted for that number since the row's ``sending_at`` (``dispatch.reconcile``)
  and records that instead of sending again. Only when the provider cannot tell (lookup
  failed, or several unrecorded calls to one number make it ambiguous) is it sent again: for
  a life-safety alert a duplicate is the right failure, a lost one is not.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, case, or_, select, update
from sqlmodel import Session

from dispatch import (
    callbacks,
    inbound,
    lifecycle,
    messages,
    reads,
    reconcile,
    store,
    throttle,
    verification,
)
from dispatch.channels.base import (
    Notifier,
    PermanentSendError,
    SendError,
    SendResult,
    TransientSendError,
)
from dispatch.config import DispatchConfig, TickReport
from dispatch.hooks import DispatchHooks
from dispatch.messages import MessageContext
from dispatch.models import (
    CANCELLED,
    CLAIMED,
    FAILED,
    KIND_ACK_INFO,
    KIND_ALERT,
    KIND_DURESS,
    KIND_STAND_DOWN,
    KIND_VERIFY,
    OPEN_STATUSES,
    PLANNED,
    PRIORITY_URGENT,
    SENDING,
    SENT,
    VERIFY_PENDING,
    Escalation,
    Notification,
    Verification,
    priority_of,
)
from dispatch.reconcile import TAKEOVER_MARK
from dispatch.schemas import AckResult
from dispatch.store import NOTIF, alog
from dispatch.verification import VerificationHooks
from vigie.persistence import any_row, claim_due, is_sqlite, take_write_lock

log = logging.getLogger("dispatch")


@dataclass(frozen=True, slots=True)
class _Claim:
    id: int
    alert_id: str
    token: str
    takeover: bool
    urgent: bool = True  # which send pool (and in-flight count) it belongs to


class SendEngine:
    """The engine behind ``dispatch.api.Dispatcher``: claims due rows and sends them, and
    applies the provider's callbacks. Thread-safe; one per process.

    ``engine`` is the SQLAlchemy engine of the shared database; ``notifier`` the channel
    (``TwilioNotifier`` or ``SimulatedNotifier``); ``hooks`` the alert server's callbacks;
    ``on_new_work`` is called when work may be due sooner than planned (the background clock
    re-arms its wake-up). ``clock`` is only used by the drivers that have no ``now`` of their
    own (the after-commit kick, webhooks); every decision takes ``now`` as a parameter.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        notifier: Notifier,
        hooks: DispatchHooks,
        verification_hooks: VerificationHooks | None,
        config: DispatchConfig,
        clock: Callable[[], datetime],
        on_new_work: Callable[[str | None], None],
    ) -> None:
        self.engine = engine
        # On SQLite a claim, or the closing of what is over, takes the database's one write
        # lock, and every alert's commit waits for it: a sweep looks first, without the lock
        # (most sweeps find nothing to do). PostgreSQL claims rows, not the database.
        self._look_first = engine.dialect.name == "sqlite"
        self.notifier = notifier
        self.hooks = hooks
        self.verification_hooks = verification_hooks
        self.config = config
        self.clock = clock
        self._on_new_work = on_new_work
        self._pool = ThreadPoolExecutor(
            max_workers=self.config.send_workers, thread_name_prefix="dispatch-send"
        )
        self._low_pool = ThreadPoolExecutor(
            max_workers=max(1, self.config.low_send_workers),
            thread_name_prefix="dispatch-send-low",
        )
        # Claimed rows handed to each pool and not finished yet (True: urgent).
        self._in_flight = {True: 0, False: 0}
        self._in_flight_lock = threading.Lock()
        self._global_sends: collections.deque[datetime] = collections.deque()
        self._global_lock = threading.Lock()
        self._closed = False

    # --- lifecycle ------------------------------------------------------------------------

    def shutdown(self, *, wait: bool = True) -> None:
        self._closed = True
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
        self._low_pool.shutdown(wait=wait, cancel_futures=not wait)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def kick(self, alert_id: str | None) -> None:
        """New work may be due sooner than planned: tell whoever drives the engine."""
        try:
            self._on_new_work(alert_id)
        except Exception:
            log.exception("wake-up failed alert_id=%s", alert_id)

    # --- the engine -------------------------------------------------------------------------

    def tick(self, *, now: datetime, wait: bool = True) -> TickReport:
        """Advance every due escalation once. ``wait=False`` (the clock) returns as soon as the
        sends are handed to the worker threads."""
        report = TickReport()
        # The due sends first. Closing the records of what is over (escalations exhausted,
        # verifications timed out: their rows are due anyway) took 2-3 ms on PostgreSQL that
        # every step waited for, and its failure stopped every send of the tick.
        self._claim_and_send(now, None, wait, report)
        if self._look_first and not self._anything_to_close(now):
            return report
        with self.session() as s:
            take_write_lock(s)
            report.exhausted = lifecycle.exhaust_due(s, now=now, hooks=self.hooks)
            verification.expire_due(s, now=now)
            s.commit()
        return report

    def _anything_to_close(self, now: datetime) -> bool:
        """Whether an escalation may be exhausted or a verification timed out by ``now``: a
        read, without the write lock (a row that comes due after it waits for the next
        tick, as it would have waited had it come due after the closing)."""
        with self.session() as s:
            return lifecycle.any_exhaust_due(s, now=now) or verification.any_expire_due(s, now=now)

    def run_due(self, *, alert_id: str, now: datetime, wait: bool = True) -> TickReport:
        """Run the due work of ONE alert right away (the first SMS as soon as it is stored)."""
        report = TickReport()
        self._claim_and_send(now, alert_id, wait, report)
        return report

    def _claim_and_send(
        self, now: datetime, alert_id: str | None, wait: bool, report: TickReport
    ) -> None:
        """Claim and send the due rows, the urgent class first and on its own workers."""
        if self._closed:
            return
        futures: list[Future[str]] = []
        t0 = time.monotonic()
        for urgent in (True, False):
            pool = self._pool if urgent else self._low_pool
            workers = self.config.send_workers if urgent else max(1, self.config.low_send_workers)
            limit = self.config.batch_size
            if not wait and alert_id is None:
                # Never claim more than the workers can start soon: a claimed row waiting in
                # a queue would eat its lease. (One alert's own rows are few: always taken.)
                with self._in_flight_lock:
                    limit = min(limit, max(0, 2 * workers - self._in_flight[urgent]))
                if limit == 0:
                    continue
            claims = self._claim(now, alert_id, limit, urgent=urgent)
            report.claimed += len(claims)
            if not claims:
                continue
            with self._in_flight_lock:
                self._in_flight[urgent] += len(claims)
            for claim in claims:
                try:
                    futures.append(pool.submit(self._send_guarded, claim, now, t0))
                except RuntimeError:  # pool shut down: the lease expires and another takes over
                    with self._in_flight_lock:
                        self._in_flight[urgent] -= 1
        if wait:
            wait_futures(futures)
            for f in futures:
                report.add(f.result())
        else:
            for f in futures:
                f.add_done_callback(lambda fut: self._after_async_send(fut))

    def _after_async_send(self, fut: Future[str]) -> None:
        if (
            not fut.cancelled()
            and fut.exception() is None
            and fut.result() in {"retried", "failed"}
        ):
            self.kick(None)  # a retry or a pulled-forward step is due sooner than planned

    def _claim(
        self, now: datetime, alert_id: str | None, limit: int, *, urgent: bool | None = None
    ) -> list[_Claim]:
        """Claim up to ``limit`` due rows (of the urgent class, of the lower classes, or of
        any with ``urgent=None``), by class and then due time."""
        token = uuid.uuid4().hex
        due = or_(
            and_(NOTIF.c.status == PLANNED, NOTIF.c.next_action_at <= now),
            # A server died (or hangs) holding this row: take it over.
            and_(NOTIF.c.status.in_([CLAIMED, SENDING]), NOTIF.c.lease_until < now),
        )
        where = []
        if alert_id is not None:
            where.append(NOTIF.c.alert_id == alert_id)
        if urgent is True:
            where.append(NOTIF.c.priority <= PRIORITY_URGENT)
        elif urgent is False:
            where.append(NOTIF.c.priority > PRIORITY_URGENT)
        if alert_id is None and self._look_first:
            # A sweep: nothing due, no lock. One alert's run (its first SMS) is called because
            # its rows were just written, and claims at once.
            with self.session() as s:
                if not any_row(s, NOTIF.c.id, due, *where):
                    return []
        with self.session() as s:
            # Several servers: each picks rows nobody else is claiming right now.
            rows = claim_due(
                s,
                NOTIF,
                due=due,
                where=where,
                order_by=[NOTIF.c.priority, NOTIF.c.next_action_at, NOTIF.c.id],
                limit=limit,
                claim={
                    "status": CLAIMED,
                    "claim_token": token,
                    "claimed_by": self.config.server_id[:100],
                    "lease_until": now + timedelta(seconds=self.config.lease_s),
                    "updated_at": now,
                    "error_message": case(
                        (NOTIF.c.status == SENDING, TAKEOVER_MARK), else_=NOTIF.c.error_message
                    ),
                },
                returning=[NOTIF.c.id, NOTIF.c.alert_id, NOTIF.c.error_message, NOTIF.c.priority],
            )
            s.commit()
        claims = [
            _Claim(r[0], r[1], token, r[2] == TAKEOVER_MARK, r[3] <= PRIORITY_URGENT) for r in rows
        ]
        claims.sort(key=lambda c: c.id)
        return claims

    # --- one send -------------------------------------------------------------------------

    def _send_guarded(self, claim: _Claim, tick_now: datetime, t0: float) -> str:
        try:
            return self._send(claim, tick_now, t0)
        except Exception:
            # The lease will expire and the row be retried: never lost.
            alog(logging.ERROR, "send crashed", claim.alert_id, notification=claim.id)
            log.exception("send crashed")
            return "skipped"
        finally:
            with self._in_flight_lock:
                self._in_flight[claim.urgent] -= 1

    def _is_deferrable(self, n: Notification) -> bool:
        """Only the lower classes are ever throttled (decided from what the row is, not from
        its stored class, so a row written without one is never held back)."""
        return priority_of(n.kind, n.round_no) != PRIORITY_URGENT

    def _defer_if_limited(self, s: Session, claim: _Claim, n: Notification, now: datetime) -> str:
        """A throttled message whose number (or this server) is at its limit goes back to
        ``planned`` at its slot, and the number's other due throttled messages in line behind
        it. Returns "send", "deferred" (committed) or "skipped" (claim lost)."""
        cfg = self.config
        window = timedelta(seconds=cfg.per_number_window_s)
        spacing = window / max(1, cfg.per_number_max)
        throttle.advisory_lock(s, f"dispatch-slots:{n.phone}")
        free_at = throttle.number_free_at(
            s, phone=n.phone, now=now, per_number_max=cfg.per_number_max, window=window
        )
        lined_up = 0
        if free_at is not None:
            slot = throttle.throttle_slot(
                s, phone=n.phone, priority=n.priority, free_at=free_at, spacing=spacing, now=now
            )
        else:
            with self._global_lock:
                horizon = now - timedelta(seconds=cfg.global_window_s)
                while self._global_sends and self._global_sends[0] < horizon:
                    self._global_sends.popleft()
                if len(self._global_sends) < cfg.global_max:
                    return "send"
                # When the oldest send of the window leaves it (this server's own count).
                slot = max(
                    self._global_sends[0] + timedelta(seconds=cfg.global_window_s),
                    now + timedelta(milliseconds=10),
                )
        if not self._cas(
            s,
            claim,
            CLAIMED,
            status=PLANNED,
            claim_token=None,
            lease_until=None,
            next_action_at=slot,
            updated_at=now,
        ):
            s.rollback()
            return "skipped"
        if free_at is not None:
            lined_up = throttle.line_up_due(s, phone=n.phone, after=slot, spacing=spacing, now=now)
        s.commit()
        alog(
            logging.INFO,
            "rate limited, deferred",
            n.alert_id,
            notification=n.id,
            to=n.phone,
            until=slot.isoformat(),
            lined_up=lined_up,
        )
        return "deferred"

    def _count_global(self, now: datetime) -> None:
        with self._global_lock:
            self._global_sends.append(now)

    def _body(self, n: Notification, esc: Escalation, now: datetime) -> str:
        brief = store.brief_from_json(esc.brief)
        ctx = MessageContext(
            brief=brief,
            code=n.ack_code or esc.ack_code,
            public_url=self.config.public_url,
            duress=esc.duress,
            lang=self.config.lang,
        )
        if n.kind == KIND_ACK_INFO:
            return messages.ack_info_sms(
                ctx,
                by_name=esc.acked_by_name or "?",
                by_phone=esc.acked_by_phone,
                at=esc.acked_at or now,
                to_acker=esc.acked_by_phone is not None and esc.acked_by_phone == n.phone,
            )
        if n.kind == KIND_STAND_DOWN:
            return messages.stand_down_sms(ctx, at=esc.ended_at or now)
        if n.kind == KIND_DURESS:
            return messages.duress_sms(ctx, now)
        return messages.alert_sms(ctx, now)

    def _cas(self, s: Session, claim: _Claim, expect: str, **values: Any) -> bool:
        res = s.execute(
            update(NOTIF)
            .where(
                NOTIF.c.id == claim.id,
                NOTIF.c.claim_token == claim.token,
                NOTIF.c.status == expect,
            )
            .values(**values)
        )
        return bool(res.rowcount == 1)  # type: ignore[attr-defined]

    def _send(self, claim: _Claim, tick_now: datetime, t0: float) -> str:
        now = tick_now
        with self.session() as s:
            found = s.execute(
                select(Notification, Escalation)
                .join(Escalation, Escalation.alert_id == Notification.alert_id)  # type: ignore[arg-type]
                .where(Notification.id == claim.id)  # type: ignore[arg-type]
            ).first()
            n, esc = found if found is not None else (None, None)
            if is_sqlite(s):
                # End the read transaction: on SQLite a later write in it could fail at once.
                # Detach first, or the rollback would expire them and the next attribute read
                # would silently open a new read transaction. On PostgreSQL the compare-and-set
                # below runs in this same transaction: ending it and beginning another took
                # three more round trips (rollback, the pool's check of the connection, BEGIN).
                s.expunge_all()
                s.rollback()
            if n is None or esc is None or n.claim_token != claim.token or n.status != CLAIMED:
                return "skipped"
            if (
                claim.takeover
                and n.sending_at is not None
                and reconcile.reconcile(
                    self.engine, self.notifier, n=n, now=now, lease_s=self.config.lease_s
                )
            ):
                return "sent"  # the provider had accepted it before the crash: recorded
            take_write_lock(s)
            if n.kind == KIND_ALERT and esc.status not in OPEN_STATUSES:
                self._cas(s, claim, CLAIMED, status=CANCELLED, finished_at=now, updated_at=now)
                s.commit()
                return "skipped"
            if n.kind == KIND_VERIFY:
                v = s.get(Verification, n.alert_id)
                if esc.status not in OPEN_STATUSES or v is None or v.status != VERIFY_PENDING:
                    # Already escalated (duress, time-out…) or over: calling the worker now
                    # could only give her away or confuse her.
                    self._cas(s, claim, CLAIMED, status=CANCELLED, finished_at=now, updated_at=now)
                    s.commit()
                    return "skipped"
            if self._is_deferrable(n):
                decided = self._defer_if_limited(s, claim, n, now)
                if decided != "send":
                    return decided
            body = self._body(n, esc, now) if n.channel == "sms" else None
            # The real clock only extends the lease by the time this tick already took.
            lease_from = now + timedelta(seconds=time.monotonic() - t0)
            if not self._cas(
                s,
                claim,
                CLAIMED,
                status=SENDING,
                lease_until=lease_from + timedelta(seconds=self.config.lease_s),
                segments=messages.sms_segments(body) if body else None,
                sending_at=lease_from,
                body_sha256=hashlib.sha256(body.encode()).hexdigest() if body else None,
                updated_at=now,
            ):
                s.rollback()
                return "skipped"  # cancelled by an acknowledgement, or taken over
            if claim.takeover:
                store.add_event(
                    s,
                    alert_id=n.alert_id,
                    at=now,
                    kind="takeover",
                    notification_id=n.id,
                    phone=n.phone,
                    channel=n.channel,
                    detail=TAKEOVER_MARK,
                )
            # Committed BEFORE the provider is called: the row is the proof of intent.
            s.commit()

        self._count_global(now)
        error: Exception | None = None
        result: SendResult | None = None
        try:
            if n.channel == "sms":
                assert body is not None
                result = self.notifier.send_sms(
                    to=n.phone, body=body, notification_id=n.id or 0, alert_id=n.alert_id
                )
            else:
                result = self.notifier.place_call(
                    to=n.phone, notification_id=n.id or 0, alert_id=n.alert_id
                )
        except Exception as exc:
            error = exc
        return self._record_result(claim, n, now, result, error)

    def _record_result(
        self,
        claim: _Claim,
        n: Notification,
        now: datetime,
        result: SendResult | None,
        error: Exception | None,
    ) -> str:
        pulled = False
        with self.session() as s:
            take_write_lock(s)
            if result is not None:
                rank_map = callbacks.SMS_RANK if n.channel == "sms" else callbacks.CALL_RANK
                stored = self._cas(
                    s,
                    claim,
                    SENDING,
                    status=SENT,
                    provider_sid=result.sid[:64],
                    provider_status=result.status[:20],
                    provider_rank=rank_map.get(result.status, 1),
                    sent_at=now,
                    lease_until=None,
                    updated_at=now,
                )
                if not stored:
                    alog(logging.WARNING, "sent but claim lost", n.alert_id, sid=result.sid)
                    s.rollback()
                    return "skipped"
                pulled = callbacks.replay_unmatched(s, sid=result.sid, now=now)
                s.commit()
                outcome = "sent"
                alog(
                    logging.INFO,
                    f"{n.kind} {n.channel} sent",
                    n.alert_id,
                    notification=n.id,
                    to=n.phone,
                    sid=result.sid,
                    step=n.step_no,
                    round=n.round_no,
                )
            else:
                assert error is not None
                code = error.code if isinstance(error, SendError) else None
                message = str((error.message if isinstance(error, SendError) else None) or error)[
                    :500
                ]
                # A verification call is never retried: the chain is called instead, now.
                permanent = isinstance(error, PermanentSendError) or n.kind == KIND_VERIFY
                attempt = n.attempts + 1
                backoff = self.config.retry_backoff_s
                if not permanent and attempt <= len(backoff):
                    retry_at = now + timedelta(seconds=backoff[attempt - 1])
                    ok = self._cas(
                        s,
                        claim,
                        SENDING,
                        status=PLANNED,
                        attempts=attempt,
                        next_action_at=retry_at,
                        claim_token=None,
                        lease_until=None,
                        error_code=str(code)[:16] if code else "error",
                        error_message=message,
                        updated_at=now,
                    )
                    outcome = "retried"
                    kind = "retry"
                else:
                    ok = self._cas(
                        s,
                        claim,
                        SENDING,
                        status=FAILED,
                        attempts=attempt,
                        lease_until=None,
                        finished_at=now,
                        error_code=str(code)[:16] if code else "error",
                        error_message=message,
                        updated_at=now,
                    )
                    outcome = "failed"
                    kind = "send_failed"
                if not ok:
                    s.rollback()
                    return "skipped"
                store.add_event(
                    s,
                    alert_id=n.alert_id,
                    at=now,
                    kind=kind,
                    notification_id=n.id,
                    channel=n.channel,
                    phone=n.phone,
                    status=str(code) if code else None,
                    detail=message,
                )
                if outcome == "failed":
                    # Invalid number, not a mobile, or the provider down for too long: the next
                    # channel or contact is called now rather than at its planned time.
                    if n.kind == KIND_VERIFY:
                        pulled = verification.release(
                            s, alert_id=n.alert_id, now=now, reason="call_failed"
                        )
                    else:
                        pulled = lifecycle.pull_forward(s, notification=n, now=now)
                s.commit()
                alog(
                    logging.WARNING if not permanent else logging.ERROR,
                    f"{n.kind} {n.channel} {outcome}",
                    n.alert_id,
                    notification=n.id,
                    to=n.phone,
                    code=code,
                    transient=isinstance(error, TransientSendError),
                )
        try:
            self.hooks.after_change(n.alert_id)
        except Exception:
            log.exception("after_change hook failed alert_id=%s", n.alert_id)
        if pulled:
            self.kick(n.alert_id)
        return outcome

    # --- webhook entry points (own transaction each) ---------------------------------------

    def handle_status(
        self,
        *,
        sid: str,
        status: str,
        error_code: str | None,
        error_message: str | None,
        now: datetime,
    ) -> callbacks.StatusOutcome:
        with self.session() as s:
            take_write_lock(s)
            out = callbacks.record_status(
                s,
                sid=sid,
                status=status,
                error_code=error_code,
                error_message=error_message,
                now=now,
            )
            s.commit()
        if out.alert_id:
            self.hooks.after_change(out.alert_id)
        if out.pulled_forward:
            self.kick(out.alert_id)
        return out

    def handle_inbound_sms(
        self, *, from_phone: str, to_phone: str | None, body: str, sid: str | None, now: datetime
    ) -> tuple[inbound.InboundOutcome, str | None]:
        """Returns the outcome and the text to answer with (None: answer nothing)."""
        with self.session() as s:
            out = inbound.handle_inbound_sms(
                s,
                from_phone=from_phone,
                to_phone=to_phone,
                body=body,
                sid=sid,
                now=now,
                hooks=self.hooks,
                on_committed=lambda: self.kick(None),
                max_wrong=self.config.sms_ack_max_wrong,
                lock_window=timedelta(seconds=self.config.sms_ack_lock_window_s),
            )
            reply: str | None = None
            if out.reply is not None:
                what, alert_id = out.reply
                if what == "already" and alert_id is not None:
                    esc = s.get(Escalation, alert_id)
                    if esc is not None:
                        ctx = MessageContext(
                            brief=store.brief_from_json(esc.brief),
                            code=esc.ack_code,
                            public_url=self.config.public_url,
                            lang=self.config.lang,
                        )
                        reply = messages.already_taken_sms(
                            ctx, by_name=esc.acked_by_name, status=esc.status
                        )
                elif what == "locked":
                    minutes = max(1, round(self.config.sms_ack_lock_window_s / 60))
                    reply = messages.code_locked_sms(minutes, self.config.lang)
                else:
                    reply = messages.unknown_code_sms(self.config.lang)
            s.commit()
        return out, reply

    def handle_digits(
        self, *, notification_id: int, digits: str, now: datetime
    ) -> tuple[AckResult | None, Notification | None, Escalation | None]:
        with self.session() as s:
            result = callbacks.record_digits(
                s,
                notification_id=notification_id,
                digits=digits,
                now=now,
                hooks=self.hooks,
                on_committed=lambda: self.kick(None),
                verify_hooks=self.verification_hooks,
            )
            loaded = callbacks.load_for_send(s, notification_id)
            s.commit()
        if loaded is None:
            return result, None, None
        return result, loaded[0], loaded[1]

    def load_call(self, *, notification_id: int) -> tuple[Notification, Escalation] | None:
        with self.session() as s:
            return callbacks.load_for_send(s, notification_id)

    def message_context(self, *, esc: Escalation, code: str | None = None) -> MessageContext:
        return MessageContext(
            brief=store.brief_from_json(esc.brief),
            code=code or esc.ack_code,
            public_url=self.config.public_url,
            duress=esc.duress,
            lang=self.config.lang,
        )

    def next_due_at(self, *, now: datetime) -> datetime | None:
        with self.session() as s:
            return reads.next_due_at(s, now=now)
