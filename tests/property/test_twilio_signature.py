"""Properties of the Twilio webhook signature check (``dispatch/channels/twilio.py``,
``dispatch/webhooks.py``): "A missing or wrong signature gets 403 and changes nothing"."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import assume, given
from hypothesis import strategies as st

from dispatch.channels.twilio import compute_signature, signature_valid
from dispatch.webhooks import make_router
from tests.property.common import NOW, fast

TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://vigie.example.org"
TOKENS = st.text(min_size=1, max_size=40)
PATHS = st.sampled_from(
    ["/twilio/status", "/twilio/sms", "/twilio/voice/12", "/twilio/voice/12/gather"]
)
QUERIES = st.none() | st.from_regex(r"\A[a-z]{1,5}=[a-z0-9]{0,5}(&[a-z]{1,5}=[a-z0-9]{0,5})?\Z")
PARAMS = st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=30), max_size=6)


def _url(path: str, query: str | None) -> str:
    return PUBLIC + path + (f"?{query}" if query else "")


@fast(80)
@given(TOKENS, PATHS, QUERIES, PARAMS)
def test_a_computed_signature_is_valid(
    token: str, path: str, query: str | None, params: dict[str, str]
) -> None:
    """The signature computed for (token, URL, form fields) is accepted for exactly those."""
    url = _url(path, query)
    assert signature_valid(token, url, params, compute_signature(token, url, params))


@fast(120)
@given(TOKENS, PATHS, QUERIES, PARAMS, st.data())
def test_any_other_signature_is_refused(
    token: str, path: str, query: str | None, params: dict[str, str], data: st.DataObject
) -> None:
    """A wrong signature is always refused: empty, arbitrary text, the right one with one
    character changed, or the right one for another token, another URL, one form value
    changed, or one more form field."""
    url = _url(path, query)
    good = compute_signature(token, url, params)
    how = data.draw(
        st.sampled_from(["empty", "text", "flip", "token", "url", "value", "extra"]), label="how"
    )
    if how == "empty":
        sig = ""
    elif how == "text":
        sig = data.draw(st.text(max_size=40), label="sig")
        assume(sig != good)
    elif how == "flip":
        i = data.draw(st.integers(0, len(good) - 1), label="i")
        c = data.draw(st.sampled_from("ABCDEFabcdef0123456789+/="), label="c")
        assume(c != good[i])
        sig = good[:i] + c + good[i + 1 :]
    elif how == "token":
        other = data.draw(TOKENS, label="other token")
        assume(other != token)
        sig = compute_signature(other, url, params)
    elif how == "url":
        other_url = _url(data.draw(PATHS, label="path"), data.draw(QUERIES, label="query"))
        assume(other_url != url)
        sig = compute_signature(token, other_url, params)
    elif how == "value":
        assume(params)
        key = data.draw(st.sampled_from(sorted(params)), label="key")
        changed = data.draw(st.text(max_size=30), label="value")
        assume(changed != params[key])
        sig = compute_signature(token, url, {**params, key: changed})
    else:
        key = data.draw(st.text(min_size=1, max_size=12), label="key")
        assume(key not in params)
        sig = compute_signature(token, url, {**params, key: data.draw(st.text(), label="v")})
    assert not signature_valid(token, url, params, sig)


class _StubDispatcher:
    """Records every call the webhooks make; a refused request must make none."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.clock: Callable[[], Any] = lambda: NOW
        self.config = SimpleNamespace(lang="fr", public_url=PUBLIC)
        self.sender = self  # the webhook entry points are on the dispatcher's engine

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def record(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name == "handle_inbound_sms":
                return SimpleNamespace(outcome="unrecognised"), None
            return None

        return record


@pytest.fixture(scope="module")
def webhook() -> tuple[FastAPI, _StubDispatcher]:
    stub = _StubDispatcher()
    app = FastAPI()
    app.include_router(make_router(stub, auth_token=TOKEN, public_url=PUBLIC))  # type: ignore[arg-type]
    return app, stub


def _post(app: FastAPI, path: str, form: dict[str, str], headers: dict[str, str]) -> int:
    """Status of one POST, served in-process (starlette's TestClient warns under httpx)."""

    async def go() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://internal") as c:
            return (await c.post(path, data=form, headers=headers)).status_code

    # In a thread of its own: an earlier test (Playwright's sync API) may leave an event loop
    # running in this one, where asyncio.run() refuses to start.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


FORMS = st.dictionaries(
    st.sampled_from(["MessageSid", "MessageStatus", "From", "To", "Body", "Digits", "CallSid"])
    | st.from_regex(r"\A[A-Za-z]{1,10}\Z"),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20),
    max_size=5,
)


@fast(60)
@given(
    PATHS,
    FORMS,
    st.none() | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40),
    st.booleans(),
)
def test_webhooks_refuse_a_wrong_signature_and_change_nothing(
    webhook: tuple[FastAPI, _StubDispatcher],
    path: str,
    form: dict[str, str],
    signature: str | None,
    signed_for_other_url: bool,
) -> None:
    """Every Twilio webhook answers 403 to a request whose ``X-Twilio-Signature`` is missing,
    arbitrary, or valid for another URL, and calls nothing in the dispatcher; the same
    request correctly signed over the PUBLIC URL gets through."""
    app, stub = webhook
    good = compute_signature(TOKEN, PUBLIC + path, form)
    if signed_for_other_url:
        signature = compute_signature(TOKEN, PUBLIC + path + "/x", form)
    assume(signature != good)
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    stub.calls.clear()
    assert _post(app, path, form, headers) == 403 and stub.calls == []
    if path == "/twilio/status":
        assert _post(app, path, form, {"X-Twilio-Signature": good}) == 204
