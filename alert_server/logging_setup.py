"""The server's log: what an operator's log collector can keep for months.

Before this module, 27 minutes of light load wrote 137,000 lines (the scheduler and the Twilio
client at INFO, one "rate limited, deferred" per SMS per tick). Now:

- ``vigie server`` writes one JSON object per line (``VIGIE_LOG_FORMAT=json``, the default;
  ``plain`` for a person, as in ``vigie demo``), with the alert id and the fields of the
  dispatch's structured lines as keys;
- third-party libraries (APScheduler, Twilio, httpx, uvicorn's access log…) only speak at
  WARNING and above: their INFO lines restate what our own lines say;
- a condition that repeats is written once, then summarised at most once a window (a minute):
  "42 SMS différés pour +336…, prochain à …" instead of 42 lines; the same for the presses of a
  flood joining one incident and for messages refused at ingest (per kind and reason). Any
  other line repeated word for word within the window is counted and summarised the same way.

Measured under the load benchmark (benchmarks/RESULTS.md): heartbeats and positions write no
line; what remains is a few lines per alert (stored, escalation started, each SMS and call).

The clock is a parameter so that the window is tested without waiting.
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

QUIET_LOGGERS = (
    "apscheduler",
    "twilio",
    "httpx",
    "httpcore",
    "uvicorn.access",
    "amqtt",
    "transitions",
    "aio_pika",
    "aiormq",
    "urllib3",
    "multipart",
)
WINDOW_S = 60.0

# Conditions that repeat by nature, summarised per key with a French line of their own.
# message prefix -> (fields that make the key, summary template)
REPEATING: dict[str, tuple[tuple[str, ...], str]] = {
    "rate limited, deferred": (("to",), "{count} SMS différés pour {to}, prochain à {until}"),
    # APScheduler on an overloaded machine: a new time in every line, one line a second.
    "Execution of job": ((), "{count} passages de tâches planifiées sautés (machine surchargée)"),
    # A flood of presses from one device (alert_server/ingest): one incident, one summary.
    "press joined incident": (
        ("incident_of",),
        "{count} appuis de plus rattachés à l'incident {incident_of} (boîtier {device_id})",
    ),
    # Messages refused at ingest (bad JSON, another device's topic…): per kind and reason.
    "rejected ": (
        ("type", "reason"),
        "{count} messages {type} refusés ({reason}), le dernier sur {topic}",
    ),
}
_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "vigie_fields",
    "vigie_summary",
    "color_message",  # uvicorn's terminal-coloured copy of the message
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the record's own fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value
        fields = getattr(record, "vigie_fields", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in out})
        summary = getattr(record, "vigie_summary", None)
        if summary:
            out["repeated"] = summary
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


@dataclass
class _Entry:
    window_start: float
    suppressed: int = 0
    last: logging.LogRecord | None = None
    template: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


class Summariser(logging.Filter):
    """Lets the first line of a kind through, holds back the repeats of the next ``window_s``
    seconds, and writes one summary for them (at the next repeat after the window, or at
    :meth:`flush`, which the server calls every window)."""

    def __init__(
        self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self._entries: dict[tuple[Any, ...], _Entry] = {}
        self._lock = threading.Lock()
        self.emit: Callable[[logging.LogRecord], object] | None = None

    def _key(self, record: logging.LogRecord) -> tuple[tuple[Any, ...], str | None, dict[str, Any]]:
        message = record.getMessage()
        fields = getattr(record, "vigie_fields", None) or {}
        for prefix, (key_fields, template) in REPEATING.items():
            if message.startswith(prefix):
                key = (record.name, prefix, *(str(fields.get(f, "")) for f in key_fields))
                return key, template, dict(fields)
        return (record.name, record.levelno, message), None, dict(fields)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "vigie_summary", None):
            return True  # our own summary line
        key, template, fields = self._key(record)
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and now - entry.window_start < self.window_s:
                entry.suppressed += 1
                entry.last = record
                entry.fields = fields
                return False
            if entry is not None and entry.suppressed:
                # Past the window and it happens again: this line carries the summary.
                self._annotate(record, entry.suppressed + 1, template, fields)
            self._entries[key] = _Entry(window_start=now, template=template)
            if len(self._entries) > 10_000:
                self._prune(now)
        return True

    def _annotate(
        self, record: logging.LogRecord, count: int, template: str | None, fields: dict[str, Any]
    ) -> None:
        record.vigie_summary = count
        if template is not None:
            values = collections.defaultdict(lambda: "?", {**fields, "count": count})
            record.msg, record.args = template.format_map(values), None
        else:
            record.msg = f"{record.getMessage()} (×{count} en {self.window_s:.0f} s)"
            record.args = None

    def _prune(self, now: float) -> None:
        for key in [k for k, e in self._entries.items() if now - e.window_start >= self.window_s]:
            entry = self._entries[key]
            if not entry.suppressed:
                del self._entries[key]

    def flush(self) -> int:
        """Write the summaries of windows that are over; returns how many lines."""
        now = self.clock()
        out: list[logging.LogRecord] = []
        with self._lock:
            for key, entry in list(self._entries.items()):
                if now - entry.window_start < self.window_s:
                    continue
                if entry.suppressed and entry.last is not None:
                    record = logging.makeLogRecord(vars(entry.last))
                    self._annotate(record, entry.suppressed, entry.template, entry.fields)
                    out.append(record)
                del self._entries[key]
        if self.emit is not None:
            for record in out:
                self.emit(record)
        return len(out)


@dataclass
class LogSetup:
    handler: logging.Handler
    summariser: Summariser
    _stop: threading.Event = field(default_factory=threading.Event)

    def start_flusher(self) -> None:
        """Summaries of held-back repeats are written within a window even if nothing else
        happens (daemon thread; one wake-up a window)."""

        def loop() -> None:
            while not self._stop.wait(self.summariser.window_s):
                self.summariser.flush()

        threading.Thread(target=loop, name="log-summaries", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.summariser.flush()


def configure(
    fmt: str = "json",
    *,
    stream: TextIO | None = None,
    level: int = logging.INFO,
    clock: Callable[[], float] = time.monotonic,
    window_s: float = WINDOW_S,
) -> LogSetup:
    """Replace the root logger's handlers with one that writes ``fmt`` lines to ``stream``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(PLAIN_FORMAT))
    summariser = Summariser(window_s, clock)
    summariser.emit = handler.handle
    handler.addFilter(summariser)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return LogSetup(handler, summariser)
