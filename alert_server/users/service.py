"""Accounts, passwords, login throttling, browser sessions, API tokens and the audit trail.

Keyword-only arguments, session first. Nothing here knows about HTTP: the dashboard and the
API hand in the caller's IP address and user agent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete
from sqlmodel import Session, col, select

from alert_server.users import throttle
from alert_server.users.models import Account, AuditRecord, LoginFailure, WebSession
from alert_server.users.schemas import ADMIN, DISPATCHER, ROLES, NewAccount, Principal
from vigie.departements import DEPARTEMENT_CODES, departement_sort_key
from vigie.timeutil import as_utc

# argon2id with the library's defaults (RFC 9106 "low memory" profile).
_hasher = PasswordHasher()
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._@-]{2,63}$")
# ANSSI's recommendation for a password protected by a slow hash and a rate limit.
MIN_PASSWORD_LEN = 12
# Hashing a megabyte-long "password" is a cheap denial of service; nobody types more.
MAX_PASSWORD_LEN = 1024

# Login throttling: a growing delay, never a lock (users/throttle.py).
FAILURE_RETENTION = timedelta(days=1)

# A browser session lasts one long shift; it is not extended by activity, so a stolen
# cookie dies by itself. A console open all night is logged out after 12 h at the latest.
SESSION_TTL = timedelta(hours=12)
API_TOKEN_TTL = timedelta(hours=8)


class UserInputError(ValueError):
    """Bad input for an account; the message names the field (French, one line)."""


# -- validation ----------------------------------------------------------------------------


def normalise_username(username: str) -> str:
    return username.strip().lower()


def parse_departements(text: str | None) -> tuple[str, ...]:
    """``"13, 84,2a"`` → ``("13", "2A", "84")``; ``UserInputError`` naming a bad code."""
    if text is None:
        return ()
    codes: set[str] = set()
    for part in text.split(","):
        code = part.strip().upper()
        if not code:
            continue
        if len(code) == 1 and code.isdigit():
            code = "0" + code
        if code not in DEPARTEMENT_CODES:
            raise UserInputError(
                f"--departements: {part.strip()!r} n'est pas un code de département"
            )
        codes.add(code)
    if not codes:
        raise UserInputError("--departements: liste vide (omettez l'option pour tout voir)")
    return tuple(sorted(codes, key=departement_sort_key))


def validate_password(password: str, field: str = "--password") -> str:
    if len(password) < MIN_PASSWORD_LEN:
        raise UserInputError(f"{field}: au moins {MIN_PASSWORD_LEN} caractères")
    if len(password) > MAX_PASSWORD_LEN:
        raise UserInputError(f"{field}: au plus {MAX_PASSWORD_LEN} caractères")
    if password.strip() != password or not password.isprintable():
        raise UserInputError(f"{field}: espaces en bord ou caractères de contrôle refusés")
    return password


def validate_new_account(
    username: str,
    password: str,
    role: str,
    departements: str | None,
    *,
    all_departements: bool = False,
) -> NewAccount:
    name = normalise_username(username)
    if not USERNAME_RE.match(name):
        raise UserInputError(
            f"USERNAME: {username!r} invalide (3 à 64 caractères : lettres, chiffres, . _ @ -)"
        )
    if role not in ROLES:
        raise UserInputError(f"--role: {role!r} invalide (admin ou dispatcher)")
    validate_password(password)
    deps = parse_departements(departements)
    if role == ADMIN and (deps or all_departements):
        # An admin sees everything; a restriction there would be a false sense of scope.
        raise UserInputError("--departements: ne s'applique qu'au rôle dispatcher")
    if role == DISPATCHER:
        deps = dispatcher_scope(deps, all_departements=all_departements)
    return NewAccount(username=name, password=password, role=role, departements=deps)


def dispatcher_scope(deps: tuple[str, ...], *, all_departements: bool) -> tuple[str, ...]:
    """A dispatcher's départements: a national desk must be asked for, never a default (a
    forgotten option must not show the whole country)."""
    if deps and all_departements:
        raise UserInputError("--all-departements: incompatible avec --departements")
    if not deps and not all_departements:
        raise UserInputError(
            "--departements: obligatoire pour un opérateur (ou --all-departements pour un "
            "poste national qui voit tous les départements)"
        )
    return deps


# -- accounts ------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _verify(encoded: str, password: str) -> bool:
    try:
        return _hasher.verify(encoded, password)
    except (VerificationError, InvalidHashError):
        return False


_DUMMY_HASH: str | None = None


def _burn_verify(password: str) -> None:
    """Spend the time of one real verification, so that an unknown username answers as slowly
    as a wrong password (no account enumeration by timing)."""
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
    _verify(_DUMMY_HASH, password)


def add_account(session: Session, *, new: NewAccount, now: datetime) -> Account:
    if get_account(session, username=new.username) is not None:
        raise UserInputError(f"USERNAME: le compte {new.username!r} existe déjà")
    account = Account(
        username=new.username,
        password_hash=hash_password(new.password),
        role=new.role,
        departements=list(new.departements),
        created_at=now,
    )
    session.add(account)
    session.flush()
    return account


def get_account(session: Session, *, username: str) -> Account | None:
    return session.exec(select(Account).where(Account.username == username)).first()


def list_accounts(session: Session) -> list[Account]:
    return list(session.exec(select(Account).order_by(col(Account.username))))


def principal_of(account: Account) -> Principal:
    assert account.id is not None
    deps = tuple(account.departements) if account.role == DISPATCHER else ()
    return Principal(
        account_id=account.id,
        username=account.username,
        role=account.role,
        departements=deps,
        token_generation=account.token_generation or 0,
    )


# -- login ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginResult:
    status: Literal["ok", "bad", "throttled"]
    principal: Principal | None = None
    retry_after_s: float = 0.0  # throttled: how long the next attempt must wait


def throttled(session: Session, *, username: str, ip: str, now: datetime) -> bool:
    return throttle.wait_s(session, username=username, ip=ip, now=now) > 0


def _record_failure(session: Session, *, username: str, ip: str, now: datetime) -> None:
    session.add(LoginFailure(at=now, username=username[:64], ip=ip[:45]))
    session.connection().execute(
        delete(LoginFailure).where(col(LoginFailure.at) < now - FAILURE_RETENTION)
    )


def login(session: Session, *, username: str, password: str, ip: str, now: datetime) -> LoginResult:
    """Check a username and password, with throttling (``users/throttle.py``). The outcome
    (a failure counted, failures cleared) is committed before the account is released, so
    that the next attempt on it sees it; the caller's later writes (audit) commit after."""
    name = normalise_username(username)[:64]
    with throttle.GATE.account(name) as owned:
        if not owned:
            # Another attempt on this account is being checked: wait for its outcome.
            return LoginResult("throttled", retry_after_s=1.0)
        wait = throttle.wait_s(session, username=name, ip=ip, now=now)
        if wait > 0:
            # No password check at all while throttled: the answer must not depend on it.
            return LoginResult("throttled", retry_after_s=wait)
        result = _check(session, name=name, password=password[:MAX_PASSWORD_LEN], ip=ip, now=now)
        session.commit()
        return result


def _check(session: Session, *, name: str, password: str, ip: str, now: datetime) -> LoginResult:
    with throttle.GATE.check() as may:
        if not may:
            return LoginResult("throttled", retry_after_s=1.0)
        account = get_account(session, username=name)
        if account is None or account.disabled_at is not None:
            _burn_verify(password)
            _record_failure(session, username=name, ip=ip, now=now)
            return LoginResult("bad")
        if not _verify(account.password_hash, password):
            _record_failure(session, username=name, ip=ip, now=now)
            return LoginResult("bad")
    if _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = hash_password(password)
        session.add(account)
    # A success clears this account's failures (not the IP's: failures on other accounts from
    # the same address still count).
    session.connection().execute(delete(LoginFailure).where(col(LoginFailure.username) == name))
    return LoginResult("ok", principal_of(account))


# -- audit ---------------------------------------------------------------------------------


def audit(
    session: Session,
    *,
    action: str,
    now: datetime,
    actor: str | None = None,
    target: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    **detail: Any,
) -> None:
    session.add(
        AuditRecord(
            at=now,
            actor=actor[:64] if actor else None,
            action=action[:40],
            target=target[:200] if target else None,
            ip=ip[:45] if ip else None,
            user_agent=user_agent[:300] if user_agent else None,
            detail=detail,
        )
    )


def recent_audit(session: Session, *, limit: int = 200) -> list[AuditRecord]:
    stmt = select(AuditRecord).order_by(col(AuditRecord.id).desc()).limit(limit)
    return list(session.exec(stmt))


# -- browser sessions ----------------------------------------------------------------------


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", errors="replace")).hexdigest()


def open_session(
    session: Session,
    *,
    principal: Principal,
    ip: str | None,
    user_agent: str | None,
    now: datetime,
) -> tuple[str, WebSession]:
    """A new session; returns the cookie value (shown once, only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    row = WebSession(
        token_sha256=_token_digest(token),
        account_id=principal.account_id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + SESSION_TTL,
        ip=ip[:45] if ip else None,
        user_agent=user_agent[:300] if user_agent else None,
    )
    session.add(row)
    session.flush()
    return token, row


def session_principal(
    session: Session, *, token: str, now: datetime
) -> tuple[WebSession, Principal] | None:
    """The live session for a cookie value and its account, or None (expired, revoked,
    disabled account, unknown token)."""
    if not token or len(token) > 200:
        return None
    found = session.exec(
        select(WebSession, Account)
        .join(Account, col(Account.id) == col(WebSession.account_id))
        .where(WebSession.token_sha256 == _token_digest(token))
    ).first()
    if found is None:
        return None
    row, account = found
    if row.revoked_at is not None or as_utc(row.expires_at) <= now:
        return None
    if account.disabled_at is not None:
        return None
    return row, principal_of(account)


def close_session(session: Session, *, token: str, now: datetime) -> None:
    row = session.exec(
        select(WebSession).where(WebSession.token_sha256 == _token_digest(token))
    ).first()
    if row is not None and row.revoked_at is None:
        row.revoked_at = now
        session.add(row)


# -- API tokens ----------------------------------------------------------------------------
# Stateless bearer tokens: base64url(JSON claims) "." base64url(HMAC-SHA256). The key is
# derived from VIGIE_SECRET_KEY for this one purpose, so a signature made for anything else
# with the same secret can never pass as a token. The account is still looked up on every
# request, so disabling an account cuts its tokens off at once.

_TOKEN_CONTEXT = b"vigie/api-token/v1"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    account_id: int
    username: str
    issued_at: int
    expires_at: int
    generation: int = 0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _token_key(secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), _TOKEN_CONTEXT, hashlib.sha256).digest()


def issue_api_token(
    secret: str, principal: Principal, *, now: datetime, ttl: timedelta = API_TOKEN_TTL
) -> str:
    claims = {
        "typ": "api",
        "uid": principal.account_id,
        "sub": principal.username,
        "gen": principal.token_generation,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    sig = _b64(hmac.new(_token_key(secret), body.encode("ascii"), hashlib.sha256).digest())
    return f"{body}.{sig}"


def read_api_token(secret: str, token: str, *, now: datetime) -> TokenClaims | None:
    """The claims of a valid, unexpired token signed with ``secret``; None otherwise."""
    if not token or len(token) > 1000 or token.count(".") != 1:
        return None
    body, sig = token.split(".")
    try:
        expected = _b64(hmac.new(_token_key(secret), body.encode("ascii"), hashlib.sha256).digest())
    except UnicodeEncodeError:
        return None
    if not hmac.compare_digest(expected, sig):
        return None
    try:
        data = json.loads(_unb64(body))
        claims = TokenClaims(
            account_id=int(data["uid"]),
            username=str(data["sub"]),
            issued_at=int(data["iat"]),
            expires_at=int(data["exp"]),
            generation=int(data.get("gen", 0)),
        )
        if data.get("typ") != "api":
            return None
    except (ValueError, KeyError, TypeError):
        return None
    if claims.expires_at <= now.timestamp():
        return None
    return claims


def principal_for_token(
    session: Session, *, secret: str, token: str, now: datetime
) -> Principal | None:
    claims = read_api_token(secret, token, now=now)
    if claims is None:
        return None
    account = session.get(Account, claims.account_id)
    if account is None or account.disabled_at is not None or account.username != claims.username:
        return None
    if claims.generation != account.token_generation:
        return None  # revoked (vigie users revoke-tokens, disable or passwd)
    return principal_of(account)
