"""Tables of the users package: accounts, browser sessions, login failures, audit trail.

The hand-written migration in ``users/migrations/`` must match these models exactly
(``tests/test_migrations.py`` compares them on SQLite and PostgreSQL).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


class Account(SQLModel, table=True):
    """A person who uses the dashboard or the API (never a device, never a referent)."""

    __tablename__ = "account"

    id: int | None = Field(default=None, primary_key=True)
    # Stored lower-case: "Martin" and "martin" are one account.
    username: str = Field(max_length=64, unique=True)
    password_hash: str = Field(max_length=200)  # argon2id; the password itself is never stored
    role: str = Field(max_length=16)  # admin | dispatcher
    # Département codes a dispatcher may see. Empty: no restriction (national desk), which is
    # also the only way to see alerts whose département is unknown (see users/service.py).
    departements: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime
    disabled_at: datetime | None = None
    # Stamped into every API token; raising it (revoke-tokens, disable, passwd) makes every
    # token issued before refused at once, on every server sharing the database.
    token_generation: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class WebSession(SQLModel, table=True):
    """A browser session. Server-side, so that logout and account removal take effect at once
    on every server sharing the database; the cookie holds a random token whose SHA-256 is
    stored here (a stolen database does not yield usable cookies)."""

    __tablename__ = "web_session"

    id: int | None = Field(default=None, primary_key=True)
    token_sha256: str = Field(max_length=64, unique=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    # Synchronizer token for the forms of this session (CSRF).
    csrf_token: str = Field(max_length=64)
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    ip: str | None = Field(default=None, max_length=45)
    user_agent: str | None = Field(default=None, max_length=300)


class LoginFailure(SQLModel, table=True):
    """One failed login; counted over a sliding window per IP and per username. In the
    database so that the limit holds across several servers behind one address."""

    __tablename__ = "login_failure"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    username: str = Field(max_length=64, index=True)
    ip: str = Field(max_length=45, index=True)


class AuditRecord(SQLModel, table=True):
    """Who did what, when, from where. Written in the same transaction as the action it
    records when there is one, so an action without its audit line cannot exist."""

    __tablename__ = "audit"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    actor: str | None = Field(default=None, max_length=64)  # username; None when unknown
    action: str = Field(max_length=40, index=True)  # login.ok, alert.ack, user.add, ...
    target: str | None = Field(default=None, max_length=200, index=True)  # alert_id, username
    ip: str | None = Field(default=None, max_length=45)
    user_agent: str | None = Field(default=None, max_length=300)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
