"""PIN checks off the ingest writer, with a lockout after repeated wrong PINs.

A cancel's PIN is checked against two argon2 hashes (~0.1–0.2 s of CPU each, on purpose).
Inside the single ingest writer that time held up every other device's alert; here it runs
on its own thread, and the writer only records the decision.

- **Fair**: each device has its own queue, served in turn, one check at a time per device;
  a device sending a flood of cancels waits behind itself, not others behind it.
- **Constant work**: both hashes are always computed, in the same order, whatever the PIN.
  A duress PIN must look exactly like the cancel PIN from outside, timing included.
- **Lockout**: after ``max_failures`` wrong PINs within ``window_s`` the device cannot cancel
  for ``lockout_s``; while locked no hash is computed (the flood costs nothing) and the alert
  keeps escalating. The state is kept on the device row (several servers, restarts) and in
  memory for the decisions not yet committed.
- **A bounded stop**: a stop goes on checking, devices in turn, for at most ``drain_s``; what
  is still queued then is not hashed. Each device is told ``unverifiable`` once per alert it
  was cancelling (its worker types her PIN again, on the next server), the alert keeps
  escalating, and the stop does not wait for one device's flood of cancels while every
  other device's messages stay unacknowledged behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from alert_server.devices import service as devices
from alert_server.devices.models import Device
from vigie.timeutil import as_utc, utcnow
from vigie.vocabulary import PinVerdict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PinPolicy:
    max_failures: int = 5
    window_s: float = 900.0
    lockout_s: float = 900.0


@dataclass
class _Failures:
    count: int = 0
    first_at: datetime | None = None
    locked_until: datetime | None = None


def next_failures(
    count: int, first_at: datetime | None, now: datetime, policy: PinPolicy
) -> tuple[int, datetime, datetime | None]:
    """(count, window start, locked until) after one more wrong PIN at ``now``."""
    if first_at is None or as_utc(first_at) < now - timedelta(seconds=policy.window_s):
        count, first_at = 0, now
    count += 1
    locked = now + timedelta(seconds=policy.lockout_s) if count >= policy.max_failures else None
    return count, first_at, locked


def is_locked(locked_until: datetime | None, now: datetime) -> bool:
    return locked_until is not None and as_utc(locked_until) > now


Done = Callable[[PinVerdict], None]


@dataclass
class _Job:
    device_id: str
    pin: str
    done: Done
    subject: str = ""  # what the cancel is about (its alert id): one answer each when dropped


class PinGate:
    """Checks cancel PINs on ``workers`` threads (1 by default: argon2 is CPU-bound and the
    ingest writer must keep a core); ``submit`` never blocks."""

    def __init__(
        self,
        engine: Engine,
        *,
        policy: PinPolicy | None = None,
        workers: int = 1,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.policy = policy or PinPolicy()
        self.clock = clock
        self._monotonic = monotonic
        self._workers = workers
        self._cond = threading.Condition()
        self._queues: dict[str, deque[_Job]] = {}
        self._ready: deque[str] = deque()  # devices with work and nobody checking them
        self._busy: set[str] = set()
        self._memory: dict[str, _Failures] = {}
        self._closing = False
        self._drain_until: float | None = None
        self.checked = 0  # checks run to their verdict
        self.dropped = 0  # checks left unhashed by a stop
        self._threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self._workers):
            t = threading.Thread(target=self._run, name=f"vigie-pin-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, drain_s: float = 2.0) -> None:
        """Go on checking what was submitted, devices in turn, for up to ``drain_s``; answer
        the rest ``unverifiable`` without hashing; wait for the check in progress; stop."""
        with self._cond:
            self._closing = True
            self._drain_until = self._monotonic() + drain_s
            self._cond.notify_all()
        for t in self._threads:
            # A check in progress is two hashes and one read: far less than this cap, which
            # only guards against a database that does not answer.
            t.join(timeout=30)

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def pending(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    # -- submit (MQTT thread) -----------------------------------------------------------------
    def submit(self, device_id: str, pin: str, done: Done, *, subject: str = "") -> None:
        with self._cond:
            q = self._queues.setdefault(device_id, deque())
            q.append(_Job(device_id, pin, done, subject))
            if len(q) == 1 and device_id not in self._busy:
                self._ready.append(device_id)
            self._cond.notify()

    # -- the checks ----------------------------------------------------------------------------
    def _next(self) -> _Job | None:
        with self._cond:
            while not self._ready:
                if self._closing and not any(self._queues.values()):
                    return None
                if self._drain_over():
                    break
                self._cond.wait(0.5)
            if self._drain_over():
                dropped = self._take_all()
            else:
                device_id = self._ready.popleft()
                job = self._queues[device_id].popleft()
                self._busy.add(device_id)
                return job
        self._answer_dropped(dropped)
        return None

    def _drain_over(self) -> bool:
        return self._drain_until is not None and self._monotonic() >= self._drain_until

    def _take_all(self) -> list[_Job]:
        jobs = [job for q in self._queues.values() for job in q]
        for q in self._queues.values():
            q.clear()
        self._ready.clear()
        self.dropped += len(jobs)
        return jobs

    def _answer_dropped(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        last: dict[tuple[str, str], _Job] = {}
        for job in jobs:
            last[(job.device_id, job.subject)] = job
        log.warning(
            "stopping: %d PIN checks left unchecked (%d devices), answered unverifiable",
            len(jobs),
            len({job.device_id for job in jobs}),
        )
        for job in last.values():
            try:
                job.done(PinVerdict.UNVERIFIABLE)
            except Exception:
                log.exception("PIN verdict could not be handed over device_id=%s", job.device_id)

    def _release(self, device_id: str) -> None:
        with self._cond:
            self._busy.discard(device_id)
            q = self._queues.get(device_id)
            if q:
                self._ready.append(device_id)  # to the back: the other devices go first
            else:
                self._queues.pop(device_id, None)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            try:
                verdict = self.check(job.device_id, job.pin, self.clock())
            except Exception:
                # The database could not be read: the PIN cannot be checked now. The alert
                # keeps escalating (never stood down on a guess); the device is told.
                log.exception("PIN check failed device_id=%s", job.device_id)
                verdict = PinVerdict.UNVERIFIABLE
            with self._cond:
                self.checked += 1
            try:
                job.done(verdict)
            except Exception:
                log.exception("PIN verdict could not be handed over device_id=%s", job.device_id)
            finally:
                self._release(job.device_id)

    def check(self, device_id: str, pin: str, now: datetime) -> PinVerdict:
        """One decision. Also usable directly (tests, the CLI)."""
        with Session(self.engine, expire_on_commit=False) as session:
            found = devices.device_and_worker(session, device_id)
            if found is None:
                return PinVerdict.UNVERIFIABLE
            device, worker = found
            pin_hash, duress_hash = worker.pin_hash, worker.duress_pin_hash
            stored = _Failures(
                device.pin_failures, device.pin_failure_since, device.pin_locked_until
            )
        with self._cond:
            mem = self._memory.get(device_id)
            state = _merge(stored, mem, now)
            if is_locked(state.locked_until, now):
                return PinVerdict.LOCKED
        # Both hashes, always, in this order: the same work for every PIN.
        is_cancel = devices.pin_matches(pin, pin_hash)
        is_duress = devices.pin_matches(pin, duress_hash)
        with self._cond:
            if is_cancel or is_duress:
                self._memory.pop(device_id, None)
            else:
                count, first, locked = next_failures(state.count, state.first_at, now, self.policy)
                self._memory[device_id] = _Failures(count, first, locked)
                if len(self._memory) > 10_000:
                    self._forget(now)
        if is_duress:
            return PinVerdict.DURESS
        if is_cancel:
            return PinVerdict.CANCEL
        return PinVerdict.WRONG

    def _forget(self, now: datetime) -> None:
        horizon = now - timedelta(seconds=max(self.policy.window_s, self.policy.lockout_s))
        self._memory = {
            k: v
            for k, v in self._memory.items()
            if (v.first_at and as_utc(v.first_at) >= horizon) or is_locked(v.locked_until, now)
        }


def _merge(stored: _Failures, mem: _Failures | None, now: datetime) -> _Failures:
    """The stricter of what is committed and what this process decided but may not have
    committed yet."""
    if mem is None:
        return stored
    locked = [t for t in (stored.locked_until, mem.locked_until) if t is not None]
    best = mem if mem.count >= stored.count else stored
    return _Failures(best.count, best.first_at, max(locked, key=as_utc) if locked else None)


def record_wrong_pin(device: Device, now: datetime, policy: PinPolicy) -> bool:
    """Count a wrong PIN on the device row (the writer, in its transaction). True when this
    one locks the device."""
    count, first, locked = next_failures(device.pin_failures, device.pin_failure_since, now, policy)
    device.pin_failures, device.pin_failure_since = count, first
    if locked is not None and not is_locked(device.pin_locked_until, now):
        device.pin_locked_until = locked
        return True
    return False


def clear_failures(device: Device) -> None:
    device.pin_failures, device.pin_failure_since, device.pin_locked_until = 0, None, None
