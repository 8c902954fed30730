"""Properties of the ``hours`` field of the directory (``alert_server/referents/hours.py``)."""

from __future__ import annotations

import itertools
import re
from datetime import datetime

from hypothesis import example, given
from hypothesis import strategies as st

from alert_server.referents.hours import (
    _DAYS,
    DAY_MIN,
    PARIS,
    WEEK_MIN,
    HoursError,
    parse_hours,
)
from tests.property.common import UTC_DATETIMES, fast
from tests.property.directory import HOURS

_RANGE = re.compile(r"(\d{2}):(\d{2})-(\d{2}):(\d{2})")


def _oracle(text: str) -> list[bool]:
    """Minute-of-week bitmap of a generated ``hours`` text, computed independently of the
    parser: groups split on ``;`` or on ``, `` followed by a day name."""
    week = [False] * WEEK_MIN
    groups = re.split(r"\s*;\s*|,\s+(?=[^\W\d_])", text.strip().lower())
    for group in groups:
        days_part = group.split(" ", 1)[0] if group[:1].isalpha() else ""
        days: list[int] = []
        for item in filter(None, days_part.split(",")):
            first, _, last = item.partition("-")
            a = _DAYS[first]
            b = _DAYS[last] if last else a
            days.extend((a + k) % 7 for k in range((b - a) % 7 + 1))
        for h1, m1, h2, m2 in _RANGE.findall(group):
            start, end = int(h1) * 60 + int(m1), int(h2) * 60 + int(m2)
            length = (end - start) % DAY_MIN or DAY_MIN
            for day in days or range(7):
                for k in range(length):
                    week[(day * DAY_MIN + start + k) % WEEK_MIN] = True
    return week


def _bitmap(intervals: tuple[tuple[int, int], ...]) -> list[bool]:
    week = [False] * WEEK_MIN
    for start, end in intervals:
        for m in range(start, end):
            week[m] = True
    return week


@fast(60)
@given(HOURS)
@example("fri-mon 19:00-08:00")
@example("sun 22:00-24:00, 00:00-01:00")
@example("Lundi,mer-ven 08:00-12:00, 14:00-18:00; sam 09:00-12:00")
def test_valid_hours_cover_exactly_what_they_say(text: str) -> None:
    """Any ``hours`` written with the grammar of hours.py parses; its intervals are sorted,
    disjoint, inside the week, and cover exactly the minutes an independent reading of the
    text gives (ranges crossing midnight belong to the day they start; ``fri-mon`` wraps)."""
    hours = parse_hours(text)
    assert hours.text == text.strip()
    ivs = hours.intervals
    assert all(0 <= s < e <= WEEK_MIN for s, e in ivs)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ivs))
    assert _bitmap(ivs) == _oracle(text)
    assert hours.always == all(_oracle(text))


@fast(60)
@given(HOURS, UTC_DATETIMES)
def test_covers_reads_the_paris_wall_clock(text: str, now: datetime) -> None:
    """``covers(now)`` is true exactly when the Paris wall-clock minute of ``now`` is in the
    hours (DST nights need no special case)."""
    local = now.astimezone(PARIS)
    minute = local.weekday() * DAY_MIN + local.hour * 60 + local.minute
    assert parse_hours(text).covers(now) == _oracle(text)[minute]


TOKENS = st.sampled_from(
    [
        *("mon", "fri", "dim", "lundi", "xyz", "-", "–", ",", ";", " ", "08:00", "24:00"),
        *("25:61", "08:00-19:00", "19:00-08:00", "00:00-24:00", "9:5", "12", ":", "8h"),
    ]
)


@fast(120)
@given(st.lists(TOKENS, max_size=12).map("".join) | st.text(max_size=30))
@example("")
@example("mon-")
@example("mon 08:00-19:00,")
@example("٣:٠٠-٤:٠٠")
def test_any_hours_text_parses_or_is_refused(text: str) -> None:
    """Any text parses or raises HoursError (a French message), never another exception; a
    parsed text's intervals are normalised as above."""
    try:
        hours = parse_hours(text)
    except HoursError as exc:
        assert str(exc)
    else:
        assert all(0 <= s < e <= WEEK_MIN for s, e in hours.intervals)
        assert hours.intervals, "a parsed hours value covers something"
