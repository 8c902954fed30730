"""Properties of ``alert_server/ingest/handler.py::interpret_alert``.

protocol.md: "An alert is never dropped for being incomplete"; a malformed alert message "still
carrying a readable alert_id or … on an alert topic is treated as an alert with unknown details
rather than lost". So ``interpret_alert`` must answer a draft for ANY input, never raise.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from alert_server.ingest.handler import AlertDraft, interpret_alert
from tests.property.common import JSON_VALUES, NOW, NOWS, fast, server_recursion_limit
from tests.property.messages import valid_message
from vigie import payloads

FLAGS = {
    "bad_device_id",
    "malformed",
    "oversized",
    "device_mismatch",
    "unknown_fields",
    "clock_skew",
    "no_alert_id",
    "unknown_kind",
    "delayed",
    "no_position",
}
DEVICE_IDS = st.from_regex(r"\A[A-Za-z0-9_-]{3,64}\Z") | st.text(max_size=80)
VALID_ALERTS = valid_message("alert")


def _perturbed(body: dict[str, Any], key: str, value: Any, delete: bool) -> dict[str, Any]:
    out = dict(body)
    if delete:
        out.pop(key, None)
    else:
        out[key] = value
    return out


PERTURBED_ALERTS = st.builds(
    _perturbed,
    VALID_ALERTS,
    st.sampled_from(["v", "alert_id", "kind", "ts", "pos", "cells", "wifi", "batt", "device_id"]),
    JSON_VALUES,
    st.booleans(),
)
PAYLOADS = (
    st.binary(max_size=5000)
    | VALID_ALERTS.map(lambda b: json.dumps(b).encode())
    | PERTURBED_ALERTS.map(lambda b: json.dumps(b).encode())
    | st.dictionaries(st.text(max_size=8), JSON_VALUES).map(lambda b: json.dumps(b).encode())
    | JSON_VALUES.map(lambda b: json.dumps(b).encode())
    # truncated or padded valid alerts
    | st.tuples(VALID_ALERTS, st.integers(0, 200)).map(lambda p: json.dumps(p[0]).encode()[: p[1]])
    | VALID_ALERTS.map(lambda b: json.dumps({**b, "pad": "x" * 4100}).encode())
)


def _check_draft(draft: AlertDraft, device_id: str) -> None:
    assert isinstance(draft.alert_id, str) and 1 <= len(draft.alert_id) <= 64
    assert draft.device_id == device_id[:64]
    assert draft.kind in payloads.KNOWN_KINDS
    assert draft.original_kind is None or draft.kind == "sos"
    assert set(draft.flags) <= FLAGS, draft.flags
    assert ("no_position" in draft.flags) == (draft.pos is None)
    assert draft.batt is None or 0 <= draft.batt <= 100
    assert draft.device_ts is None or draft.device_ts.utcoffset() is not None
    assert isinstance(draft.raw, str)


@fast(150)
@given(DEVICE_IDS, PAYLOADS, NOWS)
@example("nurse-1", b"\x00garbage", NOW)
@example("x", b"", NOW)
@example("nurse-1", b'{"alert_id": 5, "kind": ["sos"], "pos": {"lat": NaN}}', NOW)
def test_interpret_alert_never_raises(device_id: str, payload: bytes, now: datetime) -> None:
    """For any device id, any bytes and any time, ``interpret_alert`` returns a draft with a
    non-empty alert_id of at most 64 characters and a kind the dispatcher knows; ``malformed``
    is flagged exactly when the strict reader refuses the payload."""
    draft = interpret_alert(device_id, payload, now)
    _check_draft(draft, device_id)
    try:
        payloads.parse_uplink("alert", payload)
        strict_ok = True
    except payloads.PayloadError:
        strict_ok = False
    assert ("malformed" in draft.flags) == (not strict_ok)


@fast(80)
@given(
    DEVICE_IDS,
    st.text(min_size=1, max_size=64).filter(str.isprintable),
    st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4),
    st.sampled_from(["", "x" * 4100]),
)
@example("nurse-1", "a-1", {"pos": {"lat": "x"}}, "")
def test_readable_alert_id_is_kept(
    device_id: str, alert_id: str, other: dict[str, Any], pad: str
) -> None:
    """A JSON object whose ``alert_id`` is readable (printable text, 1–64 characters) keeps that
    id, however broken (or oversized) the rest is, so the device's repeats are recognised."""
    body = {**other, "alert_id": alert_id}
    if pad:
        body["pad"] = pad
    draft = interpret_alert(device_id, json.dumps(body).encode(), NOW)
    _check_draft(draft, device_id)
    assert draft.alert_id == alert_id
    assert "no_alert_id" not in draft.flags
    if pad:
        assert {"malformed", "oversized"} <= set(draft.flags)


@fast(80)
@given(DEVICE_IDS, DEVICE_IDS, st.binary(max_size=300))
def test_unreadable_alerts_get_a_stable_per_device_id(a: str, b: str, payload: bytes) -> None:
    """An alert without a readable id gets ``unreadable-…`` derived from (device, bytes): the
    broker's redeliveries map to the same alert, another device's to another one."""
    first = interpret_alert(a, payload, NOW)
    assert interpret_alert(a, payload, NOW).alert_id == first.alert_id
    if "no_alert_id" in first.flags:
        assert first.alert_id.startswith("unreadable-") and "malformed" in first.flags
        other = interpret_alert(b, payload, NOW)
        if a != b and "no_alert_id" in other.flags:
            assert other.alert_id != first.alert_id


@fast(80)
@given(st.from_regex(r"\A[A-Za-z0-9_-]{3,64}\Z"), valid_message("alert", extras=False), NOWS)
def test_valid_alerts_are_read_as_sent(device_id: str, body: dict[str, Any], now: datetime) -> None:
    """A protocol-valid alert is not ``malformed``; its id, battery and position are kept, a
    known kind stays, an unknown kind becomes ``sos`` with the original kept."""
    draft = interpret_alert(device_id, json.dumps(body).encode(), now)
    _check_draft(draft, device_id)
    assert not {"malformed", "no_alert_id", "bad_device_id", "unknown_fields"} & set(draft.flags)
    assert draft.alert_id == body["alert_id"]
    assert draft.batt == body.get("batt")
    if body["kind"] in payloads.KNOWN_KINDS:
        assert (draft.kind, draft.original_kind) == (body["kind"], None)
    else:
        assert (draft.kind, draft.original_kind) == ("sos", body["kind"])
        assert "unknown_kind" in draft.flags
    if "pos" in body:
        assert draft.pos is not None
        assert (draft.pos.lat, draft.pos.lon) == (body["pos"]["lat"], body["pos"]["lon"])


@fast(30)
@given(st.integers(1, 2040), st.booleans())
@example(1200, False)
@example(1200, True)
def test_deeply_nested_alert_is_kept(depth: int, oversized: bool) -> None:
    """Regression: an alert payload nesting arrays ~1000 deep (≤ 4096 bytes, or
    padded past it) makes ``json.loads`` raise RecursionError in ``payloads.decode_json`` and
    again in ``handler._lenient_decode``; neither catches it, so ``interpret_alert`` raises
    and the alert is lost. Expected: a draft flagged ``malformed`` that keeps ``alert_id``."""
    nested = "[" * depth + "]" * depth
    pad = ', "pad": "' + "x" * 4100 + '"' if oversized else ""
    payload = ('{"alert_id": "a-1", "x": ' + nested + pad + "}").encode()
    with server_recursion_limit():
        draft = interpret_alert("nurse-1", payload, NOW)
    _check_draft(draft, "nurse-1")
    assert draft.alert_id == "a-1"


@fast(30)
@given(st.sampled_from(["lat", "lon", "acc_m"]), st.integers(min_value=10**309, max_value=10**500))
@example("lat", 10**400)
def test_alert_with_huge_integer_coordinate_is_kept(field: str, number: int) -> None:
    """Regression: ``{"alert_id":"a-1",…,"pos":{"lat":1e400-as-an-integer}}``
    makes ``payloads._finite`` raise OverflowError (``math.isfinite`` of a huge int) inside
    pydantic; ``interpret_alert`` catches only PayloadError/ValueError, so it raises and the
    alert is lost. Expected: a draft flagged ``malformed`` (position dropped), id kept."""
    pos: dict[str, Any] = {"lat": 43.3, "lon": 5.4, field: number}
    body = {"v": 1, "alert_id": "a-1", "kind": "sos", "ts": "2026-11-22T18:04:05Z", "pos": pos}
    draft = interpret_alert("nurse-1", json.dumps(body).encode(), NOW)
    _check_draft(draft, "nurse-1")
    assert draft.alert_id == "a-1" and "malformed" in draft.flags
