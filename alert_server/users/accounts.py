"""Changes to an existing account (``vigie users disable|enable|passwd|scope|revoke-tokens``).

Every change that takes rights away takes effect at once on every server sharing the
database: browser sessions are revoked in the table the console reads on every request, and
the account's token generation is raised so that API tokens issued before are refused (the
account is looked up on every API request). Each function writes its audit line in the
caller's transaction: the change and its audit line, or neither.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col

from alert_server.users import service
from alert_server.users.models import Account, LoginFailure, WebSession
from alert_server.users.schemas import DISPATCHER


def _account(session: Session, username: str) -> Account:
    account = service.get_account(session, username=service.normalise_username(username))
    if account is None:
        raise service.UserInputError(f"USERNAME: compte {username!r} inconnu")
    return account


def _cut_off(session: Session, account: Account, now: datetime) -> int:
    """Revoke every live browser session and every API token of ``account``; returns the
    number of sessions revoked."""
    account.token_generation = (account.token_generation or 0) + 1
    session.add(account)
    result = session.connection().execute(
        update(WebSession)
        .where(col(WebSession.account_id) == account.id, col(WebSession.revoked_at).is_(None))
        .values(revoked_at=now)
    )
    return int(result.rowcount or 0)


def disable(session: Session, *, username: str, now: datetime, actor: str) -> Account:
    account = _account(session, username)
    if account.disabled_at is None:
        account.disabled_at = now
    sessions = _cut_off(session, account, now)
    service.audit(
        session, action="user.disable", now=now, actor=actor, target=account.username,
        sessions_revoked=sessions,
    )  # fmt: skip
    return account


def enable(session: Session, *, username: str, now: datetime, actor: str) -> Account:
    account = _account(session, username)
    account.disabled_at = None
    session.add(account)
    service.audit(session, action="user.enable", now=now, actor=actor, target=account.username)
    return account


def set_password(
    session: Session, *, username: str, password: str, now: datetime, actor: str
) -> Account:
    account = _account(session, username)
    service.validate_password(password, "mot de passe")
    account.password_hash = service.hash_password(password)
    # A changed password is often a suspected leak: whoever used the old one is cut off.
    sessions = _cut_off(session, account, now)
    session.connection().execute(
        LoginFailure.__table__.delete().where(  # type: ignore[attr-defined]
            LoginFailure.__table__.c.username == account.username  # type: ignore[attr-defined]
        )
    )
    service.audit(
        session, action="user.passwd", now=now, actor=actor, target=account.username,
        sessions_revoked=sessions,
    )  # fmt: skip
    return account


def set_scope(
    session: Session,
    *,
    username: str,
    departements: str | None,
    all_departements: bool,
    now: datetime,
    actor: str,
) -> Account:
    account = _account(session, username)
    if account.role != DISPATCHER:
        raise service.UserInputError(
            f"USERNAME: {account.username!r} est administrateur ; la portée ne concerne que "
            "les opérateurs (dispatcher)"
        )
    deps = service.dispatcher_scope(
        service.parse_departements(departements), all_departements=all_departements
    )
    before = list(account.departements)
    account.departements = list(deps)
    session.add(account)
    # The scope is read from the account on every request: no token needs revoking.
    service.audit(
        session, action="user.scope", now=now, actor=actor, target=account.username,
        before=before, after=list(deps),
    )  # fmt: skip
    return account


def revoke_tokens(session: Session, *, username: str, now: datetime, actor: str) -> int:
    account = _account(session, username)
    sessions = _cut_off(session, account, now)
    service.audit(
        session, action="user.revoke_tokens", now=now, actor=actor, target=account.username,
        sessions_revoked=sessions,
    )  # fmt: skip
    return sessions
