"""Reachability hours of a referent: ``"mon-fri 08:00-19:00, sat 09:00-12:00"``.

Syntax (case-insensitive; English or French day names)::

    hours  := group (("," | ";") group)*
    group  := [days] range ([","] range)*
    days   := day ["-" day] ("," day ["-" day])*       mon tue wed thu fri sat sun
                                                      lun mar mer jeu ven sam dim
    range  := HH:MM "-" HH:MM                         "24:00" allowed as an end

* No days = every day. ``fri-mon`` wraps over the weekend.
* A range whose end is not after its start crosses midnight and belongs to the day it starts:
  ``"fri 19:00-08:00"`` is Friday 19:00 to Saturday 08:00.
* Times are Europe/Paris wall-clock times. A contact is reachable at an instant when the Paris
  wall clock at that instant falls in a range, so the DST nights need no special case: on the
  spring-forward night 02:00–03:00 never shows on the clock (a range ending at 02:30 ends at
  the jump), on the fall-back night 02:00–03:00 shows twice and is covered both times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
DAY_MIN = 24 * 60
WEEK_MIN = 7 * DAY_MIN

_DAYS: dict[str, int] = {}
for _i, _names in enumerate(
    (
        ("mon", "monday", "lun", "lundi"),
        ("tue", "tuesday", "mar", "mardi"),
        ("wed", "wednesday", "mer", "mercredi"),
        ("thu", "thursday", "jeu", "jeudi"),
        ("fri", "friday", "ven", "vendredi"),
        ("sat", "saturday", "sam", "samedi"),
        ("sun", "sunday", "dim", "dimanche"),
    )
):
    for _n in _names:
        _DAYS[_n] = _i

DAY_LABELS_FR = ("lun.", "mar.", "mer.", "jeu.", "ven.", "sam.", "dim.")

_TOKEN_RE = re.compile(
    r"\s*(?:"
    r"(?P<range>(?P<h1>\d{1,2}):(?P<m1>\d{2})\s*[-–]\s*(?P<h2>\d{1,2}):(?P<m2>\d{2}))"
    r"|(?P<day>[^\W\d_]+)"
    r"|(?P<dash>[-–])"
    r"|(?P<comma>,)"
    r"|(?P<semi>;)"
    r")"
)


class HoursError(ValueError):
    """A bad ``hours`` value; the message is French and says what is wrong."""


@dataclass(frozen=True, slots=True)
class Hours:
    text: str
    # Minutes of the week from Monday 00:00 (Paris wall clock), [start, end), sorted, merged.
    intervals: tuple[tuple[int, int], ...]

    def covers(self, now: datetime) -> bool:
        """Is ``now`` (aware) inside these hours, on the Paris wall clock?"""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        local = now.astimezone(PARIS)
        minute = (
            local.weekday() * DAY_MIN
            + local.hour * 60
            + local.minute
            + (local.second + local.microsecond / 1e6) / 60
        )
        return any(start <= minute < end for start, end in self.intervals)

    @property
    def always(self) -> bool:
        return self.intervals == ((0, WEEK_MIN),)


def _minutes(hour: str, minute: str, text: str, *, end: bool) -> int:
    h, m = int(hour), int(minute)
    if m > 59 or h > 24 or (h == 24 and m != 0):
        raise HoursError(f"heure « {hour}:{minute} » invalide dans « {text} »")
    if h == 24 and not end:
        raise HoursError(f"« 24:00 » ne peut être qu'une fin de plage dans « {text} »")
    return h * 60 + m


def merge(intervals: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return tuple(out)


def parse_hours(text: str) -> Hours:
    """Parse an ``hours`` value; ``HoursError`` with a French message when it is wrong."""
    tokens: list[tuple[str, re.Match[str]]] = []
    pos, raw = 0, text.strip()
    lowered = raw.lower()
    if not lowered:
        raise HoursError("« hours » est vide")
    while pos < len(lowered):
        match = _TOKEN_RE.match(lowered, pos)
        if match is None or match.end() == pos:
            rest = lowered[pos:].strip()
            if not rest:
                break
            raise HoursError(f"caractère inattendu « {rest[0]} » dans « {raw} »")
        kind = match.lastgroup
        if kind in ("h1", "m1", "h2", "m2"):
            kind = "range"
        assert kind is not None
        tokens.append((kind, match))
        pos = match.end()

    intervals: list[tuple[int, int]] = []
    i, n = 0, len(tokens)

    def expect_day(j: int) -> int:
        if j >= n or tokens[j][0] != "day":
            raise HoursError(f"jour attendu dans « {raw} »")
        name = tokens[j][1].group("day")
        if name not in _DAYS:
            raise HoursError(
                f"jour « {name} » inconnu dans « {raw} » (attendu mon, tue, wed, thu, fri, sat, "
                "sun ou lun, mar, mer, jeu, ven, sam, dim)"
            )
        return _DAYS[name]

    while i < n:
        days: list[int] = []
        if tokens[i][0] == "day":
            while True:
                first = expect_day(i)
                i += 1
                if i < n and tokens[i][0] == "dash":
                    last = expect_day(i + 1)
                    i += 2
                    span = (last - first) % 7
                    days.extend((first + k) % 7 for k in range(span + 1))
                else:
                    days.append(first)
                if i + 1 < n and tokens[i][0] == "comma" and tokens[i + 1][0] == "day":
                    i += 1
                    continue
                break
        else:
            days = list(range(7))
        if i >= n or tokens[i][0] != "range":
            raise HoursError(f"plage horaire HH:MM-HH:MM attendue dans « {raw} »")
        while True:
            m = tokens[i][1]
            start = _minutes(m.group("h1"), m.group("m1"), raw, end=False)
            end = _minutes(m.group("h2"), m.group("m2"), raw, end=True)
            if start == end:
                raise HoursError(f"plage « {m.group('range')} » vide dans « {raw} »")
            for day in days:
                base = day * DAY_MIN
                # end <= start: the range crosses midnight into the next day.
                stop = base + end if end > start else base + DAY_MIN + end
                if stop <= WEEK_MIN:
                    intervals.append((base + start, stop))
                else:  # Sunday night into Monday morning: wrap to the week's start
                    intervals.append((base + start, WEEK_MIN))
                    intervals.append((0, stop - WEEK_MIN))
            i += 1
            if i < n and tokens[i][0] == "range":
                continue
            if i + 1 < n and tokens[i][0] == "comma" and tokens[i + 1][0] == "range":
                i += 1
                continue
            break
        if i < n:
            if tokens[i][0] not in ("comma", "semi"):
                raise HoursError(f"« , » ou « ; » attendu entre deux plages dans « {raw} »")
            i += 1
            if i >= n:
                raise HoursError(f"plage attendue après le dernier séparateur dans « {raw} »")
    return Hours(text=raw, intervals=merge(intervals))


def week_minute_label(minute: int) -> str:
    """``5 * 1440 + 480`` → ``"sam. 08:00"``."""
    day, rest = divmod(minute % WEEK_MIN, DAY_MIN)
    return f"{DAY_LABELS_FR[day]} {rest // 60:02d}:{rest % 60:02d}"
