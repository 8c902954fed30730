"""The clock's hand-off between its one-shot wake-up and a tick already running
(``dispatch.clock.Clock``), driven by hand: a scheduler that only records the jobs, the test
fires them. No sleeps, no real timer."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from dispatch.clock import WAKEUP_JOB, Clock

NOW = datetime(2026, 12, 3, 7, 0, tzinfo=UTC)


class _Scheduler:
    """Records the clock's jobs; the test runs them. A date job is gone once it has run."""

    running = True

    def __init__(self) -> None:
        self.jobs: dict[str, tuple[Callable[..., None], list[Any], dict[str, Any]]] = {}

    def add_job(self, func: Callable[..., None], trigger: str, **kw: Any) -> None:
        self.jobs[kw["id"]] = (func, list(kw.get("args") or []), kw)

    def remove_job(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)

    def fire(self, job_id: str) -> None:
        func, args, _ = self.jobs.pop(job_id)
        func(*args)

    def wakeup_at(self) -> datetime | None:
        job = self.jobs.get(WAKEUP_JOB)
        return None if job is None else job[2]["run_date"]


class _Sender:
    """What the clock drives, reduced to counting ticks; ``during_rearm`` runs inside the
    first read of the next due time, i.e. while the tick that read it still holds the lock."""

    def __init__(self) -> None:
        self.ticks = 0
        self.due: datetime | None = None
        self.during_rearm: Callable[[], None] | None = None

    def tick(self, *, now: datetime, wait: bool) -> None:
        self.ticks += 1
        if self.due is not None and self.due <= now:
            self.due = None  # the tick sent what was due

    def next_due_at(self, *, now: datetime) -> datetime | None:
        hook, self.during_rearm = self.during_rearm, None
        if hook is not None:
            hook()
        return self.due

    def run_due(self, *, alert_id: str, now: datetime, wait: bool) -> None:
        return None


def test_a_wake_up_firing_while_a_tick_finishes_is_not_lost() -> None:
    """Seen in the dispatch benchmark on PostgreSQL (issue #18): a tick is re-arming (reading
    the next due time) when a step comes due; another thread arms the wake-up for it and the
    wake-up fires at once, finds the tick running and returns. The step must still be run
    now, not at the next interval sweep (an hour here, 1 s in production)."""
    sched = _Scheduler()
    sender = _Sender()
    clock = Clock(sender, sweep_s=3600, clock=lambda: NOW, scheduler=sched)  # type: ignore[arg-type]
    clock.start()
    sched.jobs.pop("dispatch-sweep")  # the interval sweep will not come to the rescue

    def step_comes_due() -> None:
        # As ``Clock._run_due`` does for a new alert: its next step is due now, arm for it.
        sender.due = NOW
        clock._arm(NOW)
        assert sched.wakeup_at() == NOW
        # The scheduler's thread runs the wake-up while the tick still holds the lock.
        fired = threading.Thread(target=sched.fire, args=(WAKEUP_JOB,))
        fired.start()
        fired.join()

    sender.during_rearm = step_comes_due
    clock.wake()
    sched.fire(WAKEUP_JOB)  # the tick that runs during_rearm

    # The step due at NOW was ticked, or at least a wake-up is pending for it.
    pending = sched.wakeup_at()
    assert sender.ticks == 2 or (pending is not None and pending <= NOW), (sender.ticks, pending)
    # And once it has run, the next step gets its wake-up (nothing stale turns it away).
    if pending is not None:
        sched.fire(WAKEUP_JOB)
    sender.due = NOW + timedelta(seconds=5)
    clock.on_new_work(None)
    sched.fire(WAKEUP_JOB)
    assert sched.wakeup_at() == NOW + timedelta(seconds=5)
