"""The seam the alert server calls: one ``Dispatcher``, typed, keyword-only, documented.

Why a facade: the alert server must depend on what dispatch promises (start an escalation in
the alert's own transaction, stop it on the first "OK", tell who took it), not on how the
engine claims rows or reconciles after a crash. Everything it needs is given at construction
(hooks, settings, clock, an optional scheduler); nothing is attached afterwards.

State changes take the caller's ``session`` and never commit: the caller's transaction owns
them, and what must wait for the commit (waking the clock, telling the device) runs after it.
Webhook entry points (provider callbacks, inbound SMS, keys pressed) are on ``sender``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine
from sqlmodel import Session

from dispatch import lifecycle, reads, verification
from dispatch.channels.base import AnswersItself, Attaches, Notifier
from dispatch.clock import Clock
from dispatch.config import DispatchConfig, TickReport, utcnow
from dispatch.engine import SendEngine
from dispatch.hooks import DispatchHooks, NoopHooks
from dispatch.models import Verification
from dispatch.policy import EscalationPolicy
from dispatch.schemas import AckResult, AlertBrief, Chain, EscalationView, TimelineEntry
from dispatch.store import after_commit
from dispatch.verification import VerificationHooks


class Dispatcher:
    """Everything the alert server calls. Thread-safe; one per process."""

    def __init__(
        self,
        *,
        engine: Engine,
        notifier: Notifier,
        hooks: DispatchHooks | None = None,
        verification_hooks: VerificationHooks | None = None,
        config: DispatchConfig | None = None,
        clock: Callable[[], datetime] = utcnow,
        background: bool = False,
        sweep_s: float = 1.0,
        scheduler: BackgroundScheduler | None = None,
    ) -> None:
        """``engine``: the shared database (migrated, ``dispatch.db.migrate``); ``notifier``:
        the channel; ``hooks``: the alert server's side of an acknowledgement or exhaustion
        (``NoopHooks`` alone); ``verification_hooks``: its side of a worker's "I am fine";
        ``clock``: the time of the drivers that have no ``now`` of their own. With
        ``background`` a clock sweeps every ``sweep_s`` seconds and wakes at the next due
        time once ``start_background`` is called, on ``scheduler`` if given (else its own; a
        scheduler given gives its default executor ``dispatch.clock.JOB_THREADS`` threads
        and is started and shut down by its owner, the clock only adds and removes its
        jobs)."""
        self.engine = engine
        self.notifier = notifier
        self.hooks: DispatchHooks = hooks or NoopHooks()
        self.config = config or DispatchConfig()
        self.clock = clock
        self._background: Clock | None = None
        self.sender = SendEngine(
            engine=engine,
            notifier=notifier,
            hooks=self.hooks,
            verification_hooks=verification_hooks,
            config=self.config,
            clock=clock,
            on_new_work=self._new_work,
        )
        if background:
            self._background = Clock(self.sender, sweep_s=sweep_s, clock=clock, scheduler=scheduler)
        if isinstance(notifier, Attaches):
            notifier.attach(self.sender)

    def _new_work(self, alert_id: str | None) -> None:
        if self._background is not None:
            self._background.on_new_work(alert_id)

    def _kick(self, alert_id: str | None) -> None:
        self.sender.kick(alert_id)

    # --- running --------------------------------------------------------------------------

    @property
    def background(self) -> Clock | None:
        """The background clock (None without ``background=True``)."""
        return self._background

    def start_background(self) -> None:
        """Start the background clock (sweeps and wake-ups). Needs ``background=True``."""
        if self._background is None:
            raise RuntimeError("Dispatcher construit sans horloge (background=False)")
        self._background.start()

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop the clock (if any) and the send workers; ``wait`` for sends in flight."""
        if self._background is not None:
            self._background.stop(wait=wait)
        self.sender.shutdown(wait=wait)

    def session(self) -> Session:
        """A new session on dispatch's database (the caller commits and closes it)."""
        return self.sender.session()

    def tick(self, *, now: datetime, wait: bool = True) -> TickReport:
        """Advance every due escalation once (what the clock does). ``wait=False`` returns as
        soon as the sends are handed to the worker threads."""
        return self.sender.tick(now=now, wait=wait)

    def run_due(self, *, alert_id: str, now: datetime, wait: bool = True) -> TickReport:
        """Run the due work of ONE alert right away (the first SMS as soon as it is stored)."""
        return self.sender.run_due(alert_id=alert_id, now=now, wait=wait)

    # --- state changes, in the caller's transaction ---------------------------------------

    def start(
        self,
        session: Session,
        *,
        brief: AlertBrief,
        chains: Sequence[Chain],
        policy: EscalationPolicy,
        now: datetime,
    ) -> bool:
        """Start the escalation (idempotent per alert_id; True if this call created it).
        Several chains = ambiguous border: all are worked in parallel and the first
        acknowledgement wins. Once the caller commits, the first notification is sent at once
        when the background clock runs (``run_due`` otherwise)."""
        created = lifecycle.start(session, brief=brief, chains=chains, policy=policy, now=now)
        if created:
            after_commit(session, lambda: self._kick(brief.alert_id))
        return created

    def verify_first(self, session: Session, *, brief: AlertBrief, now: datetime) -> bool:
        """Right after ``start`` for the same alert, in the same transaction: for an automatic
        alarm (fall, no_motion) call the worker's own phone first and hold the chain for
        ``config.verify_s`` seconds. SOS, discreet SOS, duress: never (returns False)."""
        cfg = self.config
        if not verification.should_verify(brief, kinds=cfg.verify_kinds, hold_s=cfg.verify_s):
            return False
        if isinstance(self.notifier, AnswersItself) and self.notifier.auto_ack_after_s is not None:
            # The demo's simulated responder presses 1 on every call: it would impersonate
            # the worker and stand every fall down. Straight to the chain instead.
            return False
        return verification.start(session, brief=brief, hold_s=cfg.verify_s, now=now)

    def add_chain(self, session: Session, *, alert_id: str, chain: Chain, now: datetime) -> bool:
        """Add a chain to a running escalation (the worker moved into another département);
        True if it was new. Its first notification goes out once the caller commits."""
        added = lifecycle.add_chain(session, alert_id=alert_id, chain=chain, now=now)
        if added:
            after_commit(session, lambda: self._kick(alert_id))
        return added

    def update_brief(self, session: Session, *, brief: AlertBrief, now: datetime) -> bool:
        """Replace what the next messages say about the alert (a better position…)."""
        return lifecycle.update_brief(session, brief=brief, now=now)

    def acknowledge(
        self,
        session: Session,
        *,
        alert_id: str,
        by: str,
        via: str,
        now: datetime,
        by_phone: str | None = None,
    ) -> AckResult:
        """Someone took the alert (``via``: console, sms, voice): the first one wins, every
        pending notification is cancelled, and those already notified are told who."""
        return lifecycle.acknowledge(
            session,
            alert_id=alert_id,
            by_name=by,
            by_phone=by_phone,
            via=via,
            now=now,
            hooks=self.hooks,
            on_committed=lambda: self._kick(alert_id),
        )

    def stand_down(self, session: Session, *, alert_id: str, now: datetime, reason: str) -> bool:
        """The alert was cancelled (cancel PIN, worker's "I am fine"): stop the escalation and
        tell those already notified. True if it was running."""
        return lifecycle.stand_down(
            session,
            alert_id=alert_id,
            now=now,
            reason=reason,
            hooks=self.hooks,
            on_committed=lambda: self._kick(alert_id),
        )

    def mark_duress(self, session: Session, *, alert_id: str, now: datetime) -> bool:
        """The cancel was made under duress: the escalation goes on, those notified are told
        discreetly, any verification of the worker ends. True if it changed anything."""
        return lifecycle.mark_duress(
            session,
            alert_id=alert_id,
            now=now,
            hooks=self.hooks,
            on_committed=lambda: self._kick(alert_id),
        )

    def close(self, session: Session, *, alert_id: str, now: datetime) -> bool:
        """The alert is resolved: end its escalation, release its codes. True if it was open."""
        return lifecycle.close(session, alert_id=alert_id, now=now, hooks=self.hooks)

    # --- reads ----------------------------------------------------------------------------

    def verification(self, *, alert_id: str) -> Verification | None:
        """The verification call of an automatic alarm, if there was one (own session)."""
        with self.session() as s:
            return verification.get(s, alert_id)

    def timeline(self, session: Session, *, alert_id: str) -> list[TimelineEntry]:
        """Every notification (planned, sent, failed, cancelled), every event, every reply."""
        return reads.timeline(session, alert_id=alert_id)

    def view(self, session: Session, *, alert_id: str) -> EscalationView | None:
        """The escalation's state for the console (None if the alert was never escalated)."""
        return reads.view(session, alert_id=alert_id)

    def exhausted(self, session: Session) -> list[str]:
        """The alerts whose every pass went unanswered."""
        return reads.list_escalations(session)
