"""``vigie referents check``: who cannot be reached, now and over a week. Pure functions.

The week is analysed exactly (interval arithmetic on minutes of the Paris wall-clock week), not
sampled, so a gap of one minute is reported with its exact bounds. The national fallback is set
aside: it is always appended and always reachable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from alert_server.referents.hours import DAY_LABELS_FR, DAY_MIN, PARIS, WEEK_MIN, merge
from alert_server.referents.schemas import Directory, ReferentContact
from vigie.departements import DEPARTEMENT_CODES, departement_sort_key


@dataclass(frozen=True, slots=True)
class Gap:
    """Nobody of (département, force) is reachable from ``start`` to ``end`` (week minutes)."""

    departement: str
    force: str
    start: int
    end: int


def coverage(contacts: Iterable[ReferentContact]) -> tuple[tuple[int, int], ...]:
    intervals: list[tuple[int, int]] = []
    for c in contacts:
        if c.hours is None:
            return ((0, WEEK_MIN),)
        intervals.extend(c.hours.intervals)
    return merge(intervals)


def _complement(covered: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    cursor = 0
    for start, end in covered:
        if start > cursor:
            out.append((cursor, start))
        cursor = max(cursor, end)
    if cursor < WEEK_MIN:
        out.append((cursor, WEEK_MIN))
    return out


def _sorted_items(directory: Directory) -> list[tuple[str, str, tuple[ReferentContact, ...]]]:
    return [
        (dep, force, directory.departements[dep][force])
        for dep in sorted(directory.departements, key=departement_sort_key)
        for force in sorted(directory.departements[dep])
    ]


def weekly_gaps(directory: Directory) -> list[Gap]:
    return [
        Gap(dep, force, start, end)
        for dep, force, contacts in _sorted_items(directory)
        for start, end in _complement(coverage(contacts))
    ]


def unreachable_now(directory: Directory, now: datetime) -> list[tuple[str, str]]:
    return [
        (dep, force)
        for dep, force, contacts in _sorted_items(directory)
        if not any(c.reachable(now) for c in contacts)
    ]


def departements_without_entry(directory: Directory) -> list[str]:
    return sorted(DEPARTEMENT_CODES - set(directory.departements), key=departement_sort_key)


def _hhmm(minute_of_day: int) -> str:
    return f"{minute_of_day // 60:02d}:{minute_of_day % 60:02d}"


def day_segments(start: int, end: int) -> list[str]:
    """``[sat 00:00, sat 08:00)`` → ``["sam. 00:00–08:00"]``; split at each midnight."""
    out: list[str] = []
    cursor = start
    while cursor < end:
        day = cursor // DAY_MIN
        seg_end = min(end, (day + 1) * DAY_MIN)
        out.append(
            f"{DAY_LABELS_FR[day % 7]} {_hhmm(cursor - day * DAY_MIN)}–"
            f"{_hhmm(seg_end - day * DAY_MIN)}"
        )
        cursor = seg_end
    return out


def check_lines(
    directory: Directory,
    now: datetime,
    zone_counts: Mapping[tuple[str, str], int] | None = None,
) -> tuple[list[str], int]:
    """The report, in French, and the number of problems found (gaps and zone mismatches)."""
    lines: list[str] = []
    problems = 0
    local = now.astimezone(PARIS)
    header = f"Annuaire : {directory.source or '?'}"
    if directory.sha256:
        header += f" (sha256 {directory.sha256[:12]}"
        if directory.loaded_at is not None:
            header += f", chargé le {directory.loaded_at.astimezone(PARIS):%Y-%m-%d %H:%M} Paris"
        header += ")"
    lines.append(header)

    lines.append(
        f"Maintenant ({DAY_LABELS_FR[local.weekday()]} {local:%H:%M}, heure de Paris, "
        "hors repli national) :"
    )
    now_gaps = unreachable_now(directory, now)
    for dep, force in now_gaps:
        lines.append(f"{dep} {force} : personne de joignable maintenant")
    if not now_gaps:
        lines.append("chaque département de l'annuaire a quelqu'un de joignable")
    problems += len(now_gaps)

    lines.append("Sur une semaine (heure de Paris, hors repli national) :")
    gaps = weekly_gaps(directory)
    for gap in gaps:
        for segment in day_segments(gap.start, gap.end):
            lines.append(f"{gap.departement} {gap.force} : personne de joignable {segment}")
    if not gaps:
        lines.append("aucun trou dans la semaine")
    problems += len(gaps)

    if zone_counts:
        for (dep, force), count in sorted(
            zone_counts.items(), key=lambda kv: (departement_sort_key(kv[0][0]), kv[0][1])
        ):
            forces = directory.departements.get(dep)
            if forces and force not in forces and count:
                other = "/".join(sorted(forces))
                lines.append(
                    f"{dep} {force} : {count} commune(s) en zone {force} mais aucune liste "
                    f"{force} dans l'annuaire (alertes dirigées vers {other})"
                )
                problems += 1

    missing = departements_without_entry(directory)
    if missing:
        lines.append(
            f"Départements sans entrée, repli national uniquement ({len(missing)}) : "
            + ", ".join(missing)
        )
    return lines, problems
