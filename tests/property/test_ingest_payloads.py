"""Properties of the MQTT payload readers (``alert_server/ingest/payloads.py``).

The contract (payloads.py, protocol.md "A malformed message … is rejected, counted and logged
with the reason; it never stops the server"): every reader either returns a model or raises
``PayloadError`` carrying a ``reason`` metric label, never any other exception.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from tests.property.common import (
    JSON_VALUES,
    PY_VALUES,
    STORABLE,
    UTC_DATETIMES,
    fast,
    server_recursion_limit,
)
from tests.property.messages import (
    SUFFIXED_MESSAGES,
    TS_PAIRS,
    _ts_text,
    expected_ts,
)
from vigie import payloads

SUFFIXES = sorted(payloads.UPLINK_MODELS)
REASONS = {"oversized", "bad_json", "invalid"}
TS_FIELDS = {"ts", "expected_end"}


def _parse(suffix: str, payload: bytes) -> payloads._Msg | payloads.PayloadError:
    """parse_uplink's answer, or its PayloadError; any other exception propagates (a failure)."""
    try:
        return payloads.parse_uplink(suffix, payload)
    except payloads.PayloadError as exc:
        return exc


def _where(exc: payloads.PayloadError) -> str:
    """The field named by an ``invalid`` error: ``pos.lat.int: Input should be…`` → pos.lat.int."""
    return str(exc).partition(": ")[0]


def _same_wire_value(sent: Any, got: Any, key: str | int | None = None) -> bool:
    """Does the model value ``got`` carry exactly what was sent on the wire?"""
    if isinstance(sent, dict):
        if isinstance(got, BaseModel):
            extra = got.model_extra or {}
            return all(
                _same_wire_value(v, extra[k] if k in extra else getattr(got, k), k)
                for k, v in sent.items()
            )
        return (
            isinstance(got, dict)
            and sent.keys() == got.keys()
            and all(_same_wire_value(v, got[k], k) for k, v in sent.items())
        )
    if isinstance(sent, list):
        return (
            isinstance(got, list)
            and len(sent) == len(got)
            and all(_same_wire_value(s, g) for s, g in zip(sent, got, strict=True))
        )
    if key in TS_FIELDS and isinstance(got, datetime):
        return got == datetime.fromisoformat(sent) and got.utcoffset() is not None
    if isinstance(sent, float) and math.isnan(sent):
        return isinstance(got, float) and math.isnan(got)
    return type(sent) is type(got) and bool(sent == got)


def _paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    out: list[tuple[str | int, ...]] = []
    items: list[tuple[str | int, Any]] = []
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    for k, v in items:
        out.append((*prefix, k))
        out.extend(_paths(v, (*prefix, k)))
    return out


def _set(doc: Any, path: tuple[str | int, ...], value: Any, *, delete: bool = False) -> None:
    for part in path[:-1]:
        doc = doc[part]
    if delete:
        del doc[path[-1]]
    else:
        doc[path[-1]] = value


# -- decode_json ----------------------------------------------------------------------------


@fast(120)
@given(st.binary(max_size=5000))
@example(b"")
@example(b"\xff\xfe")
@example(b'{"a": NaN}')
@example(b"[1]")
@example(b"{" * 10)
def test_decode_json_takes_any_bytes(payload: bytes) -> None:
    """For arbitrary bytes, decode_json returns a dict or raises PayloadError
    (reason ``oversized`` or ``bad_json``), nothing else."""
    try:
        data = payloads.decode_json(payload)
    except payloads.PayloadError as exc:
        assert exc.reason in {"oversized", "bad_json"}
        assert (exc.reason == "oversized") == (len(payload) > payloads.MAX_PAYLOAD_BYTES)
    else:
        assert isinstance(data, dict)


@fast(80)
@given(JSON_VALUES)
def test_decode_json_reads_any_json_value(value: Any) -> None:
    """A JSON document is returned unchanged when it is an object of ≤ 4096 bytes; any other
    JSON value is ``bad_json``, any bigger document ``oversized``."""
    payload = json.dumps(value).encode()
    try:
        data = payloads.decode_json(payload)
    except payloads.PayloadError as exc:
        if len(payload) > payloads.MAX_PAYLOAD_BYTES:
            assert exc.reason == "oversized"
        else:
            assert exc.reason == "bad_json" and not isinstance(value, dict)
    else:
        assert isinstance(value, dict) and data == value


@fast(40)
@given(JSON_VALUES, st.sampled_from(["NaN", "Infinity", "-Infinity"]))
def test_decode_json_refuses_non_finite_constants(value: Any, constant: str) -> None:
    """``NaN``/``Infinity`` anywhere in an object are not JSON: ``bad_json``."""
    payload = ('{"x": ' + json.dumps(value) + ', "c": ' + constant + "}").encode()
    assume(len(payload) <= payloads.MAX_PAYLOAD_BYTES)
    with pytest.raises(payloads.PayloadError) as info:
        payloads.decode_json(payload)
    assert info.value.reason == "bad_json"


@fast(30)
@given(st.integers(1, 2040))
@example(1200)
def test_decode_json_deeply_nested_arrays_are_bad_json(depth: int) -> None:
    """Regression: a ≤ 4096-byte object nesting arrays ~1000 deep makes
    ``json.loads`` raise RecursionError, which ``decode_json`` lets escape (it catches
    ValueError only). Expected: a dict (shallow enough) or PayloadError("bad_json").
    Run under the server's recursion limit (pytest and hypothesis raise it in tests)."""
    payload = ('{"a":' + "[" * depth + "]" * depth + "}").encode()
    assert len(payload) <= payloads.MAX_PAYLOAD_BYTES
    try:
        with server_recursion_limit():
            data = payloads.decode_json(payload)
        assert isinstance(data, dict)
    except payloads.PayloadError as exc:
        assert exc.reason == "bad_json"


# -- parse_uplink ---------------------------------------------------------------------------


@fast(120)
@given(st.sampled_from(SUFFIXES), st.binary(max_size=5000))
def test_parse_uplink_takes_any_bytes(suffix: str, payload: bytes) -> None:
    """For every uplink suffix and arbitrary bytes: the suffix's model, or PayloadError with one
    of the documented reasons."""
    got = _parse(suffix, payload)
    if isinstance(got, payloads.PayloadError):
        assert got.reason in REASONS
    else:
        assert isinstance(got, payloads.UPLINK_MODELS[suffix])


def _field_keys(suffix: str) -> st.SearchStrategy[str]:
    fields = sorted(payloads.UPLINK_MODELS[suffix].model_fields)
    return st.sampled_from(fields) | st.text(STORABLE, max_size=6)


ANY_OBJECTS = st.sampled_from(SUFFIXES).flatmap(
    lambda s: st.tuples(
        st.just(s), st.dictionaries(_field_keys(s), JSON_VALUES | st.just(1), max_size=8)
    )
)


@fast(150)
@given(ANY_OBJECTS)
def test_parse_uplink_takes_any_json_object(case: tuple[str, dict[str, Any]]) -> None:
    """Any JSON object (keys often the model's own): a model, or PayloadError("invalid") whose
    message starts with a field of the model, e.g. ``pos.lat: …`` or ``ts: …``."""
    suffix, body = case
    payload = json.dumps(body).encode()
    got = _parse(suffix, payload)
    if isinstance(got, payloads.PayloadError):
        if got.reason == "oversized":
            return
        assert got.reason == "invalid", got
        assert _where(got).split(".")[0] in payloads.UPLINK_MODELS[suffix].model_fields, got
    else:
        assert isinstance(got, payloads.UPLINK_MODELS[suffix])


@fast(120)
@given(SUFFIXED_MESSAGES)
def test_valid_messages_round_trip(case: tuple[str, dict[str, Any]]) -> None:
    """A message built by the protocol's rules is accepted, carries exactly what was sent, lists
    its unknown fields, and its own JSON dump reads back as the same model."""
    suffix, body = case
    payload = json.dumps(body).encode()
    assume(len(payload) <= payloads.MAX_PAYLOAD_BYTES)
    msg = payloads.parse_uplink(suffix, payload)
    assert isinstance(msg, payloads.UPLINK_MODELS[suffix])
    assert _same_wire_value(body, msg)
    known = payloads.UPLINK_MODELS[suffix].model_fields
    assert msg.unknown_fields() == sorted(k for k in body if k not in known)
    again = json.dumps(msg.model_dump(mode="json")).encode()
    assume(len(again) <= payloads.MAX_PAYLOAD_BYTES)
    assert payloads.parse_uplink(suffix, again) == msg


@fast(150)
@given(st.data())
def test_perturbed_messages_name_the_offending_field(data: st.DataObject) -> None:
    """A valid message with ONE value replaced by an arbitrary JSON value, or one key removed,
    is accepted or refused as ``invalid`` with the dotted path of that very value first in the
    message (``cells.0.mcc: …``)."""
    suffix, body = data.draw(SUFFIXED_MESSAGES, label="message")
    path = data.draw(st.sampled_from(_paths(body)), label="path")
    delete = isinstance(path[-1], str) and data.draw(st.booleans(), label="delete")
    value = None if delete else data.draw(JSON_VALUES, label="value")
    _set(body, path, value, delete=delete)
    payload = json.dumps(body).encode()
    assume(len(payload) <= payloads.MAX_PAYLOAD_BYTES)
    got = _parse(suffix, payload)
    if isinstance(got, payloads.PayloadError):
        assert got.reason == "invalid"
        dotted = ".".join(str(p) for p in path)
        where = _where(got)
        assert where == dotted or where.startswith(dotted + "."), (where, dotted)
    else:
        assert isinstance(got, payloads.UPLINK_MODELS[suffix])


NUMERIC_POS_FIELDS = st.sampled_from(["lat", "lon", "acc_m"])
ANY_INTS = st.integers() | st.integers(min_value=10**300, max_value=10**600).map(
    lambda n: n * (-1) ** (n % 2)
)


@fast(60)
@given(st.sampled_from(["alert", "session", "hb", "pos"]), NUMERIC_POS_FIELDS, ANY_INTS)
@example("hb", "lat", 10**400)
def test_position_numbers_of_any_size_are_read_or_refused(
    suffix: str, field: str, number: int
) -> None:
    """Regression: a JSON integer of any size in ``pos.lat/lon/acc_m`` is read or
    refused as PayloadError("invalid") naming ``pos.<field>``. Before the fix, an integer
    above ~1e308
    (a 310-character payload) makes ``_finite`` call ``math.isfinite(int)`` which raises
    OverflowError; pydantic does not wrap it, so it escapes ``parse_uplink``."""
    body: dict[str, Any] = {
        "v": 1,
        "alert_id": "a-1",
        "kind": "sos",
        "session_id": "s-1",
        "action": "start",
        "ts": "2026-11-22T18:04:05.123Z",
        "pos": {"lat": 43.3, "lon": 5.4, field: number},
    }
    got = _parse(suffix, json.dumps(body).encode())
    if isinstance(got, payloads.PayloadError):
        assert got.reason == "invalid" and _where(got).startswith(f"pos.{field}")


# -- the models, from Python values ---------------------------------------------------------

MODELS = [*payloads.UPLINK_MODELS.values(), payloads.Position, payloads.Cell, payloads.Wifi]


@fast(120)
@given(
    st.sampled_from(MODELS),
    PY_VALUES
    | st.dictionaries(
        st.sampled_from(["v", "ts", "lat", "lon", "pos", "alert_id", "kind", "mcc", "bssid"]),
        PY_VALUES,
    ),
)
def test_models_validate_any_python_value(model: type[BaseModel], value: Any) -> None:
    """``Model.model_validate`` of any Python value (NaN, inf, bools, nesting) returns the model
    or raises pydantic's ValidationError, nothing else."""
    try:
        got = model.model_validate(value)
    except ValidationError:
        return
    assert isinstance(got, model)
    if isinstance(got, payloads.Position):
        assert math.isfinite(got.lat) and math.isfinite(got.lon)


@fast(60)
@given(TS_PAIRS)
def test_timestamps_round_trip(pair: tuple[datetime, int]) -> None:
    """An RFC 3339 UTC ``Z`` timestamp (with ms, µs or no fraction) is read back as the aware
    UTC instant it names."""
    text = _ts_text(*pair)
    msg = payloads.HeartbeatMsg.model_validate({"v": 1, "ts": text})
    assert msg.ts == expected_ts(*pair) and msg.ts.utcoffset() is not None


TS_LIKE = st.from_regex(
    r"\A\d{4}-?\d{2}-?\d{2}([T ]\d{2}(:?\d{2}(:?\d{2}([.,]\d{1,9})?)?)?)?([+-]\d{2}:?\d{2})?Z\Z"
) | st.text(STORABLE, max_size=30).map(lambda s: s + "Z")


@fast(120)
@given(TS_LIKE | st.text(STORABLE, max_size=30))
def test_accepted_timestamps_are_always_aware_utc(text: str) -> None:
    """Whatever string is offered as ``ts``, it is refused (PayloadError "invalid" naming ``ts``)
    or read as an aware UTC datetime: never a naive or non-UTC one, and it must end with Z, z or
    a numeric offset (protocol.md 1.1)."""
    got = _parse("hb", json.dumps({"v": 1, "ts": text}).encode())
    if isinstance(got, payloads.PayloadError):
        assert got.reason == "invalid" and _where(got) == "ts"
    else:
        assert isinstance(got, payloads.HeartbeatMsg)
        assert re.search(r"([Zz]|[+-]\d{2}:\d{2})\Z", text)
        assert got.ts.utcoffset() == timedelta(0)


# -- downlink -------------------------------------------------------------------------------


@fast(40)
@given(
    st.sampled_from(
        [
            "alert.received",
            "alert.acknowledged",
            "alert.cancelled",
            "alert.resolved",
            "session.warning",
            "locate",
        ]
    ),
    UTC_DATETIMES,
    # The ids the server sends back: stored alert ids, printable (no lone surrogates).
    st.none() | st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=64),
)
def test_commands_are_protocol_json(type_: Any, at: datetime, alert_id: str | None) -> None:
    """A downlink ``cmd`` is a JSON object with ``v`` 1, its ``type``, the ``alert_id`` when
    given, and an RFC 3339 ``Z`` timestamp equal to ``at`` to the millisecond."""
    raw = payloads.command(type_, at, alert_id=alert_id)
    body = json.loads(raw)
    assert body["v"] == 1 and body["type"] == type_
    assert body.get("alert_id") == alert_id
    ts = payloads.HeartbeatMsg.model_validate({"v": 1, "ts": body["ts"]}).ts
    assert ts == at.replace(microsecond=at.microsecond // 1000 * 1000)


@fast(100)
@given(
    st.sampled_from(sorted(payloads.UPLINK_MODELS)),
    st.text(STORABLE, max_size=10),
    st.sampled_from(["\x00", "\ud800", "\udfff", "a\x00b"]),
)
def test_unstorable_text_is_refused(suffix: str, before: str, bad: str) -> None:
    """Text no database column can hold (NUL, an unpaired surrogate), anywhere in a message,
    is refused by name as bad JSON, before any transaction could fail on it."""
    payload = json.dumps({"v": 1, "ts": "2026-11-22T18:04:05Z", "memo": before + bad}).encode()
    got = _parse(suffix, payload)
    assert isinstance(got, payloads.PayloadError) and got.reason == "bad_json", got
    assert "NUL" in str(got)
