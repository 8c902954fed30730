"""A fake Twilio: a real HTTP server on 127.0.0.1 speaking the REST paths Vigie uses, and a
phone DSL to drive it (after GoAlert's ``devtools/mocktwilio`` and smoke-test harness).

- ``POST /2010-04-01/Accounts/{sid}/Messages.json`` and ``Calls.json``: basic auth checked,
  ``To``/``From`` validated, Twilio-shaped JSON (201) or Twilio error bodies (4xx/5xx).
- ``GET`` on the same paths lists what was accepted (newest first, ``To``/``From`` filters).
- ``GET /2010-04-01/Accounts/{sid}.json``: the account itself (the server's start-up check of
  its credentials); 401 with code 20003 for a wrong SID or token, like every other path.
- Failures can be injected: HTTP 500, 429, a time-out (the request is held then dropped),
  ``accept_hold`` (accepted, then the answer is held and dropped: a crash's duplicate window),
  21211 (invalid number), 21614 (not a mobile), per number and for the next N requests.
- Status callbacks are POSTed to the ``StatusCallback`` URL, signed with
  ``X-Twilio-Signature``; calls fetch their TwiML by POST, parse ``<Say>``/``<Gather>``,
  and key presses are POSTed to the ``Gather`` action; inbound SMS are POSTed to
  ``{webhook_base}/twilio/sms``.
- ``Phones``: ``phones.expect_sms(to, contains=...).reply("OK 482")``,
  ``phones.expect_call(to).press("1")``, and ``phones.assert_no_unexpected()`` (teardown)
  fails on any SMS or call nobody expected.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import re
import socket
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from twilio.request_validator import RequestValidator

E164 = re.compile(r"^\+[1-9]\d{7,14}$")
_sids = itertools.count(1)


def _sid(prefix: str) -> str:
    return f"{prefix}{next(_sids):032x}"


def _rfc2822(at: datetime) -> str:
    return format_datetime(at.astimezone(UTC), usegmt=False).replace("-0000", "+0000")


@dataclass
class Injected:
    mode: str  # "500", "429", "timeout", "accept_hold", "21211", "21614"
    times: int  # how many requests it applies to (-1: always)
    to: str | None = None
    kind: str | None = None  # "sms", "call" or None for both; "account" for the account fetch


@dataclass
class FakeSMS:
    fake: FakeTwilio
    sid: str
    to: str
    from_: str
    body: str
    status_callback: str | None
    validity_period: str | None
    received_at: float  # time.monotonic() when the request arrived
    received_utc: datetime = field(default_factory=lambda: datetime.now(UTC))
    expected: bool = False

    def status(self, status: str, *, error_code: str | None = None) -> int:
        """POST a signed status callback; returns the HTTP status the server answered."""
        params = {
            "AccountSid": self.fake.account_sid,
            "MessageSid": self.sid,
            "SmsSid": self.sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "To": self.to,
            "From": self.from_,
            "ApiVersion": "2010-04-01",
        }
        if error_code:
            params["ErrorCode"] = error_code
        assert self.status_callback, "no StatusCallback given"
        return self.fake.post_signed(self.status_callback, params).status_code

    def deliver(self) -> FakeSMS:
        self.status("sent")
        self.status("delivered")
        return self

    def reply(self, body: str) -> str:
        """The phone answers this SMS: an inbound SMS to Vigie's number. Returns the TwiML."""
        return self.fake.phones.send_sms(self.to, body)


@dataclass
class FakeCall:
    fake: FakeTwilio
    sid: str
    to: str
    from_: str
    url: str
    method: str
    status_callback: str | None
    received_at: float
    received_utc: datetime = field(default_factory=lambda: datetime.now(UTC))
    expected: bool = False
    said: list[str] = field(default_factory=list)
    gather_action: str | None = None
    gather_digits: int | None = None
    answered: bool = False

    @property
    def notification_id(self) -> int:
        return int(self.url.rstrip("/").rsplit("/", 1)[1])

    def _status(self, status: str, **extra: str) -> int:
        params = {
            "AccountSid": self.fake.account_sid,
            "CallSid": self.sid,
            "CallStatus": status,
            "To": self.to,
            "From": self.from_,
            "Direction": "outbound-api",
            "ApiVersion": "2010-04-01",
            **extra,
        }
        assert self.status_callback, "no StatusCallback given"
        return self.fake.post_signed(self.status_callback, params).status_code

    def _run_twiml(self, xml: str) -> None:
        root = ET.fromstring(xml)  # noqa: S314  (our own server's TwiML, in tests)
        assert root.tag == "Response", xml
        self.gather_action = None
        for el in root.iter():
            if el.tag == "Say":
                assert el.get("language") in {"fr-FR", "en-GB"}, xml
                self.said.append(el.text or "")
            if el.tag == "Gather":
                self.gather_action = el.get("action")
                self.gather_digits = int(el.get("numDigits") or 0)
                assert (el.get("method") or "POST").upper() == "POST", xml
            if el.tag == "Redirect":
                resp = self.fake.post_signed(el.text or "", self._call_params("in-progress"))
                self._run_twiml(resp.text)

    def _call_params(self, status: str) -> dict[str, str]:
        return {
            "AccountSid": self.fake.account_sid,
            "CallSid": self.sid,
            "CallStatus": status,
            "To": self.to,
            "From": self.from_,
            "Direction": "outbound-api",
        }

    def answer(self) -> FakeCall:
        """The callee picks up: Twilio fetches the TwiML (POST) and plays it."""
        self._status("ringing")
        assert self.method.upper() == "POST"
        resp = self.fake.post_signed(self.url, self._call_params("in-progress"))
        assert resp.status_code == 200, resp.text
        self.answered = True
        self._run_twiml(resp.text)
        return self

    def press(self, digits: str) -> FakeCall:
        """Press keys during the Gather (answers first if needed), then the call ends."""
        if not self.answered:
            self.answer()
        assert self.gather_action, f"no <Gather> to press {digits} in: {self.said}"
        params = {**self._call_params("in-progress"), "Digits": digits}
        resp = self.fake.post_signed(self.gather_action, params)
        assert resp.status_code == 200, resp.text
        self._run_twiml(resp.text)
        return self

    def hangup(self) -> int:
        return self._status("completed", CallDuration="20")

    def no_answer(self) -> int:
        return self._status("no-answer")

    def busy(self) -> int:
        return self._status("busy")

    @property
    def last_said(self) -> str:
        return self.said[-1] if self.said else ""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: int, message: str) -> None:
        self._json(
            status,
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
        )

    def _authorized(self, account_sid: str) -> bool:
        """Basic auth with the account's SID and token, as Twilio checks it; 401 otherwise."""
        fake = self.server.fake
        token = base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
        if (
            self.headers.get("Authorization") == f"Basic {token}"
            and account_sid == fake.account_sid
        ):
            return True
        self._error(401, 20003, "Authenticate")
        return False

    def do_GET(self) -> None:
        """``GET …/Messages.json`` and ``Calls.json``: the list, newest first, filtered by
        ``To`` and ``From`` (what the engine's reconciliation after a crash reads)."""
        fake = self.server.fake
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        account = re.fullmatch(r"/2010-04-01/Accounts/([^/]+)\.json", url.path)
        if account:
            self._account(account.group(1))
            return
        m = re.fullmatch(r"/2010-04-01/Accounts/([^/]+)/(Messages|Calls)\.json", url.path)
        if not m:
            self._error(404, 20404, "The requested resource was not found")
            return
        if not self._authorized(m.group(1)):
            return
        kind = "sms" if m.group(2) == "Messages" else "call"
        injected = fake._take_injection(kind, query.get("To", ""))
        if injected in ("500", "429"):
            self._error(int(injected), 20000 + int(injected), "injected")
            return
        with fake.lock:
            fake.list_requests.append({"kind": kind, "query": query})
            items: list[FakeSMS | FakeCall] = list(fake.sms if kind == "sms" else fake.calls)
        items = [
            i
            for i in items
            if ("To" not in query or i.to == query["To"])
            and ("From" not in query or i.from_ == query["From"])
        ]
        items.sort(key=lambda i: i.received_utc, reverse=True)
        size = int(query.get("PageSize", "50"))
        key = "messages" if kind == "sms" else "calls"
        records = [
            {
                "sid": i.sid,
                "account_sid": fake.account_sid,
                "to": i.to,
                "from": i.from_,
                "status": "queued",
                "date_created": _rfc2822(i.received_utc),
                "date_updated": _rfc2822(i.received_utc),
                **({"body": i.body, "direction": "outbound-api"} if isinstance(i, FakeSMS) else {}),
            }
            for i in items[:size]
        ]
        base = f"/2010-04-01/Accounts/{fake.account_sid}/{m.group(2)}.json"
        self._json(
            200,
            {
                key: records,
                "uri": base,
                "first_page_uri": base,
                "next_page_uri": None,
                "previous_page_uri": None,
                "page": 0,
                "page_size": size,
                "start": 0,
                "end": max(0, len(records) - 1),
            },
        )

    def _account(self, account_sid: str) -> None:
        fake = self.server.fake
        if not self._authorized(account_sid):
            return
        # Only injections aimed at "account": those for SMS and calls stay for them.
        injected = fake._take_injection("account", "", explicit=True)
        if injected in ("500", "429"):
            self._error(int(injected), 20000 + int(injected), "injected")
            return
        with fake.lock:
            fake.account_checks += 1
        self._json(
            200,
            {
                "sid": fake.account_sid,
                "friendly_name": "Fake Twilio",
                "status": "active",
                "type": "Full",
                "uri": f"/2010-04-01/Accounts/{fake.account_sid}.json",
            },
        )

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}
        m = re.fullmatch(r"/2010-04-01/Accounts/([^/]+)/(Messages|Calls)\.json", self.path)
        if not m:
            self._error(404, 20404, "The requested resource was not found")
            return
        if not self._authorized(m.group(1)):
            return
        kind = "sms" if m.group(2) == "Messages" else "call"
        to = form.get("To", "")
        fake.requests.append({"kind": kind, "form": form, "at": time.monotonic()})
        injected = fake._take_injection(kind, to)
        if injected == "timeout":
            time.sleep(fake.timeout_hold_s)  # longer than the client's time-out, then drop
            self.close_connection = True
            return
        if injected == "500":
            self._error(500, 20500, "Internal Server Error")
            return
        if injected == "429":
            self._error(429, 20429, "Too Many Requests")
            return
        if injected == "21211" or not E164.match(to) or to in fake.invalid_numbers:
            self._error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
            return
        if injected == "21614" or (to in fake.landlines and kind == "sms"):
            self._error(400, 21614, f"'To' number {to} is not a valid mobile number")
            return
        if form.get("From") != fake.from_number:
            self._error(400, 21606, "The 'From' phone number provided is not a valid number.")
            return
        now = datetime.now(UTC)
        common = {
            "account_sid": fake.account_sid,
            "api_version": "2010-04-01",
            "date_created": _rfc2822(now),
            "date_updated": _rfc2822(now),
            "from": form.get("From"),
            "to": to,
            "price": None,
            "price_unit": "EUR",
        }
        if kind == "sms":
            if "Body" not in form:
                self._error(400, 21602, "Message body is required.")
                return
            sms = FakeSMS(
                fake=fake,
                sid=_sid("SM"),
                to=to,
                from_=form["From"],
                body=form["Body"],
                status_callback=form.get("StatusCallback"),
                validity_period=form.get("ValidityPeriod"),
                received_at=time.monotonic(),
            )
            with fake.lock:
                fake.sms.append(sms)
                fake.cond.notify_all()
            if injected == "accept_hold":
                time.sleep(fake.timeout_hold_s)  # accepted, but the answer never comes back
                self.close_connection = True
                return
            self._json(
                201,
                {
                    **common,
                    "sid": sms.sid,
                    "body": sms.body,
                    "status": "queued",
                    "direction": "outbound-api",
                    "num_segments": "1",
                    "num_media": "0",
                    "error_code": None,
                    "error_message": None,
                    "messaging_service_sid": None,
                    "date_sent": None,
                    "uri": f"/2010-04-01/Accounts/{fake.account_sid}/Messages/{sms.sid}.json",
                    "subresource_uris": {},
                },
            )
        else:
            if "Url" not in form and "Twiml" not in form:
                self._error(400, 21205, "Url parameter is required.")
                return
            call = FakeCall(
                fake=fake,
                sid=_sid("CA"),
                to=to,
                from_=form["From"],
                url=form.get("Url", ""),
                method=form.get("Method", "POST"),
                status_callback=form.get("StatusCallback"),
                received_at=time.monotonic(),
            )
            with fake.lock:
                fake.calls.append(call)
                fake.cond.notify_all()
            if injected == "accept_hold":
                time.sleep(fake.timeout_hold_s)
                self.close_connection = True
                return
            self._json(
                201,
                {
                    **common,
                    "sid": call.sid,
                    "status": "queued",
                    "direction": "outbound-api",
                    "duration": None,
                    "answered_by": None,
                    "parent_call_sid": None,
                    "uri": f"/2010-04-01/Accounts/{fake.account_sid}/Calls/{call.sid}.json",
                    "subresource_uris": {},
                },
            )


class _Server(ThreadingHTTPServer):
    """One thread per connection, as the standard server does; the connections still open
    are known, so that stopping the fake ends their threads (a client keeping its connection
    alive, as twilio's does, left a thread waiting on it after every test)."""

    daemon_threads = True
    fake: FakeTwilio

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._open: dict[Any, threading.Thread] = {}
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        with self._open_lock:
            self._open[request] = thread
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        # Called by the connection's thread as it ends.
        super().shutdown_request(request)
        with self._open_lock:
            self._open.pop(request, None)

    def close_connections(self, deadline_s: float = 10.0) -> None:
        """Close the connections still open, and wait for their threads to end."""
        with self._open_lock:
            still_open = dict(self._open)
        for sock, thread in still_open.items():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            thread.join(deadline_s)
            if thread.is_alive():
                raise RuntimeError("fake Twilio: a connection's thread did not end")


class FakeTwilio:
    def __init__(
        self,
        *,
        account_sid: str = "AC" + "f" * 32,
        auth_token: str = "fake-auth-token",  # noqa: S107
        from_number: str = "+33700000000",
        timeout_hold_s: float = 1.5,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.from_number = from_number
        self.timeout_hold_s = timeout_hold_s
        self.sms: list[FakeSMS] = []
        self.calls: list[FakeCall] = []
        self.requests: list[dict[str, Any]] = []
        self.list_requests: list[dict[str, Any]] = []
        self.account_checks = 0
        self.invalid_numbers: set[str] = set()
        self.landlines: set[str] = set()
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self._injections: list[Injected] = []
        self.webhook_base: str | None = None
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._http = httpx.Client(timeout=10)
        self.phones = Phones(self)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeTwilio:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join(10)
        self._http.close()

    def inject(
        self, mode: str, *, times: int = 1, to: str | None = None, kind: str | None = None
    ) -> None:
        with self.lock:
            self._injections.append(Injected(mode=mode, times=times, to=to, kind=kind))

    def _take_injection(self, kind: str, to: str, *, explicit: bool = False) -> str | None:
        with self.lock:
            for inj in self._injections:
                if inj.times == 0 or (inj.to and inj.to != to) or (inj.kind and inj.kind != kind):
                    continue
                if explicit and inj.kind != kind:
                    continue
                if inj.times > 0:
                    inj.times -= 1
                return inj.mode
        return None

    def sign(self, url: str, params: dict[str, str]) -> str:
        return str(RequestValidator(self.auth_token).compute_signature(url, params))

    def post_signed(
        self, url: str, params: dict[str, str], *, signature: str | None = None
    ) -> httpx.Response:
        sig = self.sign(url, params) if signature is None else signature
        headers = {"X-Twilio-Signature": sig} if sig else {}
        return self._http.post(url, data=params, headers=headers)


class UnexpectedMessages(AssertionError):
    pass


class Phones:
    """The phone DSL. Every SMS or call must be claimed by an expectation."""

    def __init__(self, fake: FakeTwilio) -> None:
        self.fake = fake

    def _wait_for(self, pool: str, match: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with self.fake.cond:
            while True:
                for item in getattr(self.fake, pool):
                    if not item.expected and match(item):
                        item.expected = True
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.fake.cond.wait(remaining)

    def expect_sms(self, to: str, contains: Iterable[str] = (), timeout: float = 3.0) -> FakeSMS:
        words = [w.lower() for w in ([contains] if isinstance(contains, str) else contains)]

        def match(sms: FakeSMS) -> bool:
            return sms.to == to and all(w in sms.body.lower() for w in words)

        sms = self._wait_for("sms", match, timeout)
        if sms is None:
            raise AssertionError(f"no SMS to {to} containing {words}; got: {self.describe()}")
        return sms  # type: ignore[no-any-return]

    def expect_call(self, to: str, timeout: float = 3.0) -> FakeCall:
        call = self._wait_for("calls", lambda c: c.to == to, timeout)
        if call is None:
            raise AssertionError(f"no call to {to}; got: {self.describe()}")
        return call  # type: ignore[no-any-return]

    def send_sms(self, from_: str, body: str, *, signature: str | None = None) -> str:
        """An SMS from ``from_`` to Vigie's number, posted to the incoming-SMS webhook."""
        assert self.fake.webhook_base, "webhook_base not set"
        params = {
            "AccountSid": self.fake.account_sid,
            "MessageSid": _sid("SM"),
            "SmsSid": "",
            "From": from_,
            "To": self.fake.from_number,
            "Body": body,
            "NumMedia": "0",
        }
        resp = self.fake.post_signed(
            f"{self.fake.webhook_base}/twilio/sms", params, signature=signature
        )
        resp.raise_for_status()
        return resp.text

    def unexpected(self) -> list[str]:
        with self.fake.lock:
            return [f"SMS to {s.to}: {s.body!r}" for s in self.fake.sms if not s.expected] + [
                f"call to {c.to}" for c in self.fake.calls if not c.expected
            ]

    def describe(self) -> str:
        with self.fake.lock:
            return (
                "; ".join(
                    [
                        f"SMS {s.to} {'(expected) ' if s.expected else ''}{s.body[:60]!r}"
                        for s in self.fake.sms
                    ]
                    + [f"call {c.to}{' (expected)' if c.expected else ''}" for c in self.fake.calls]
                )
                or "nothing"
            )

    def assert_no_unexpected(self) -> None:
        extra = self.unexpected()
        if extra:
            raise UnexpectedMessages("messages nobody expected: " + " | ".join(extra))
