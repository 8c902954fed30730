"""Which referents to alert: pure functions of the directory, the position and the time."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from alert_server.referents.schemas import Directory, ReferentContact
from dispatch.schemas import Chain, Contact


class RoutedPosition(Protocol):
    """What chain selection needs from a resolved position (``geo.schemas.ResolvedPosition``)."""

    @property
    def departements(self) -> tuple[str, ...]: ...

    def force_for(self, departement: str) -> str | None: ...


def default_force(directory: Directory, departement: str) -> str | None:
    """Force used when the commune's zone is unknown (operations.md).

    The département's only force in the directory, or PN when it lists both; None when the
    département has no entry.
    """
    forces = directory.departements.get(departement)
    if not forces:
        return None
    if len(forces) == 1:
        return next(iter(forces))
    return "PN" if "PN" in forces else sorted(forces)[0]


def _dedupe(contacts: Iterable[ReferentContact]) -> tuple[Contact, ...]:
    # One person listed twice (a CIC in the PN list and as the national desk) is called once,
    # at their first place in the chain.
    seen: set[str] = set()
    out: list[Contact] = []
    for c in contacts:
        if c.phone not in seen:
            seen.add(c.phone)
            out.append(c.contact())
    return tuple(out)


def chain_for(
    directory: Directory, departement: str | None, force: str | None, now: datetime
) -> Chain:
    """The ordered contacts for a département and force at ``now``, national fallback last.

    * Unknown département (no position, abroad) → the national fallback only.
    * Unknown force → the département's default (``default_force``).
    * The directory has no list for that force in that département (e.g. the zone table says
      PN but only GN referents are known) → the département's other force: a local referent
      who can pass the alert on is better than only the national desk. ``check`` reports it.
    * Only contacts whose ``hours`` cover ``now`` (Europe/Paris) are kept.
    """
    fallback = directory.national_fallback
    if departement is None:
        return Chain(departement=None, force=None, contacts=_dedupe(fallback))
    forces = directory.departements.get(departement)
    if not forces:
        return Chain(departement=departement, force=force, contacts=_dedupe(fallback))
    chosen = force if force in forces else default_force(directory, departement)
    assert chosen is not None  # forces is not empty
    reachable = [c for c in forces[chosen] if c.reachable(now)]
    return Chain(departement=departement, force=chosen, contacts=_dedupe([*reachable, *fallback]))


def chains_for_position(
    directory: Directory, position: RoutedPosition | None, now: datetime
) -> tuple[Chain, ...]:
    """One chain per département to notify (several when the position is ambiguous).

    No position or no département (at sea, abroad) → one chain: the national fallback.
    Each chain ends with the national fallback; the dispatcher notifies a phone number once
    per alert.
    """
    deps: Sequence[str] = position.departements if position is not None else ()
    if not deps:
        return (chain_for(directory, None, None, now),)
    assert position is not None
    return tuple(chain_for(directory, dep, position.force_for(dep), now) for dep in deps)
