"""Twilio through the official client: the only module of Vigie that imports ``twilio`` (when a
client is made or a webhook checked, not when the module is imported).

The REST base is configurable (``VIGIE_TWILIO_API_BASE``): regional edges and test doubles.
twilio-python builds every URL as ``Domain.base_url + path``; the ``api`` domain's
``base_url`` is a plain attribute (``twilio/base/domain.py``), so we set it on the client's
``api`` domain. The client's own edge/region rewriting is disabled for a non-default base,
otherwise ``TWILIO_EDGE``/``TWILIO_REGION`` in the environment would rewrite its host.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from datetime import datetime
from typing import TYPE_CHECKING

from dispatch.channels.base import (
    PermanentSendError,
    ProviderHealth,
    SendError,
    SendResult,
    TransientSendError,
)

if TYPE_CHECKING:
    from twilio.rest import Client

DEFAULT_API_BASE = "https://api.twilio.com"
# Newest first; far more than one number receives between a crash and the lease's expiry.
RECONCILE_LIMIT = 200
log = logging.getLogger("dispatch.twilio")


class TwilioNotifier:
    name = "twilio"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str,
        api_base: str = DEFAULT_API_BASE,
        public_url: str,
        sms_validity_s: int = 300,
        ring_timeout_s: int = 25,
        http_timeout_s: float = 10.0,
        health: ProviderHealth | None = None,
    ) -> None:
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.from_number = from_number
        self.api_base = api_base.rstrip("/")
        self.public_url = public_url.rstrip("/")
        # Twilio drops an SMS still queued after this long: a stale alert SMS is never
        # delivered hours late (the escalation has moved on by then anyway).
        self.sms_validity_s = sms_validity_s
        # Hang up before most voicemails pick up: a voicemail never acknowledges anyway.
        self.ring_timeout_s = ring_timeout_s
        # Bounded so a hung provider cannot hold an engine worker longer than the lease.
        self.http_timeout_s = http_timeout_s
        # The outcome of every request to Twilio, for /healthz.
        self.health = health if health is not None else ProviderHealth()
        # requests.Session is not documented as thread-safe: one client per sending thread.
        self._local = threading.local()
        # twilio-python imports its REST resources lazily (~250 ms on first use): pay it now,
        # not on the first alert.
        _ = self.client.messages, self.client.calls

    @property
    def client(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            # No retries inside the HTTP client: a retry is a database row with its own time,
            # so it never delays the next step (and survives a crash).
            from twilio.http.http_client import TwilioHttpClient
            from twilio.rest import Client

            http = TwilioHttpClient(
                timeout=self.http_timeout_s, logger=logging.getLogger("dispatch.twilio.http")
            )
            client = Client(self.account_sid, self._auth_token, http_client=http)
            if self.api_base != DEFAULT_API_BASE:
                client.edge = None
                client.region = None
            client.api.base_url = self.api_base
            self._local.client = client
        return client

    def send_sms(self, *, to: str, body: str, notification_id: int, alert_id: str) -> SendResult:
        def create() -> SendResult:
            msg = self.client.messages.create(
                to=to,
                from_=self.from_number,
                body=body,
                status_callback=f"{self.public_url}/twilio/status",
                validity_period=self.sms_validity_s,
            )
            return SendResult(sid=str(msg.sid), status=str(msg.status or "queued"))

        return self._call(create, alert_id=alert_id, notification_id=notification_id)

    def place_call(self, *, to: str, notification_id: int, alert_id: str) -> SendResult:
        def create() -> SendResult:
            call = self.client.calls.create(
                to=to,
                from_=self.from_number,
                url=f"{self.public_url}/twilio/voice/{notification_id}",
                method="POST",
                status_callback=f"{self.public_url}/twilio/status",
                status_callback_method="POST",
                status_callback_event=["initiated", "ringing", "answered", "completed"],
                timeout=self.ring_timeout_s,
            )
            return SendResult(sid=str(call.sid), status=str(call.status or "queued"))

        return self._call(create, alert_id=alert_id, notification_id=notification_id)

    def find_accepted(
        self, *, channel: str, to: str, body_sha256: str | None, since: datetime
    ) -> list[tuple[SendResult, datetime]]:
        """SMS (same text, by its SHA-256) or calls to ``to`` from our number that Twilio
        created since ``since``, with their creation time: what a crashed server may have had
        accepted."""
        try:
            if channel == "sms":
                found = [
                    (SendResult(sid=str(m.sid), status=str(m.status or "queued")), m.date_created)
                    for m in self.client.messages.list(
                        to=to, from_=self.from_number, limit=RECONCILE_LIMIT
                    )
                    if hashlib.sha256((m.body or "").encode()).hexdigest() == body_sha256
                ]
            else:
                found = [
                    (SendResult(sid=str(c.sid), status=str(c.status or "queued")), c.date_created)
                    for c in self.client.calls.list(
                        to=to, from_=self.from_number, limit=RECONCILE_LIMIT
                    )
                ]
        except _provider_errors() as exc:
            # A failed lookup only means "send again": always transient for the caller.
            # (A list page answered with an error is a plain TwilioException, not a
            # TwilioRestException: twilio/base/page.py.)
            error = _classify(exc)
            self.health.failed(error)
            raise TransientSendError(error.message, code=error.code, status=error.status) from exc
        self.health.succeeded()
        return [(r, at) for r, at in found if isinstance(at, datetime) and at >= since]

    def check_credentials(self) -> bool:
        """Fetch our own account (``GET /2010-04-01/Accounts/{sid}.json``): a wrong SID or
        token shows on /healthz when the server starts, not at the first alert. The outcome is
        recorded in ``health``; never raises. True when Twilio accepted the credentials."""
        try:
            self.client.api.v2010.accounts(self.account_sid).fetch()
        except _provider_errors() as exc:
            error = _classify(exc)
            self.health.failed(error)
            log.warning("twilio credentials check failed: %s", error.message)
            return False
        self.health.succeeded()
        return True

    def _call(self, create: object, *, alert_id: str, notification_id: int) -> SendResult:
        assert callable(create)
        try:
            result: SendResult = create()
        except _provider_errors() as exc:
            error = _classify(exc)
            self.health.failed(error)
            raise error from exc
        self.health.succeeded()
        return result


def _provider_errors() -> tuple[type[Exception], ...]:
    """What a call to Twilio raises when it fails. twilio and requests are imported with the
    first client (``TwilioNotifier``), not with this module: the webhooks import it too, and a
    server on simulated telephony never needs them. (An ``except`` clause's expression is only
    evaluated when an exception is on its way.)"""
    import requests
    from twilio.base.exceptions import TwilioException

    return (TwilioException, requests.Timeout, requests.ConnectionError)


def _classify(exc: Exception) -> SendError:
    from twilio.base.exceptions import TwilioException, TwilioRestException

    if isinstance(exc, TwilioRestException):
        status: int | None = exc.status
        code = str(exc.code) if exc.code is not None else None
        message = exc.msg or "twilio error"
    elif isinstance(exc, TwilioException):
        # ("Unable to fetch page", response): the error body is Twilio's usual JSON.
        response = exc.args[1] if len(exc.args) > 1 else None
        status = getattr(response, "status_code", None)
        try:
            code = str(json.loads(getattr(response, "text", ""))["code"])
        except (ValueError, KeyError, TypeError):
            code = None
        message = str(exc.args[0]) if exc.args else "twilio error"
    else:
        return TransientSendError(f"{type(exc).__name__}: {exc}", code="timeout")
    # 429 (and Twilio's 20429), 5xx: the provider or the network is the problem.
    if status is None or status == 429 or status >= 500 or code == "20429":
        return TransientSendError(message, code=code or str(status), status=status)
    # Any other 4xx (21211 invalid number, 21614 not a mobile, 21610 STOP, 20003 rejected
    # credentials…) will not succeed by retrying: move on at once.
    return PermanentSendError(message, code=code or str(status), status=status)


# --- webhooks: signature and TwiML (here so that this module stays the only twilio user) ---

_SAY_LANG = {"fr": "fr-FR", "en": "en-GB"}


def signature_valid(auth_token: str, url: str, params: dict[str, str], signature: str) -> bool:
    """``X-Twilio-Signature`` check (HMAC-SHA1 of the URL and the sorted form fields)."""
    from twilio.request_validator import RequestValidator

    if not signature:
        return False
    return bool(RequestValidator(auth_token).validate(url, params, signature))


def compute_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    from twilio.request_validator import RequestValidator

    return str(RequestValidator(auth_token).compute_signature(url, params))


def gather_twiml(*, text: str, action_url: str, no_input: str, lang: str = "fr") -> str:
    """The alert read twice inside a one-digit Gather, then a goodbye if no key is pressed."""
    from twilio.twiml.voice_response import VoiceResponse

    say_lang = _SAY_LANG.get(lang, "fr-FR")
    response = VoiceResponse()
    gather = response.gather(num_digits=1, action=action_url, method="POST", timeout=8)
    gather.say(text, language=say_lang)
    gather.pause(length=1)
    gather.say(text, language=say_lang)
    response.say(no_input, language=say_lang)
    response.hangup()
    return str(response)


def say_twiml(text: str, *, lang: str = "fr") -> str:
    from twilio.twiml.voice_response import VoiceResponse

    response = VoiceResponse()
    response.say(text, language=_SAY_LANG.get(lang, "fr-FR"))
    response.hangup()
    return str(response)


def redirect_twiml(url: str) -> str:
    from twilio.twiml.voice_response import VoiceResponse

    response = VoiceResponse()
    response.redirect(url, method="POST")
    return str(response)


def message_twiml(text: str | None) -> str:
    """Answer to an inbound SMS: empty ``<Response/>`` or one short message."""
    from twilio.twiml.messaging_response import MessagingResponse

    response = MessagingResponse()
    if text:
        response.message(text)
    return str(response)
