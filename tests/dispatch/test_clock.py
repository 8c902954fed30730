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


class _MovingClock:
    """The time as the clock reads it; the test moves it forward."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class _BusySender(_Sender):
    """A tick that takes 20 ms of the clock's time: a step due 5 ms after the tick claimed
    comes due while it runs. ``left_behind``: a row due before the tick yet not taken by it
    (every send worker busy): it stays due."""

    def __init__(self, clock: _MovingClock) -> None:
        super().__init__()
        self.clock = clock
        self.claimed_at: list[datetime] = []
        self.left_behind: datetime | None = None

    def tick(self, *, now: datetime, wait: bool) -> None:
        self.claimed_at.append(now)
        if self.due is not None and self.due <= now:
            self.due = None
        self.clock.now = now + timedelta(milliseconds=20)

    def next_due_at(self, *, now: datetime) -> datetime | None:
        return min((t for t in (self.due, self.left_behind) if t is not None), default=None)


def test_a_step_that_comes_due_during_a_tick_is_run_at_once() -> None:
    """Issue #18: a tick claims what is due at its start; a step coming due while it runs
    waited for a wake-up 50 ms later (one step in ten late by that much in the dispatch
    benchmark). It is now run by the same sweep, straight after; a row left behind by the
    tick itself still waits the 50 ms (no tight loop on work nobody can take yet)."""
    moving = _MovingClock()
    sched = _Scheduler()
    sender = _BusySender(moving)
    clock = Clock(sender, sweep_s=3600, clock=moving, scheduler=sched)  # type: ignore[arg-type]
    clock.start()
    sched.jobs.pop("dispatch-sweep")

    sender.due = NOW + timedelta(milliseconds=5)
    clock._sweep()
    # The first tick claimed at NOW; the step due at +5 ms was claimed by a second one.
    assert sender.claimed_at == [NOW, NOW + timedelta(milliseconds=20)]
    assert sender.due is None
    assert sched.wakeup_at() is None

    # Due before the tick claimed, and left behind: looked at again 50 ms later.
    sender.claimed_at.clear()
    start = moving.now
    sender.left_behind = start - timedelta(milliseconds=1)
    clock._sweep()
    assert sender.claimed_at == [start]
    assert sched.wakeup_at() == start + timedelta(milliseconds=20 + 50)
