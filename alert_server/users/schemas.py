"""What crosses the users package's boundary: the authenticated caller and a new account."""

from __future__ import annotations

from dataclasses import dataclass

from vigie.vocabulary import Role

ADMIN = Role.ADMIN
DISPATCHER = Role.DISPATCHER
ROLES: tuple[str, ...] = (ADMIN, DISPATCHER)
ROLE_LABELS_FR: dict[str, str] = {ADMIN: "administrateur", DISPATCHER: "opérateur"}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated person, as every read and action sees them.

    Visibility rule (enforced in SQL by ``alerts.api.scope_clause``):
    - an admin sees every alert;
    - a dispatcher without départements (a national desk) sees every alert, including those
      whose département is unknown (no position, position abroad or at sea);
    - a dispatcher with départements sees only alerts located in them. An alert whose
      département is unknown is NOT shown to them: it cannot be attributed to their area,
      and it is escalated to the national fallback contacts anyway (operations.md).
    """

    account_id: int
    username: str
    role: str
    departements: tuple[str, ...] = ()

    @property
    def restricted(self) -> bool:
        return self.role != ADMIN and bool(self.departements)

    def sees_departement(self, code: str | None) -> bool:
        if not self.restricted:
            return True
        return code is not None and code in self.departements

    @property
    def scope_label(self) -> str:
        if self.role == ADMIN:
            return "tous départements"
        if not self.departements:
            return "national"
        return ", ".join(self.departements)


@dataclass(frozen=True, slots=True)
class NewAccount:
    username: str
    password: str
    role: str
    departements: tuple[str, ...] = ()
