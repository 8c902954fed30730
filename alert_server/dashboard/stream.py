"""The live stream: server-sent events driven by the ``alert_event`` table.

Why polling the database rather than an in-process notification: several servers share one
database and any of them may have stored the alert, acknowledged it or closed it. Every
change of an alert writes an ``alert_event`` row, so the stream reads new rows by primary
key (``id > cursor``, an index range scan that returns nothing most of the time) every
300 ms, loads the changed alerts the caller may see (département scope in the SQL) and sends
one event per alert. The event id is the cursor: a browser that reconnects sends it back as
``Last-Event-ID`` and gets everything it missed.

PostgreSQL hands out ids in transaction order, not commit order: a long transaction may
commit id 41 after id 42 was read. Each poll therefore re-reads a window of ids below the
cursor and skips those already sent (a late row is sent when it appears, at worst twice
after a reconnection, which the page handles: every event is "here is this alert now").
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import Engine, select

from alert_server.alerts.api import visible_by_ids
from alert_server.alerts.models import AlertEvent
from alert_server.dashboard.auth import (
    PageSession,
    dashboard_config,
    engine_of,
    lookup_session,
)
from alert_server.dashboard.board import BoardFilter, current_cursor, row_payload
from alert_server.db import read_scope
from vigie.timeutil import rfc3339, utcnow

log = logging.getLogger(__name__)
router = APIRouter(prefix="/dashboard", include_in_schema=False)

POLL_INTERVAL_S = 0.3
# A message at least this often, so that the page notices a silent connection (a proxy or
# a half-open TCP connection never says it is dead) and so that a gone browser is noticed.
PING_INTERVAL_S = 10.0
# The session is re-checked this often: a logout or a disabled account ends the stream.
SESSION_CHECK_S = 30.0
LOOKBACK_IDS = 200
BATCH_ROWS = 500
RETRY_MS = 1000

_event_t = AlertEvent.__table__  # type: ignore[attr-defined]


def server_exiting() -> bool:
    """True once uvicorn has been asked to stop (SIGTERM / SIGINT).

    uvicorn waits for open responses to finish before it shuts down, and a live stream never
    finishes by itself: without this, ``vigie server`` would hang on stop for as long as a
    console is open. uvicorn installs its own ``Server.handle_exit`` as the signal handler;
    its ``should_exit`` flag is the one source of truth (duck-typed: other servers have
    none, and the stream then ends when the client goes).
    """
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    return bool(getattr(server, "should_exit", False))


def sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


@dataclass
class Cursor:
    position: int
    seen: set[int] = field(default_factory=set)

    def low(self) -> int:
        return max(0, self.position - LOOKBACK_IDS)


@dataclass(frozen=True, slots=True)
class StreamView:
    """What the page needs: board rows (with its filter), or only states (other pages)."""

    board: BoardFilter | None
    csrf: str
    prefix: str


def _initial_seen(engine: Engine, cursor: Cursor) -> None:
    # Rows at or below the client's position were delivered (or were not visible): only rows
    # that show up later in that window (late commits) are new.
    with read_scope(engine) as session:
        # A position past the newest row (a restored or replaced database) would silence the
        # stream until the ids catch up: start from the newest row instead.
        cursor.position = min(cursor.position, current_cursor(session))
    with engine.connect() as conn:
        rows = conn.execute(
            select(_event_t.c.id).where(
                _event_t.c.id > cursor.low(), _event_t.c.id <= cursor.position
            )
        ).all()
    cursor.seen.update(int(r[0]) for r in rows)


def _poll(engine: Engine, sess: PageSession, view: StreamView, cursor: Cursor) -> list[str]:
    low = cursor.low()
    with engine.connect() as conn:
        rows = conn.execute(
            select(_event_t.c.id, _event_t.c.alert_id)
            .where(_event_t.c.id > low)
            .order_by(_event_t.c.id)
            .limit(BATCH_ROWS)
        ).all()
    fresh = [(int(r[0]), str(r[1])) for r in rows if int(r[0]) not in cursor.seen]
    if rows:
        cursor.position = max(cursor.position, int(rows[-1][0]))
    cursor.seen.update(i for i, _ in fresh)
    floor = cursor.low()
    cursor.seen = {i for i in cursor.seen if i > floor}
    if not fresh:
        return []
    now = utcnow()
    # One message per changed alert, in the order of their newest change.
    order = {alert_id: i for i, (_, alert_id) in enumerate(fresh)}
    with read_scope(engine) as session:
        alerts = visible_by_ids(session, principal=sess.principal, alert_ids=order)
        # A press attached to an incident refreshes its incident's row (press_merged event).
        alerts = [a for a in alerts if a.incident_of is None]
        alerts.sort(key=lambda a: order[a.alert_id])
        payloads = [
            row_payload(a, filt=view.board, csrf=view.csrf, prefix=view.prefix, now=now)
            for a in alerts
        ]
    return [sse("alert", p, cursor.position) for p in payloads]


def _parse_id(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        parsed = int(value.strip())
    except ValueError:
        return None
    return parsed if parsed >= 0 else None


async def _events(
    engine: Engine, sess: PageSession, view: StreamView, cursor: Cursor
) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    await anyio.to_thread.run_sync(_initial_seen, engine, cursor)
    yield sse("hello", {"server_now": rfc3339(utcnow()), "cursor": cursor.position})
    last_sent = time.monotonic()
    next_session_check = last_sent + SESSION_CHECK_S
    while not server_exiting():
        now = time.monotonic()
        if now >= next_session_check:
            next_session_check = now + SESSION_CHECK_S
            if await anyio.to_thread.run_sync(lookup_session, engine, sess.token) is None:
                yield sse("session", {"expired": True})
                return
        try:
            messages = await anyio.to_thread.run_sync(_poll, engine, sess, view, cursor)
        except Exception:
            # The database is away (restart, failover): keep the stream, try again. The
            # page's watchdog shows the outage if it lasts.
            log.exception("live stream poll failed")
            messages = []
        for message in messages:
            yield message
        if messages:
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent >= PING_INTERVAL_S:
            yield sse("ping", {"server_now": rfc3339(utcnow())})
            last_sent = time.monotonic()
        await asyncio.sleep(POLL_INTERVAL_S)


@router.get("/stream")
async def live_stream(
    request: Request,
    view: Annotated[str, Query(max_length=10)] = "other",
    state: Annotated[str | None, Query(max_length=20)] = None,
    departement: Annotated[str | None, Query(max_length=10)] = None,
    last_id: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    engine = engine_of(request)
    config = dashboard_config(request)
    token = request.cookies.get(config.session_cookie)
    sess = await anyio.to_thread.run_sync(lookup_session, engine, token)
    if sess is None:
        # Not 200: the browser's EventSource stops retrying; the page then checks its session
        # and goes to the login page.
        return Response(status_code=401)
    # The browser's own reconnection sends Last-Event-ID; a page that reconnects by itself
    # (after a failed attempt the browser gave up on) passes last_id.
    position = _parse_id(request.headers.get("last-event-id"))
    if position is None:
        position = last_id
    if position is None:

        def newest() -> int:
            with read_scope(engine) as session:
                return current_cursor(session)

        position = await anyio.to_thread.run_sync(newest)
    board = BoardFilter.parse(sess.principal, state, departement) if view == "board" else None
    stream_view = StreamView(board=board, csrf=sess.csrf_token, prefix=config.prefix)
    return StreamingResponse(
        _events(engine, sess, stream_view, Cursor(position)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
