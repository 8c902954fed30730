"""One scheduler per server process: dispatch's clock and the server's periodic jobs share it,
each side on an executor with a thread for every job it may run at once; dispatch alone still
runs on a scheduler of its own."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from alert_server.app import SERVER_EXECUTOR, SERVER_JOBS
from dispatch.clock import JOB_THREADS, Clock
from tests.support import built_runtime


class _Sender:
    """What the clock drives (``dispatch.engine.SendEngine``), reduced to noticing a tick."""

    def __init__(self) -> None:
        self.ticked = threading.Event()

    def tick(self, *, now: datetime, wait: bool) -> None:
        self.ticked.set()

    def next_due_at(self, *, now: datetime) -> datetime | None:
        return None

    def run_due(self, *, alert_id: str, now: datetime, wait: bool) -> None:
        return None


def _threads(scheduler: BackgroundScheduler, alias: str) -> int:
    # APScheduler keeps its executors by alias; each wraps a concurrent.futures pool.
    executor: Any = scheduler._executors[alias]  # type: ignore[attr-defined]
    return int(executor._pool._max_workers)


def test_dispatch_alone_runs_its_clock_on_its_own_scheduler() -> None:
    sender = _Sender()
    clock = Clock(sender, sweep_s=0.05)  # type: ignore[arg-type]
    clock.start()
    try:
        assert sender.ticked.wait(60)
        assert _threads(clock.scheduler, "default") == JOB_THREADS
    finally:
        clock.stop()
    assert not clock.scheduler.running


def test_a_clock_given_a_scheduler_only_adds_and_removes_its_jobs() -> None:
    shared = BackgroundScheduler(timezone=UTC)
    shared.start()
    try:
        sender = _Sender()
        clock = Clock(sender, sweep_s=0.05, scheduler=shared)  # type: ignore[arg-type]
        assert clock.scheduler is shared
        clock.start()
        assert sender.ticked.wait(60)
        clock.stop()
        # Its jobs are gone; the scheduler is its owner's to stop.
        assert shared.running and shared.get_jobs() == []
    finally:
        shared.shutdown(wait=True)


def test_the_server_gives_dispatch_its_one_scheduler_with_a_thread_per_job(
    tmp_path: Path,
) -> None:
    with built_runtime(tmp_path) as runtime:
        clock = runtime.dispatcher.background
        assert clock is not None and clock.scheduler is runtime.scheduler
        # Dispatch's sweep and wake-ups never wait for a thread behind the server's jobs
        # (pipeline sweep, visit timers, worker SMS, retention), nor these behind them.
        assert _threads(runtime.scheduler, "default") == JOB_THREADS
        assert set(SERVER_JOBS) == {
            "pipeline-sweep",
            "sessions-tick",
            "worker-messages",
            "retention-purge",
        }
        assert _threads(runtime.scheduler, SERVER_EXECUTOR) == len(SERVER_JOBS)
