"""``check``: exact weekly gaps (French lines), now, départements without entry."""

from __future__ import annotations

from datetime import UTC, datetime

from alert_server.referents.check import check_lines, day_segments, weekly_gaps
from alert_server.referents.hours import DAY_MIN
from alert_server.referents.parser import parse_directory
from alert_server.referents.schemas import Directory

GAPS = """\
departements:
  "13":
    PN:
      - {name: CIC Marseille, phone: "+33491000113"}
    GN:
      - {name: GN jour, phone: "+33491000213", hours: "mon-fri 08:00-19:00, sat 08:00-12:00"}
      - {name: GN nuit, phone: "+33491000313", hours: "sun-thu 19:00-08:00, fri 19:00-24:00"}
      - {name: GN week-end, phone: "+33491000413", hours: "sat 12:00-24:00, sun 00:00-24:00"}
  "84":
    GN:
      - {name: GN 84, phone: "+33490000084", hours: "mon-fri 08:00-18:59"}
national_fallback:
  - {name: Permanence nationale, phone: "+33100000000"}
"""


def test_weekly_gaps_are_exact() -> None:
    d = parse_directory(GAPS, "a.yaml")
    gaps = {(g.departement, g.force, g.start, g.end) for g in weekly_gaps(d)}
    # 13 GN: only Saturday 00:00–08:00 is uncovered (Friday's night range stops at 24:00).
    assert ("13", "GN", 5 * DAY_MIN, 5 * DAY_MIN + 8 * 60) in gaps
    assert [g for g in gaps if g[0] == "13"] == [("13", "GN", 5 * DAY_MIN, 5 * DAY_MIN + 480)]
    # 84 GN: every weekday from 18:59 to 08:00 the next day, and the whole weekend.
    gaps84 = sorted((s, e) for dep, _, s, e in gaps if dep == "84")
    assert gaps84[0] == (0, 8 * 60)
    assert gaps84[1] == (18 * 60 + 59, DAY_MIN + 8 * 60)
    assert gaps84[-1] == (4 * DAY_MIN + 18 * 60 + 59, 7 * DAY_MIN)


def test_report_lines() -> None:
    d = parse_directory(GAPS, "a.yaml")
    saturday_3h = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)  # 03:00 Paris
    lines, problems = check_lines(d, saturday_3h)
    assert "13 GN : personne de joignable sam. 00:00–08:00" in lines
    assert "84 GN : personne de joignable lun. 18:59–24:00" in lines
    assert "84 GN : personne de joignable mar. 00:00–08:00" in lines
    assert "84 GN : personne de joignable dim. 00:00–24:00" in lines
    assert "13 GN : personne de joignable maintenant" in lines
    assert "84 GN : personne de joignable maintenant" in lines
    assert not any(line.startswith("13 PN") for line in lines)
    missing = next(line for line in lines if line.startswith("Départements sans entrée"))
    assert "(99)" in missing and "01, 02," in missing and "2A, 2B" in missing
    assert "13" not in missing.split(":")[1].split(", ")
    assert problems == 2 + 1 + 6  # now: 13 GN, 84 GN; week: 1 gap in 13, 6 in 84


def test_zone_mismatch_is_reported(spec_directory: Directory) -> None:
    lines, _ = check_lines(
        spec_directory,
        datetime(2026, 11, 24, 9, 0, tzinfo=UTC),
        {("53", "PN"): 4, ("53", "GN"): 250},
    )
    assert any(
        line.startswith("53 PN : 4 commune(s) en zone PN mais aucune liste PN") for line in lines
    )


def test_day_segments() -> None:
    assert day_segments(4 * DAY_MIN + 19 * 60, 5 * DAY_MIN + 8 * 60) == [
        "ven. 19:00–24:00",
        "sam. 00:00–08:00",
    ]
