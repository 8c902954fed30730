"""Login throttling: a delay that grows with failures, never a lock anyone can trigger.

Failures are counted per account (many machines guessing one account) and per address (one
machine guessing many accounts). Past a few free failures, the next attempt must wait a delay
that doubles with each further failure, up to a cap of a minute: an attacker gets a handful
of guesses per quarter of an hour, while a dispatcher whose account is under attack, or a
room behind one NAT address after many typos, waits at most that cap and then logs in. An
attempt refused for waiting is not a failure, so hammering does not extend the wait.

Password checks are bounded under concurrency: attempts on one account are serialised in
this process (a concurrent attempt on the same account is answered "wait" without a check,
so that 40 simultaneous guesses cannot all be checked before the first failure is counted),
and argon2 verifications are limited by a semaphore (they are CPU-bound and deliberately
slow: they must not starve the alert path of both cores).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, col, select

from alert_server.users.models import LoginFailure
from vigie.timeutil import as_utc


@dataclass(frozen=True, slots=True)
class Policy:
    window: timedelta = timedelta(minutes=15)
    account_free: int = 5
    account_cap_s: float = 60.0
    # A room of dispatchers behind one NAT address: more typos before any delay, shorter cap.
    ip_free: int = 20
    ip_cap_s: float = 30.0
    base_s: float = 5.0


POLICY = Policy()


def delay_s(failures: int, *, free: int, cap_s: float, base_s: float) -> float:
    """The wait after ``failures`` failures: none up to ``free``, then doubling to ``cap_s``."""
    if failures < free:
        return 0.0
    return float(min(cap_s, base_s * 2 ** min(failures - free, 30)))


def _count_and_last(
    session: Session, where: object, since: datetime
) -> tuple[int, datetime | None]:
    row = session.exec(
        select(func.count(), func.max(LoginFailure.at))
        .select_from(LoginFailure)
        .where(where, col(LoginFailure.at) > since)  # type: ignore[arg-type]
    ).one()
    return int(row[0]), (as_utc(row[1]) if row[1] is not None else None)


def wait_s(
    session: Session, *, username: str, ip: str, now: datetime, policy: Policy | None = None
) -> float:
    """Seconds the next attempt for ``username`` from ``ip`` must still wait (0: go)."""
    policy = policy or POLICY
    since = now - policy.window
    remaining = 0.0
    for where, free, cap in (
        (LoginFailure.username == username, policy.account_free, policy.account_cap_s),
        (LoginFailure.ip == ip, policy.ip_free, policy.ip_cap_s),
    ):
        count, last = _count_and_last(session, where, since)
        if last is None:
            continue
        delay = delay_s(count, free=free, cap_s=cap, base_s=policy.base_s)
        remaining = max(remaining, (last + timedelta(seconds=delay) - now).total_seconds())
    return max(0.0, remaining)


class Gate:
    """In-process bounds on password checks (see the module docstring)."""

    def __init__(self, concurrency: int = 2) -> None:
        self._checks = threading.BoundedSemaphore(concurrency)
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self.checks_done = 0  # for tests and metrics: how many argon2 verifications ran

    @contextmanager
    def account(self, username: str) -> Iterator[bool]:
        """True when this attempt owns ``username`` until the block ends; False when another
        attempt on the same account is in progress (answer "wait", check nothing)."""
        with self._lock:
            if username in self._busy:
                owned = False
            else:
                self._busy.add(username)
                owned = True
        try:
            yield owned
        finally:
            if owned:
                with self._lock:
                    self._busy.discard(username)

    @contextmanager
    def check(self, timeout_s: float = 10.0) -> Iterator[bool]:
        """True when a password check may run now (False: the server is saturated)."""
        acquired = self._checks.acquire(timeout=timeout_s)
        try:
            if acquired:
                with self._lock:
                    self.checks_done += 1
            yield acquired
        finally:
            if acquired:
                self._checks.release()


GATE = Gate()
