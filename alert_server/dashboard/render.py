"""Jinja2 rendering for the console: one autoescaping environment, French labels, Paris time.

Used by the pages and by the live stream (which renders board rows outside any request).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from alert_server.alerts.schemas import (
    DETAIL_LABELS_FR,
    FLAG_LABELS_FR,
    KIND_LABELS_FR,
    OUTCOMES,
    STATE_LABELS_FR,
)
from alert_server.dashboard.config import BOUNDARY_ATTRIBUTION, TEMPLATES_DIR
from alert_server.dashboard.presstime import press_time, urgency_group
from vigie.timeutil import as_utc, rfc3339
from vigie.vocabulary import (
    ACTIVE_STATES,
    CLOSED_STATES,
    AlertKind,
    AlertState,
    Role,
    for_browsers,
)

PARIS = ZoneInfo("Europe/Paris")

WORKER_ROLES_FR = {"nurse": "Infirmier·ère", "pharmacist": "Pharmacien·ne", "other": "Autre"}
POS_SOURCES_FR = {
    "gps": "GPS",
    "wifi": "Wi-Fi",
    "cell": "antenne GSM",
    "fixed": "adresse fixe",
    "manual": "saisie manuelle",
}
STATE_FILTERS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "active": ("En cours (non prises + prises en charge)", ACTIVE_STATES),
    AlertState.OPEN: ("Non prises en charge", (AlertState.OPEN,)),
    AlertState.ACKNOWLEDGED: ("Prises en charge", (AlertState.ACKNOWLEDGED,)),
    "closed": ("Clôturées ou annulées", CLOSED_STATES),
    "all": ("Toutes", None),
}


def paris(value: datetime | None, fmt: str = "%H:%M:%S") -> str:
    if value is None:
        return "—"
    return as_utc(value).astimezone(PARIS).strftime(fmt)


def paris_full(value: datetime | None) -> str:
    return paris(value, "%d/%m/%Y %H:%M:%S")


def iso(value: datetime | None) -> str:
    return rfc3339(value) if value is not None else ""


def elapsed(value: datetime | None, now: datetime) -> str:
    """``"4 min 05 s"``, as the JavaScript timer shows it (server-side first paint)."""
    if value is None:
        return ""
    seconds = max(0, int((now - as_utc(value)).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def distance_label(metres: float | None) -> str:
    if metres is None:
        return "précision inconnue"
    if metres >= 1000:
        return f"± {metres / 1000:.1f} km".replace(".", ",")
    return f"± {round(metres)} m"


def coords(value: float | None) -> str:
    return "—" if value is None else f"{value:.5f}"


def _seconds_label(value: float) -> str:
    seconds = int(value)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d}"


def _detail_value(key: str, value: Any) -> str:
    if key == "acc_m" and isinstance(value, int | float):
        return distance_label(float(value))
    if key == "age_s" and isinstance(value, int | float):
        return _seconds_label(float(value))
    if key in ("lat", "lon") and isinstance(value, int | float):
        return f"{value:.5f}"
    if key == "source" and isinstance(value, str):
        return POS_SOURCES_FR.get(value, value)
    if key == "outcome" and isinstance(value, str):
        return OUTCOMES.get(value, value)
    if key == "flags" and isinstance(value, list):
        return ", ".join(FLAG_LABELS_FR.get(str(f), str(f)) for f in value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def event_details(detail: dict[str, Any]) -> list[tuple[str, str]]:
    """A timeline entry's details as (French label, readable value), empty ones left out."""
    known = [k for k in DETAIL_LABELS_FR if k in detail]
    others = sorted(k for k in detail if k not in DETAIL_LABELS_FR)
    out = []
    for key in known + others:
        value = detail[key]
        if value is None or value == "" or value == [] or value == {}:
            continue
        out.append((DETAIL_LABELS_FR.get(key, key), _detail_value(key, value)))
    return out


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        paris=paris,
        paris_full=paris_full,
        iso=iso,
        elapsed=elapsed,
        distance=distance_label,
        coords=coords,
        event_details=event_details,
        path_segment=lambda v: quote(str(v), safe=""),
        state_label=lambda s: STATE_LABELS_FR.get(s, s),
        kind_label=lambda k: KIND_LABELS_FR.get(k, k),
        flag_label=lambda f: FLAG_LABELS_FR.get(f, f),
        outcome_label=lambda o: (
            "non close" if o == "non_clos" else OUTCOMES.get(o, o) if o else "—"
        ),
        worker_role=lambda r: WORKER_ROLES_FR.get(r, r),
        pos_source=lambda s: POS_SOURCES_FR.get(s, s or "source inconnue"),
        seconds=lambda v: "—" if v is None else f"{v:.0f} s" if v < 120 else f"{v / 60:.1f} min",
        press_time=press_time,
        urgency=urgency_group,
        percent=lambda v: "—" if v is None else f"{100 * v:.0f} %",
    )
    env.globals.update(
        OUTCOMES=OUTCOMES,
        STATE_FILTERS=STATE_FILTERS,
        BOUNDARY_ATTRIBUTION=BOUNDARY_ATTRIBUTION,
        # The shared vocabulary: templates compare with these, never with a spelled string.
        AlertState=AlertState,
        AlertKind=AlertKind,
        Role=Role,
        VOCABULARY=for_browsers(),
    )
    return env


ENV = _env()


def render(template: str, **context: Any) -> str:
    return ENV.get_template(template).render(**context)
