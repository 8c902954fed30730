"""The clock: APScheduler 3 wakes the engine; the database stays the source of truth.

- an interval sweep every ``sweep_s`` (1 s) catches everything, including work written by
  other servers and leases of dead servers;
- a one-shot wake-up job at the nearest due time, re-armed after each tick and whenever new
  work appears, so a step fires well under a second after its due time;
- ``wake()`` runs a tick now.

Built and owned by ``dispatch.api.Dispatcher`` (``background=True``), which forwards the
engine's "new work" to ``on_new_work``. It runs on its own APScheduler (dispatch alone), or on
one passed in (the alert server's), where it only adds and removes its two jobs; that one must
give its default executor ``JOB_THREADS`` threads for them, so that they never wait for a
thread behind another job.

Only the in-memory job store is used: APScheduler's FAQ says a job store cannot be shared
between processes, and a one-shot job is removed before it runs (at-most-once). Losing these
jobs loses nothing: the next sweep reads the rows again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor as APSThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from dispatch.config import utcnow
from dispatch.engine import SendEngine

log = logging.getLogger("dispatch.clock")

SWEEP_JOB = "dispatch-sweep"
WAKEUP_JOB = "dispatch-wakeup"
# Run however late (the default grace of 1 s would silently skip a tick after a pause), once,
# never stacked. Given per job: the scheduler may be the alert server's.
_JOB_DEFAULTS: dict[str, Any] = {"misfire_grace_time": None, "coalesce": True, "max_instances": 1}
# The wake-up may run 3 at once (re-armed from inside a running sweep, see ``_arm``).
_WAKEUP_INSTANCES = 3
# The most threads the clock's jobs take at once: one sweep, and the wake-ups.
JOB_THREADS = 1 + _WAKEUP_INSTANCES
# Overdue work a tick left behind is looked at again after this long.
OVERDUE_RETRY = timedelta(milliseconds=50)


class Clock:
    def __init__(
        self,
        sender: SendEngine,
        *,
        sweep_s: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
        scheduler: BackgroundScheduler | None = None,
    ) -> None:
        self.sender = sender
        self.sweep_s = sweep_s
        self.clock = clock
        self._own_scheduler = scheduler is None
        self._scheduler = scheduler or BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": APSThreadPoolExecutor(JOB_THREADS)},
            timezone=UTC,
        )
        self._kicks = ThreadPoolExecutor(2)
        self._tick_lock = threading.Lock()
        self._again = threading.Event()
        self._armed_at: datetime | None = None
        self._arm_lock = threading.Lock()
        self._started = False
        self.ticks = 0

    @property
    def scheduler(self) -> BackgroundScheduler:
        """The scheduler its jobs run on (its own, or the one it was given)."""
        return self._scheduler

    @property
    def running(self) -> bool:
        return self._started and bool(self._scheduler.running)

    def start(self) -> None:
        self._started = True
        self._scheduler.add_job(
            self._sweep,
            "interval",
            seconds=self.sweep_s,
            id=SWEEP_JOB,
            next_run_time=self.clock(),
            replace_existing=True,
            **_JOB_DEFAULTS,
        )
        if not self._scheduler.running:
            self._scheduler.start()
        log.info("dispatch clock started sweep_s=%s", self.sweep_s)

    def stop(self, *, wait: bool = True) -> None:
        self._started = False
        if self._own_scheduler:
            if self._scheduler.running:
                self._scheduler.shutdown(wait=wait)
        else:
            for job_id in (SWEEP_JOB, WAKEUP_JOB):
                with contextlib.suppress(JobLookupError):
                    self._scheduler.remove_job(job_id)
        self._kicks.shutdown(wait=wait)
        log.info("dispatch clock stopped")

    def wake(self) -> None:
        """Run a tick now (in the scheduler's threads)."""
        self._arm(self.clock(), force=True)

    def on_new_work(self, alert_id: str | None) -> None:
        """New work may be due sooner than planned: run it (one alert) or re-arm."""
        if not self.running:
            return
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
            self.sender.run_due(alert_id=alert_id, now=self.clock(), wait=False)
        except Exception:
            log.exception("run_due failed alert_id=%s", alert_id)
        self._rearm_soon()

    def _rearm_soon(self, *, claimed_at: datetime | None = None) -> bool:
        """Arm the wake-up if something is due within a sweep period (else the sweep does).

        True when something came due after ``claimed_at`` (the time the tick that just ran
        claimed at): that tick could not see it, and it is run now rather than armed. A row
        already due at ``claimed_at`` and left behind (every send worker busy, or held by
        another server) is looked at again shortly, not in a tight loop; the workers'
        completions also wake the clock."""
        now = self.clock()
        try:
            due = self.sender.next_due_at(now=now)
        except Exception:
            log.exception("next_due_at failed")
            return False
        if due is None or due - now >= timedelta(seconds=self.sweep_s):
            return False
        if due > now:
            self._arm(due)
        elif claimed_at is not None and due > claimed_at:
            # Came due while the tick ran (~5-20 ms): waiting the 50 ms below made one step
            # in ten late by that much in the dispatch benchmark (issue #18).
            return True
        else:
            self._arm(now + OVERDUE_RETRY)
        return False

    def _arm(self, at: datetime, *, force: bool = False) -> None:
        if not self.running:
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
                    self._wake_up,
                    "date",
                    run_date=at,
                    args=[at],
                    id=WAKEUP_JOB,
                    replace_existing=True,
                    **{**_JOB_DEFAULTS, "max_instances": _WAKEUP_INSTANCES},
                )
            except Exception:  # shutting down
                log.debug("could not arm the wake-up", exc_info=True)

    def _wake_up(self, at: datetime) -> None:
        """The one-shot wake-up armed for ``at`` fires: it is no longer pending, so forget it
        (a remembered time that already fired would turn every later ``_arm`` away), then
        run a tick."""
        with self._arm_lock:
            if self._armed_at == at:
                self._armed_at = None
        self._sweep()

    def _sweep(self) -> None:
        """Run a tick, or have the running one go once more.

        Why the request flag is checked again after the re-arm and after the lock is
        released: a wake-up that fires while a tick is finishing (re-arming reads the next
        due time from the database) finds the lock taken and returns at once. If that request
        were lost, nothing would tick until the next interval sweep: a step due then waited
        up to ``sweep_s`` (issue #18, ~1 s lateness on PostgreSQL once a run)."""
        self._again.set()
        while self._again.is_set():
            if not self._tick_lock.acquire(blocking=False):
                # A tick is running: it sees the request (after its re-arm, or after
                # releasing the lock), rather than stacking a second one.
                return
            try:
                while self._again.is_set():
                    self._again.clear()
                    now = self.clock()
                    try:
                        self.sender.tick(now=now, wait=False)
                        self.ticks += 1
                    except Exception:
                        log.exception("dispatch tick failed")
                    if self._rearm(claimed_at=now):
                        self._again.set()
            finally:
                self._tick_lock.release()

    def _rearm(self, *, claimed_at: datetime) -> bool:
        """After a tick: forget the wake-up that ran it and arm the next; True when the tick
        should run again at once (``_rearm_soon``)."""
        with self._arm_lock:
            self._armed_at = None
        return self._rearm_soon(claimed_at=claimed_at)
