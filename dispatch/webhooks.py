"""Twilio webhooks: delivery statuses, inbound SMS, TwiML for calls and the key press.

Every request is checked against ``X-Twilio-Signature`` computed over the PUBLIC URL
(``{public_url}{path}?{query}``): behind a reverse proxy the URL the server sees is not the one
Twilio signed. A missing or wrong signature gets 403 and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from dispatch import messages, verification
from dispatch.api import Dispatcher
from dispatch.channels.twilio import (
    gather_twiml,
    message_twiml,
    redirect_twiml,
    say_twiml,
    signature_valid,
)
from dispatch.models import KIND_VERIFY, OPEN_STATUSES, VERIFY_PENDING, Notification

log = logging.getLogger("dispatch.webhooks")
XML = "application/xml"


def make_router(
    dispatcher: Dispatcher,
    *,
    auth_token: str,
    public_url: str,
    clock: Callable[[], datetime] | None = None,
) -> APIRouter:
    """The router to mount at the root of the app (paths start with ``/twilio/``)."""
    base = public_url.rstrip("/")
    now = clock or dispatcher.clock
    lang = dispatcher.config.lang
    router = APIRouter(tags=["twilio"])

    def twiml(content: str) -> Response:
        return Response(content=content, media_type=XML)

    async def verified_form(request: Request) -> dict[str, str]:
        form = await request.form()
        params = {k: str(v) for k, v in form.multi_items()}
        url = base + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature_valid(auth_token, url, params, signature):
            log.warning("twilio webhook with a bad signature path=%s", request.url.path)
            raise HTTPException(status_code=403, detail="invalid signature")
        return params

    @router.post("/twilio/status")
    async def status_callback(request: Request) -> Response:
        form = await verified_form(request)
        sid = form.get("MessageSid") or form.get("CallSid")
        status = form.get("MessageStatus") or form.get("CallStatus")
        if not sid or not status:
            return Response(status_code=204)
        await run_in_threadpool(
            lambda: dispatcher.sender.handle_status(
                sid=sid,
                status=status,
                error_code=form.get("ErrorCode") or None,
                error_message=form.get("ErrorMessage") or None,
                now=now(),
            )
        )
        return Response(status_code=204)

    @router.post("/twilio/sms")
    async def inbound_sms(request: Request) -> Response:
        form = await verified_form(request)
        _out, reply = await run_in_threadpool(
            lambda: dispatcher.sender.handle_inbound_sms(
                from_phone=form.get("From", ""),
                to_phone=form.get("To"),
                body=form.get("Body", ""),
                sid=form.get("MessageSid") or form.get("SmsSid"),
                now=now(),
            )
        )
        return Response(content=message_twiml(reply), media_type=XML)

    @router.post("/twilio/voice/{notification_id}")
    async def voice(notification_id: int, request: Request) -> Response:
        await verified_form(request)
        loaded = await run_in_threadpool(
            lambda: dispatcher.sender.load_call(notification_id=notification_id)
        )
        if loaded is None:
            return Response(
                content=say_twiml(messages.voice_already(None, "closed", lang)), media_type=XML
            )
        n, esc = loaded
        if n.kind == KIND_VERIFY:
            content = await run_in_threadpool(verify_call_twiml, n.id or 0, n.alert_id)
            return Response(content=content, media_type=XML)
        if esc.status not in OPEN_STATUSES:
            # Acknowledged (or cancelled) while the phone was ringing: say so, ask nothing.
            text = messages.voice_already(esc.acked_by_name, esc.status, lang)
            return Response(content=say_twiml(text, lang=lang), media_type=XML)
        ctx = dispatcher.sender.message_context(esc=esc, code=n.ack_code)
        twiml = gather_twiml(
            text=messages.voice_text(ctx),
            action_url=f"{base}/twilio/voice/{notification_id}/gather",
            no_input=messages.voice_no_input(lang),
            lang=lang,
        )
        return Response(content=twiml, media_type=XML)

    @router.post("/twilio/voice/{notification_id}/gather")
    async def gather(notification_id: int, request: Request) -> Response:
        form = await verified_form(request)
        digits = form.get("Digits", "")
        result, n, esc = await run_in_threadpool(
            lambda: dispatcher.sender.handle_digits(
                notification_id=notification_id, digits=digits, now=now()
            )
        )
        if n is None or esc is None:
            return Response(
                content=say_twiml(messages.voice_already(None, "closed", lang)), media_type=XML
            )
        if n.kind == KIND_VERIFY:
            return twiml(await run_in_threadpool(verify_reply_twiml, notification_id, n, digits))
        if result is None:
            # Any other key: read the alert again.
            return Response(
                content=redirect_twiml(f"{base}/twilio/voice/{notification_id}"), media_type=XML
            )
        if result.accepted:
            return Response(
                content=say_twiml(messages.voice_thanks(lang), lang=lang), media_type=XML
            )
        text = messages.voice_already(result.by_name, result.status, lang)
        return Response(content=say_twiml(text, lang=lang), media_type=XML)

    # --- the verification call to the worker's own phone (automatic alarms) -------------

    def verify_call_twiml(notification_id: int, alert_id: str) -> str:
        v = dispatcher.verification(alert_id=alert_id)
        loaded = dispatcher.sender.load_call(notification_id=notification_id)
        if v is None or v.status != VERIFY_PENDING or loaded is None:
            outcome = "confirmed" if v is not None and v.status == "confirmed" else "late"
            return say_twiml(verification.reply_text(outcome, lang), lang=lang)
        kind = dispatcher.sender.message_context(esc=loaded[1]).brief.kind
        return gather_twiml(
            text=verification.voice_text(kind, v.hold_s, lang),
            action_url=f"{base}/twilio/voice/{notification_id}/gather",
            no_input=verification.no_input_text(lang),
            lang=lang,
        )

    def verify_reply_twiml(notification_id: int, n: Notification, digits: str) -> str:
        key = digits.strip()[:1]
        if key not in ("1", "2"):
            # Any other key: the question again.
            return redirect_twiml(f"{base}/twilio/voice/{notification_id}")
        v = dispatcher.verification(alert_id=n.alert_id)
        if key == "2":
            outcome = "help"
        elif v is not None and v.status == "confirmed":
            outcome = "confirmed"
        else:
            outcome = "late"
        return say_twiml(verification.reply_text(outcome, lang), lang=lang)

    return router
