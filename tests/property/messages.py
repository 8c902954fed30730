"""Hypothesis strategies for the MQTT messages of spec/protocol.md (valid ones, as dicts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import strategies as st

from tests.property.common import JSON_VALUES, STORABLE, UTC_DATETIMES
from vigie import payloads
from vigie.timeutil import rfc3339


def _ts_text(dt: datetime, style: int) -> str:
    if style == 0:
        return rfc3339(dt)  # 2026-11-22T18:04:05.123Z, as the protocol shows
    if style == 1:
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expected_ts(dt: datetime, style: int) -> datetime:
    """What the server must read back from ``_ts_text(dt, style)``."""
    if style == 0:
        return dt.replace(microsecond=dt.microsecond // 1000 * 1000)
    if style == 1:
        return dt.replace(microsecond=0)
    return dt


TS_PAIRS = st.tuples(UTC_DATETIMES, st.integers(0, 2))
TIMESTAMPS = TS_PAIRS.map(lambda p: _ts_text(*p))

LATS = st.integers(-90, 90) | st.floats(-90, 90)
LONS = st.integers(-180, 180) | st.floats(-180, 180)
ACCS = st.integers(0, 1_000_000) | st.floats(0, 1_000_000)
RSSI = st.integers(-200, 0)

POSITIONS = st.fixed_dictionaries(
    {"lat": LATS, "lon": LONS},
    optional={
        "acc_m": ACCS,
        "ts": TIMESTAMPS,
        "src": st.sampled_from(sorted(payloads.POS_SOURCES)),
    },
)
CELLS = st.fixed_dictionaries(
    {
        "mcc": st.integers(0, 999),
        "mnc": st.integers(0, 999),
        "lac": st.integers(0, 2**32),
        "cid": st.integers(0, 2**32),
    },
    optional={"rssi": RSSI},
)
BSSIDS = st.tuples(st.lists(st.integers(0, 255), min_size=6, max_size=6), st.booleans()).map(
    lambda p: ":".join(f"{b:02X}" if p[1] else f"{b:02x}" for b in p[0])
)
WIFIS = st.fixed_dictionaries({"bssid": BSSIDS}, optional={"rssi": RSSI})

ALERT_IDS = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64
)
KINDS = st.sampled_from(sorted(payloads.KNOWN_KINDS)) | st.text(STORABLE, min_size=1, max_size=64)

_VALID: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "alert": st.fixed_dictionaries(
        {"v": st.just(1), "alert_id": ALERT_IDS, "kind": KINDS, "ts": TIMESTAMPS},
        optional={
            "pos": POSITIONS,
            "cells": st.lists(CELLS, max_size=3),
            "wifi": st.lists(WIFIS, max_size=3),
            "batt": st.integers(0, 100),
        },
    ),
    "cancel": st.fixed_dictionaries(
        {
            "v": st.just(1),
            "alert_id": st.text(STORABLE, min_size=1, max_size=64),
            "ts": TIMESTAMPS,
            "pin": st.text(STORABLE, min_size=1, max_size=32),
        }
    ),
    "session": st.fixed_dictionaries(
        {
            "v": st.just(1),
            "session_id": st.text(STORABLE, min_size=1, max_size=64),
            "action": st.sampled_from(["start", "extend", "checkin", "end"]),
            "ts": TIMESTAMPS,
        },
        optional={
            "expected_end": TIMESTAMPS,
            "memo": st.text(STORABLE, max_size=120),
            "pos": POSITIONS,
        },
    ),
    "hb": st.fixed_dictionaries(
        {"v": st.just(1), "ts": TIMESTAMPS},
        optional={"batt": st.integers(0, 100), "charging": st.booleans(), "pos": POSITIONS},
    ),
    "pos": st.fixed_dictionaries({"v": st.just(1), "ts": TIMESTAMPS, "pos": POSITIONS}),
    "status": st.fixed_dictionaries(
        {"v": st.just(1), "state": st.sampled_from(["online", "offline"])}
    ),
}


def _with_extras(suffix: str, body: dict[str, Any], extras: dict[str, Any]) -> dict[str, Any]:
    known = payloads.UPLINK_MODELS[suffix].model_fields
    return {**body, **{k: v for k, v in extras.items() if k not in known}}


def valid_message(suffix: str, *, extras: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    """A valid message of ``suffix``, with unknown fields (allowed by the protocol) or not."""
    base = _VALID[suffix]
    if not extras:
        return base
    return st.builds(
        lambda b, e: _with_extras(suffix, b, e),
        base,
        st.dictionaries(st.text(STORABLE, min_size=1, max_size=8), JSON_VALUES, max_size=2),
    )


SUFFIXED_MESSAGES = st.sampled_from(sorted(_VALID)).flatmap(
    lambda s: st.tuples(st.just(s), valid_message(s))
)
