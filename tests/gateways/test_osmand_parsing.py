"""The OsmAnd request shapes read without a server (the edges the server tests do not reach),
and the rate limiter on an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from alert_server.gateways.osmand import (
    OsmandInputError,
    RateLimiter,
    alarm_kind,
    alert_id_for,
    parse_request,
    parse_timestamp,
)

FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1764669600", datetime(2025, 12, 2, 10, 0, tzinfo=UTC)),
        ("1764669600000", datetime(2025, 12, 2, 10, 0, tzinfo=UTC)),
        ("2025-12-02T10:00:00Z", datetime(2025, 12, 2, 10, 0, tzinfo=UTC)),
        ("2025-12-02 10:00:00", datetime(2025, 12, 2, 10, 0, tzinfo=UTC)),
        ("2025-12-02T11:00:00+01:00", datetime(2025, 12, 2, 10, 0, tzinfo=UTC)),
    ],
)
def test_every_timestamp_form_traccar_accepts(value: str, expected: datetime) -> None:
    assert parse_timestamp(value) == expected


def test_alarm_kinds() -> None:
    assert alarm_kind("sos") == "sos"
    assert alarm_kind("fallDown") == "fall" and alarm_kind("fall") == "fall"
    assert alarm_kind("lowBattery,sos") == "sos"
    assert alarm_kind("overspeed") is None and alarm_kind(None) is None


def test_query_and_form_fields_merge_and_location_pair() -> None:
    r = parse_request(FORM, [("id", "abc")], b"location=45.5,4.25&alarm=sos&batt=12.4")
    assert (r.ident, r.lat, r.lon, r.kind, r.batt) == ("abc", 45.5, 4.25, "sos", 12)


def test_an_alarm_keeps_going_without_its_bad_fields_a_position_does_not() -> None:
    r = parse_request(FORM, [], b"id=a&lat=nan&lon=4&batt=250&timestamp=never&alarm=sos")
    assert r.kind == "sos" and r.lat is None and r.batt is None and r.ts is None
    with pytest.raises(OsmandInputError, match="batt"):
        parse_request(FORM, [], b"id=a&lat=45&lon=4&batt=250")


def test_a_retry_has_the_same_alert_id_another_press_another() -> None:
    ts = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    now = datetime(2026, 12, 2, 10, 0, 3, tzinfo=UTC)
    assert alert_id_for("d", "sos", ts, now) == alert_id_for("d", "sos", ts, now.replace(second=9))
    assert alert_id_for("d", "sos", ts, now) != alert_id_for("d", "sos", ts.replace(second=1), now)
    assert alert_id_for("d", "sos", ts, now) != alert_id_for("e", "sos", ts, now)


def test_rate_limiter_refills_with_time() -> None:
    t = [0.0]
    limiter = RateLimiter(rate=1.0, burst=2, clock=lambda: t[0])
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    assert limiter.allow("b")
    t[0] = 1.0
    assert limiter.allow("a") and not limiter.allow("a")
