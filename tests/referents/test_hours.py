"""``hours``: syntax, overnight ranges, and the two DST nights of 2026 (Europe/Paris)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from alert_server.referents.hours import DAY_MIN, WEEK_MIN, HoursError, parse_hours

CET = timezone(timedelta(hours=1))
CEST = timezone(timedelta(hours=2))


def paris(y: int, mo: int, d: int, h: int, mi: int, offset: timezone) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=offset)


def test_weekdays_office_hours() -> None:
    h = parse_hours("mon-fri 08:00-19:00")
    # Tuesday 24 November 2026 (CET).
    assert h.covers(paris(2026, 11, 24, 8, 0, CET))
    assert h.covers(paris(2026, 11, 24, 18, 59, CET))
    assert not h.covers(paris(2026, 11, 24, 19, 0, CET))
    assert not h.covers(paris(2026, 11, 24, 7, 59, CET))
    assert not h.covers(paris(2026, 11, 28, 10, 0, CET))  # Saturday
    # The same wall-clock time in summer is another UTC instant.
    assert h.covers(datetime(2026, 7, 7, 6, 0, tzinfo=UTC))  # 08:00 CEST
    assert not h.covers(datetime(2026, 7, 7, 5, 59, tzinfo=UTC))


def test_several_ranges_and_separators() -> None:
    for text in (
        "mon-fri 08:00-19:00, sat 09:00-12:00",
        "mon-fri 08:00-19:00; sat 09:00-12:00",
        "Mon-Fri 08:00-19:00 ,SAT 09:00-12:00",
        "lun-ven 08:00-19:00, sam 09:00-12:00",
    ):
        h = parse_hours(text)
        assert h.covers(paris(2026, 11, 28, 9, 30, CET)), text  # Saturday
        assert not h.covers(paris(2026, 11, 28, 12, 0, CET)), text
        assert not h.covers(paris(2026, 11, 29, 10, 0, CET)), text  # Sunday


def test_day_lists_and_several_times() -> None:
    h = parse_hours("mon,wed,fri 08:00-12:00 14:00-18:00")
    assert h.covers(paris(2026, 11, 25, 15, 0, CET))  # Wednesday afternoon
    assert not h.covers(paris(2026, 11, 25, 13, 0, CET))  # lunch
    assert not h.covers(paris(2026, 11, 24, 9, 0, CET))  # Tuesday
    h2 = parse_hours("mon,wed-thu 08:00-12:00,14:00-18:00, sun 10:00-11:00")
    assert h2.covers(paris(2026, 11, 26, 14, 30, CET))  # Thursday
    assert h2.covers(paris(2026, 11, 29, 10, 30, CET))  # Sunday


def test_wrapping_day_range_and_24h() -> None:
    h = parse_hours("fri-mon 00:00-24:00")
    assert h.covers(paris(2026, 11, 29, 23, 59, CET))  # Sunday
    assert h.covers(paris(2026, 11, 30, 0, 0, CET))  # Monday
    assert not h.covers(paris(2026, 11, 24, 12, 0, CET))  # Tuesday
    assert parse_hours("00:00-24:00").always
    assert parse_hours("mon-sun 00:00-24:00").always


def test_overnight_belongs_to_its_start_day() -> None:
    h = parse_hours("fri 19:00-08:00")
    assert h.covers(paris(2026, 11, 27, 23, 0, CET))  # Friday night
    assert h.covers(paris(2026, 11, 28, 7, 59, CET))  # Saturday morning
    assert not h.covers(paris(2026, 11, 28, 8, 0, CET))
    assert not h.covers(paris(2026, 11, 27, 7, 0, CET))  # Friday morning: Thursday's night
    sun = parse_hours("sun 22:00-06:00")
    assert sun.covers(paris(2026, 11, 30, 5, 0, CET))  # wraps into Monday
    assert sun.intervals == ((0, 6 * 60), (6 * DAY_MIN + 22 * 60, WEEK_MIN))


# 2026: clocks go forward on Sunday 29 March (02:00 CET → 03:00 CEST) and back on Sunday
# 25 October (03:00 CEST → 02:00 CET).
NIGHT = "mon-sun 19:00-08:00"
DAY = "mon-sun 08:00-19:00"


def test_spring_forward_night() -> None:
    night, day = parse_hours(NIGHT), parse_hours(DAY)
    # 02:30 UTC+1 is 01:30 UTC = 03:30 CEST (02:30 does not exist that night): night hours.
    assert night.covers(paris(2026, 3, 29, 2, 30, CET))
    assert night.covers(paris(2026, 3, 29, 2, 30, CEST))  # 00:30 UTC = 01:30 CET
    # 07:59 CEST is still night, 08:00 CEST is day: the night ends at the wall-clock 08:00,
    # one hour "earlier" in UTC than the day before.
    assert night.covers(datetime(2026, 3, 29, 5, 59, tzinfo=UTC))
    assert not night.covers(datetime(2026, 3, 29, 6, 0, tzinfo=UTC))
    assert day.covers(datetime(2026, 3, 29, 6, 0, tzinfo=UTC))
    assert night.covers(datetime(2026, 3, 28, 6, 59, tzinfo=UTC))  # Saturday 07:59 CET
    assert not night.covers(datetime(2026, 3, 28, 7, 0, tzinfo=UTC))  # Saturday 08:00 CET
    # Every minute of the night is covered by exactly one of the two ranges.
    t = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    while t < datetime(2026, 3, 29, 12, 0, tzinfo=UTC):
        assert night.covers(t) != day.covers(t), t
        t += timedelta(minutes=1)


def test_fall_back_night() -> None:
    night, day = parse_hours(NIGHT), parse_hours(DAY)
    # 02:30 happens twice: at 02:30 CEST (00:30 UTC) and at 02:30 CET (01:30 UTC).
    assert night.covers(paris(2026, 10, 25, 2, 30, CEST))
    assert night.covers(paris(2026, 10, 25, 2, 30, CET))
    assert night.covers(datetime(2026, 10, 25, 6, 59, tzinfo=UTC))  # 07:59 CET
    assert not night.covers(datetime(2026, 10, 25, 7, 0, tzinfo=UTC))  # 08:00 CET
    t = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    while t < datetime(2026, 10, 25, 12, 0, tzinfo=UTC):
        assert night.covers(t) != day.covers(t), t
        t += timedelta(minutes=1)


def test_range_ending_in_the_missing_hour() -> None:
    # "sat 22:00-02:30": on the spring-forward night the clock jumps from 02:00 to 03:00, so
    # the range ends at the jump (01:00 UTC), not at a non-existent 02:30.
    h = parse_hours("sat 22:00-02:30")
    assert h.covers(datetime(2026, 3, 29, 0, 59, tzinfo=UTC))  # 01:59 CET
    assert not h.covers(datetime(2026, 3, 29, 1, 0, tzinfo=UTC))  # 03:00 CEST
    # On the fall-back night, 02:00–02:30 happens twice and is covered twice.
    assert h.covers(datetime(2026, 10, 25, 0, 15, tzinfo=UTC))  # 02:15 CEST
    assert h.covers(datetime(2026, 10, 25, 1, 15, tzinfo=UTC))  # 02:15 CET
    assert not h.covers(datetime(2026, 10, 25, 1, 30, tzinfo=UTC))  # 02:30 CET


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_hours(DAY).covers(datetime(2026, 3, 29, 2, 30))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "vide"),
        ("mon-fri", "plage horaire HH:MM-HH:MM attendue"),
        ("mon-fry 08:00-19:00", "jour « fry » inconnu"),
        ("mon-fri 08:00-25:00", "heure « 25:00 » invalide"),
        ("mon-fri 08:60-19:00", "heure « 08:60 » invalide"),
        ("mon-fri 24:00-08:00", "« 24:00 » ne peut être qu'une fin de plage"),
        ("mon-fri 08:00-08:00", "vide"),
        ("mon-fri 08:00-19:00,", "plage attendue après le dernier séparateur"),
        ("mon-fri 8h-19h", "caractère inattendu"),
        ("mon-fri 08:00-19:00 sat", "« , » ou « ; » attendu"),
        ("08:00-19:00 10:00", "caractère inattendu"),
        ("mon-", "jour attendu"),
    ],
)
def test_bad_syntax(text: str, message: str) -> None:
    with pytest.raises(HoursError) as err:
        parse_hours(text)
    assert message in str(err.value)
