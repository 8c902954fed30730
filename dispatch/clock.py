"""The clock: APScheduler 3 wakes the engine; the database stays the source of truth.

- an interval sweep every ``sweep_s`` (1 s) catches everything, including work written by
  other servers and leases of dead servers;
- a one-shot wake-up job at the nearest due time, re-armed after each tick and whenever new
  work appears, so a step fires well under a second after its due time;
- ``wake()`` runs a tick now.

Only the in-memory job store is used: APScheduler's FAQ says a job store cannot be shared
between processes, and a one-shot job is removed before it runs (at-most-once). Losing these
jobs loses nothing: the next sweep reads the rows again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor as APSThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from dispatch.engine import Dispatcher, utcnow

log = logging.getLogger("dispatch.clock")

SWEEP_JOB = "dispatch-sweep"
WAKEUP_JOB = "dispatch-wakeup"


class Clock:
    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        sweep_s: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.dispatcher = dispatcher
        self.sweep_s = sweep_s
        self.clock = clock
        self._scheduler = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": APSThreadPoolExecutor(4)},
            job_defaults={
                # Run however late (the default grace of 1 s would silently skip a tick after
                # a pause), once, never stacked.
                "misfire_grace_time": None,
                "coalesce": True,
                "max_instances": 1,
            },
            timezone=UTC,
        )
        self._kicks = ThreadPoolExecutor(2)
        self._tick_lock = threading.Lock()
        self._again = threading.Event()
        self._armed_at: datetime | None = None
        self._arm_lock = threading.Lock()
        self.ticks = 0

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self.dispatcher.on_new_work = self._on_new_work
        self._scheduler.add_job(
            self._sweep,
            "interval",
            seconds=self.sweep_s,
            id=SWEEP_JOB,
            next_run_time=self.clock(),
            replace_existing=True,
        )
        self._scheduler.start()
        log.info("dispatch clock started sweep_s=%s", self.sweep_s)

    def stop(self, wait: bool = True) -> None:
        self.dispatcher.on_new_work = None
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
        self._kicks.shutdown(wait=wait)
        log.info("dispatch clock stopped")

    def wake(self) -> None:
        """Run a tick now (in the scheduler's threads)."""
        self._arm(self.clock(), force=True)

    def _on_new_work(self, alert_id: str | None) -> None:
        if alert_id is not None:
            # The first notification of a new alert must not wait for any tick, nor queue
            # behind other sends: its own small pool runs it straight away.
            try:
                self._kicks.submit(self._run_due, alert_id)
            except RuntimeError:
                return
        else:
            self._arm(self.clock(), force=True)

    def _run_due(self, alert_id: str) -> None:
        try:
            # Hand the sends to the workers and return: this small pool must stay free for the
            # next alert, never wait on the sends of another one (or on its "taken by" SMS).
            self.dispatcher.run_due(alert_id, self.clock(), wait=False)
        except Exception:
            log.exception("run_due failed alert_id=%s", alert_id)
        self._rearm_soon()

    def _rearm_soon(self) -> None:
        """Arm the wake-up if something is due within a sweep period (else the sweep does)."""
        now = self.clock()
        try:
            due = self.dispatcher.next_due_at(now)
        except Exception:
            log.exception("next_due_at failed")
            return
        if due is not None and due - now < timedelta(seconds=self.sweep_s):
            self._arm(max(due, now + timedelta(milliseconds=50)) if due <= now else due)

    def _arm(self, at: datetime, *, force: bool = False) -> None:
        if not self._scheduler.running:
            return
        with self._arm_lock:
            if not force and self._armed_at is not None and self._armed_at <= at:
                return
            self._armed_at = at
            try:
                # max_instances 3 for the wake-up only: it is re-armed from inside a running
                # sweep, and APScheduler would otherwise skip it as "already running". _sweep
                # serialises itself (a second call just asks the running one to go again).
                self._scheduler.add_job(
                    self._sweep,
                    "date",
                    run_date=at,
                    id=WAKEUP_JOB,
                    replace_existing=True,
                    max_instances=3,
                )
            except Exception:  # shutting down
                log.debug("could not arm the wake-up", exc_info=True)

    def _sweep(self) -> None:
        if not self._tick_lock.acquire(blocking=False):
            # A tick is running: make it run once more rather than stacking a second one.
            self._again.set()
            return
        try:
            while True:
                self._again.clear()
                now = self.clock()
                try:
                    self.dispatcher.tick(now, wait=False)
                    self.ticks += 1
                except Exception:
                    log.exception("dispatch tick failed")
                if not self._again.is_set():
                    break
            self._rearm()
        finally:
            self._tick_lock.release()

    def _rearm(self) -> None:
        with self._arm_lock:
            self._armed_at = None
        # The sweep covers anything further than one period away. Overdue work left behind
        # (all send workers busy) is looked at again shortly, not in a tight loop; the
        # workers' completions also wake us.
        self._rearm_soon()
