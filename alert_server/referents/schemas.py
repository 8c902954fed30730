"""The referent directory as plain, frozen values (parsed from the YAML of operations.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from alert_server.referents.hours import Hours
from dispatch.policy import DEFAULT_POLICY, EscalationPolicy
from dispatch.schemas import Contact


@dataclass(frozen=True, slots=True)
class ReferentContact:
    name: str
    phone: str  # E.164
    hours: Hours | None = None  # None = always reachable
    line: int = 0  # where it is written in the YAML (for reports)

    def reachable(self, now: datetime) -> bool:
        return self.hours is None or self.hours.covers(now)

    def contact(self) -> Contact:
        return Contact(name=self.name, phone=self.phone)


@dataclass(frozen=True, slots=True)
class Directory:
    """``departements[code][force]`` is the ordered list of referents for that zone."""

    departements: Mapping[str, Mapping[str, tuple[ReferentContact, ...]]]
    national_fallback: tuple[ReferentContact, ...]
    escalation: EscalationPolicy = DEFAULT_POLICY
    version: int = 1
    source: str = ""
    sha256: str = ""
    loaded_at: datetime | None = None  # when it was stored in the database


class DirectoryError(ValueError):
    """Every problem of a directory file, one ``FILE:LINE: message`` per entry."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
