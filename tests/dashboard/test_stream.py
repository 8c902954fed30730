"""The live stream without a browser: département scoping, Last-Event-ID catch-up, several
servers sharing one database, and the end of the stream when the session ends."""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from alert_server.dashboard import stream as stream_module
from tests.api.conftest import PASSWORD, ApiStack, close_stack, make_stack
from tests.dashboard.conftest import http_login


class SseReader:
    """Reads a server-sent event stream in a thread; events are dicts with their fields."""

    def __init__(self, client: httpx.Client, path: str, headers: dict[str, str] | None = None):
        self.client = client
        self.path = path
        self.headers = headers or {}
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.status: int | None = None
        self.ended = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            timeout = httpx.Timeout(10, read=None)
            with self.client.stream("GET", self.path, headers=self.headers, timeout=timeout) as r:
                self.status = r.status_code
                event: dict[str, Any] = {}
                for line in r.iter_lines():
                    if self._stop.is_set():
                        break
                    if line == "":
                        if event:
                            self.events.put(event)
                        event = {}
                    elif not line.startswith(":"):
                        name, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        event[name] = json.loads(value) if name == "data" else value
        except httpx.HTTPError:
            self.events.put({"event": "_error"})  # the stream broke: a waiting test fails fast
        finally:
            self.ended.set()

    def next(self, kind: str = "alert", timeout_s: float = 5.0) -> dict[str, Any]:
        while True:
            event = self.events.get(timeout=timeout_s)
            if event.get("event") == kind:
                return event

    def alerts_within(self, seconds: float) -> list[dict[str, Any]]:
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            if event.get("event") == "alert":
                out.append(event)
        return out

    def close(self) -> None:
        # The reader stops at the next line (pings come every 0.2 s here) and closes the
        # connection, which the server sees as the browser going away.
        self._stop.set()
        assert self.ended.wait(5), "the stream reader did not stop"


@pytest.fixture(autouse=True)
def frequent_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "PING_INTERVAL_S", 0.2)


def test_stream_is_scoped_to_the_dispatchers_departements(console_app: ApiStack) -> None:
    console_app.add_user("paris", departements=("75",))
    with http_login(console_app.url, "paris", PASSWORD) as c:
        reader = SseReader(c, "/dashboard/stream?view=board")
        reader.next("hello")
        a13 = console_app.add_alert("13")
        a75 = console_app.add_alert("75")
        event = reader.next()
        assert event["data"]["alert_id"] == a75
        assert event["data"]["match"] is True and a75 in event["data"]["html"]
        assert reader.alerts_within(1.0) == []  # the 13 alert never comes
        reader.close()
    assert a13 != a75


def test_reconnection_catches_up_from_last_event_id(console_app: ApiStack) -> None:
    console_app.add_user("regulation")
    with http_login(console_app.url, "regulation", PASSWORD) as c:
        reader = SseReader(c, "/dashboard/stream?view=board")
        hello = reader.next("hello")
        first = console_app.add_alert("13")
        event = reader.next()
        assert event["data"]["alert_id"] == first
        last_id = event["id"]
        assert int(last_id) > int(hello["data"]["cursor"])
        reader.close()

        # Missed while disconnected.
        missed = [console_app.add_alert("84"), console_app.add_alert(None)]

        # The browser's own reconnection: Last-Event-ID header.
        again = SseReader(c, "/dashboard/stream?view=board", headers={"Last-Event-ID": last_id})
        got = [again.next()["data"]["alert_id"] for _ in missed]
        assert got == missed
        assert again.alerts_within(0.8) == []  # nothing older is replayed
        again.close()

        # The page's own reconnection after the browser gave up: ?last_id=.
        third = SseReader(c, f"/dashboard/stream?view=other&last_id={last_id}")
        data = [third.next()["data"] for _ in missed]
        assert [d["alert_id"] for d in data] == missed
        assert all("html" not in d and d["state"] == "open" for d in data)
        third.close()


def test_two_servers_sharing_the_database(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'shared.db'}"
    one, server_one = make_stack(db_url, tmp_path)
    two, server_two = make_stack(db_url, tmp_path)
    try:
        one.add_user("regulation")
        alert_id = one.add_alert("13")
        with http_login(two.url, "regulation", PASSWORD) as c:
            reader = SseReader(c, "/dashboard/stream?view=board")
            reader.next("hello")
            with one.client(one.token("regulation")) as api:
                assert api.post(f"/api/alerts/{alert_id}/ack").status_code == 200
            event = reader.next()
            assert event["data"]["alert_id"] == alert_id
            assert event["data"]["state"] == "acknowledged"
            reader.close()
    finally:
        close_stack(two, server_two)
        close_stack(one, server_one)


def test_stream_ends_when_the_session_ends(
    console_app: ApiStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "SESSION_CHECK_S", 0.3)
    console_app.add_user("regulation")
    with http_login(console_app.url, "regulation", PASSWORD) as c:
        reader = SseReader(c, "/dashboard/stream")
        reader.next("hello")
        board = c.get("/dashboard/").text
        token = board.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        c.post("/dashboard/logout", data={"csrf_token": token})
        reader.next("session", timeout_s=5)
        assert reader.ended.wait(5)
