"""Simulated telephony for the demo and for running without Twilio.

Records what would be sent (a log line; the notification row itself, with a ``SIM…`` SID, is
what the dashboard timeline shows), reports it delivered, and can acknowledge an alert after
N seconds as if the contact had replied, so the demo shows a full escalation.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dispatch.channels.base import ProviderHealth, SendResult

if TYPE_CHECKING:
    from dispatch.engine import SendEngine

log = logging.getLogger("dispatch.simulated")
_CODE = re.compile(r"OK (\d{3,6})\b")
# What "was sent" is kept in memory for the last messages only (tests, a person looking at the
# process): a demo left running for days would otherwise keep every one. The timeline keeps
# every notification in the database either way.
SENT_KEPT = 1000
# The alerts already given their simulated answer, newest last: enough to answer each alert
# once (its SMS and calls come within its escalation, minutes), not every alert ever seen.
ANSWERED_KEPT = 10_000
# How long ``close`` waits for a delivery or an answer already running (a database write).
CLOSE_WAIT_S = 10.0


# Threads running the simulated deliveries and answers: real callbacks reach the server side
# by side (its HTTP workers), and each one waits its turn for the database's write lock.
LATER_WORKERS = 8


class _Later:
    """The simulated deliveries and answers, each run at its time, earliest first, by a few
    threads of the channel's own (``LATER_WORKERS``), side by side as real callbacks come.

    A thread per message (``threading.Timer``) made thousands of threads an hour in a soak,
    each with its stack and a share of the allocator's arenas: not what a server on real
    telephony does, and not what its memory should be read from. One thread for all of them
    fell behind under load (each waits its turn for the write lock): the simulated contacts
    then answered minutes late, and escalations went on meanwhile."""

    def __init__(self, workers: int = LATER_WORKERS) -> None:
        self.workers = workers
        self._cv = threading.Condition()
        self._due: list[tuple[float, int, Any, tuple[Any, ...]]] = []
        self._order = itertools.count()
        self._closed = False
        self._threads: list[threading.Thread] = []

    def add(self, delay_s: float, fn: Any, args: tuple[Any, ...]) -> None:
        with self._cv:
            if self._closed:
                return  # a delivery reported while closing: nothing more is simulated
            heapq.heappush(self._due, (time.monotonic() + delay_s, next(self._order), fn, args))
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._run, name=f"simulated-telephony-{i}", daemon=True)
                    for i in range(self.workers)
                ]
                for thread in self._threads:
                    thread.start()
            self._cv.notify()

    def pending(self) -> int:
        with self._cv:
            return len(self._due)

    def _run(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._closed:
                        return
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    if wait is not None and wait <= 0:
                        break
                    self._cv.wait(wait)
                _, _, fn, args = heapq.heappop(self._due)
                if self._due and self._due[0][0] <= time.monotonic():
                    self._cv.notify()  # the next one is due too: another thread takes it
            try:
                fn(*args)
            except Exception:
                log.exception("simulated telephony: a delivery or an answer failed")
            # Nothing of a run kept while waiting for the next (it holds the dispatcher).
            del fn, args

    def close(self, wait_s: float) -> None:
        """Drop what is still to come; wait (``wait_s`` in all) for those running, if any."""
        with self._cv:
            self._closed = True
            self._due.clear()
            self._cv.notify_all()
            threads = list(self._threads)
        deadline = time.monotonic() + wait_s
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))


@dataclass(frozen=True, slots=True)
class SimulatedMessage:
    sid: str
    channel: str  # sms, voice
    to: str
    body: str | None
    alert_id: str
    notification_id: int
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class SimulatedNotifier:
    name = "simulated"

    def __init__(
        self,
        *,
        auto_ack_after_s: float | None = None,
        report_delivery: bool = True,
        health: ProviderHealth | None = None,
    ) -> None:
        self.auto_ack_after_s = auto_ack_after_s
        # Every simulated "request" succeeds; kept so /healthz has the same shape either way.
        self.health = health if health is not None else ProviderHealth()
        self.report_delivery = report_delivery
        self.sent: collections.deque[SimulatedMessage] = collections.deque(maxlen=SENT_KEPT)
        self._lock = threading.Lock()
        self._auto_acked: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._later_runs = _Later()
        self._dispatcher: SendEngine | None = None

    def attach(self, dispatcher: Any) -> None:
        """Called once by the dispatcher being built: the engine to report to."""
        self._dispatcher = dispatcher

    def close(self) -> None:
        """Cancel the deliveries and answers still to come, and wait for those already
        running: none reaches the dispatcher (and its database) once this returns."""
        self._later_runs.close(CLOSE_WAIT_S)

    def pending(self) -> int:
        """The deliveries and answers still to come."""
        return self._later_runs.pending()

    def _later(self, delay_s: float, fn: Any, *args: Any) -> None:
        self._later_runs.add(delay_s, fn, args)

    def _record(self, msg: SimulatedMessage) -> None:
        with self._lock:
            self.sent.append(msg)
        self.health.succeeded(msg.at)
        if self.report_delivery:
            self._later(0.2, self._deliver, msg)

    def send_sms(self, *, to: str, body: str, notification_id: int, alert_id: str) -> SendResult:
        sid = "SMSIM" + uuid.uuid4().hex[:28]
        log.warning("SMS simulé alert_id=%s to=%s sid=%s body=%r", alert_id, to, sid, body)
        self._record(SimulatedMessage(sid, "sms", to, body, alert_id, notification_id))
        match = _CODE.search(body)
        if match and self.auto_ack_after_s is not None:
            self._schedule_ack(alert_id, lambda: self._reply(to, f"OK {match.group(1)}"))
        return SendResult(sid=sid, status="queued")

    def place_call(self, *, to: str, notification_id: int, alert_id: str) -> SendResult:
        sid = "CASIM" + uuid.uuid4().hex[:28]
        log.warning("Appel simulé alert_id=%s to=%s sid=%s", alert_id, to, sid)
        self._record(SimulatedMessage(sid, "voice", to, None, alert_id, notification_id))
        if self.auto_ack_after_s is not None:
            self._schedule_ack(alert_id, lambda: self._press(notification_id))
        return SendResult(sid=sid, status="queued")

    def _schedule_ack(self, alert_id: str, action: Any) -> None:
        with self._lock:
            if alert_id in self._auto_acked:
                return
            self._auto_acked[alert_id] = None
            while len(self._auto_acked) > ANSWERED_KEPT:
                self._auto_acked.popitem(last=False)
        assert self.auto_ack_after_s is not None
        self._later(self.auto_ack_after_s, action)

    def _deliver(self, msg: SimulatedMessage) -> None:
        if self._dispatcher is None:
            return
        status = "delivered" if msg.channel == "sms" else "in-progress"
        self._dispatcher.handle_status(
            sid=msg.sid,
            status=status,
            error_code=None,
            error_message=None,
            now=self._dispatcher.clock(),
        )

    def _reply(self, phone: str, body: str) -> None:
        if self._dispatcher is None:
            return
        log.warning("Réponse simulée from=%s body=%r", phone, body)
        self._dispatcher.handle_inbound_sms(
            from_phone=phone, to_phone=None, body=body, sid=None, now=self._dispatcher.clock()
        )

    def _press(self, notification_id: int) -> None:
        if self._dispatcher is None:
            return
        log.warning("Touche 1 simulée notification=%s", notification_id)
        self._dispatcher.handle_digits(
            notification_id=notification_id, digits="1", now=self._dispatcher.clock()
        )
