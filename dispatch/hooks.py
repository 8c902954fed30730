"""How dispatch tells the alert server what happened, without importing it.

``on_*`` methods run INSIDE dispatch's transaction (the alert server updates its own rows in
the same transaction, so an acknowledgement is all-or-nothing). ``after_*`` methods run after
that transaction committed (publish to the device, push to the dashboard); they must not raise
and must not block for long.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlmodel import Session


class DispatchHooks(Protocol):
    def on_acknowledged(
        self,
        session: Session,
        alert_id: str,
        by_name: str,
        by_phone: str | None,
        via: str,
        at: datetime,
    ) -> None: ...

    def after_acknowledged(
        self, alert_id: str, by_name: str, by_phone: str | None, via: str, at: datetime
    ) -> None: ...

    def on_exhausted(self, session: Session, alert_id: str, at: datetime) -> None: ...

    def after_exhausted(self, alert_id: str, at: datetime) -> None: ...

    def after_change(self, alert_id: str) -> None:
        """The alert's dispatch timeline changed (a send, a callback…): refresh the dashboard."""
        ...


class NoopHooks:
    """Does nothing; for tests and for running dispatch on its own."""

    def on_acknowledged(
        self,
        session: Session,
        alert_id: str,
        by_name: str,
        by_phone: str | None,
        via: str,
        at: datetime,
    ) -> None:
        return None

    def after_acknowledged(
        self, alert_id: str, by_name: str, by_phone: str | None, via: str, at: datetime
    ) -> None:
        return None

    def on_exhausted(self, session: Session, alert_id: str, at: datetime) -> None:
        return None

    def after_exhausted(self, alert_id: str, at: datetime) -> None:
        return None

    def after_change(self, alert_id: str) -> None:
        return None
