"""``vigie users disable|enable|passwd|scope|revoke-tokens`` (operations.md 1.1): a change
that takes rights away stops the account's API tokens and console sessions at once; secrets
are never required on the command line; a national desk must be asked for."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from alert_server.cli import app as vigie_app
from alert_server.db import make_engine, write_scope
from alert_server.devices import service as devices_service
from alert_server.secret_input import SecretInputError, read_secret
from alert_server.users import service as users_service
from alert_server.users.models import Account, AuditRecord
from tests.api.conftest import PASSWORD, ApiStack
from vigie.timeutil import utcnow


def _cli(stack: ApiStack, *args: str, input: str | None = None) -> tuple[int, str, str]:
    env = {"VIGIE_DATABASE_URL": stack.runtime.settings.database_url}
    result = CliRunner().invoke(vigie_app, ["users", *args], env=env, input=input)
    return result.exit_code, result.stdout, result.stderr


def _alerts(stack: ApiStack, token: str) -> int:
    with stack.client(token) as c:
        return c.get("/api/alerts").status_code


def test_disable_revoke_and_passwd_stop_tokens_and_sessions_at_once(api: ApiStack) -> None:
    stack = api
    stack.add_user("regul", departements=("13",))
    token = stack.token("regul")
    assert _alerts(stack, token) == 200
    with write_scope(stack.runtime.engine) as s:
        principal = users_service.principal_of(
            users_service.get_account(s, username="regul")  # type: ignore[arg-type]
        )
        cookie, _ = users_service.open_session(
            s, principal=principal, ip="10.0.0.1", user_agent=None, now=utcnow()
        )

    def session_alive() -> bool:
        with write_scope(stack.runtime.engine) as s:
            return users_service.session_principal(s, token=cookie, now=utcnow()) is not None

    assert session_alive()
    code, out, err = _cli(stack, "revoke-tokens", "Regul")
    assert code == 0, err
    assert "révoqués" in out and "1 session" in out
    assert _alerts(stack, token) == 401
    assert not session_alive()

    # A new token works again; disabling stops it at once, enabling does not revive it.
    token2 = stack.token("regul")
    assert _alerts(stack, token2) == 200
    code, out, err = _cli(stack, "disable", "regul")
    assert (code, out.strip()) == (
        0, "Compte regul désactivé ; ses sessions et jetons sont révoqués."
    ), err  # fmt: skip
    assert _alerts(stack, token2) == 401
    with stack.client() as c:
        r = c.post("/api/token", data={"username": "regul", "password": PASSWORD})
    assert r.status_code == 401
    assert _cli(stack, "enable", "regul")[0] == 0
    assert _alerts(stack, token2) == 401
    token3 = stack.token("regul")
    assert _alerts(stack, token3) == 200

    # passwd: read from stdin (never an argument); old password and old tokens refused.
    new_password = "un tout nouveau mot de passe"
    code, out, err = _cli(stack, "passwd", "regul", input=new_password + "\n")
    assert code == 0, err
    assert _alerts(stack, token3) == 401
    with stack.client() as c:
        assert c.post(
            "/api/token", data={"username": "regul", "password": PASSWORD}
        ).status_code == 401  # fmt: skip
    stack.token("regul", new_password)

    audit = [(r.action, r.target) for r in stack.audit() if r.action.startswith("user.")]
    assert audit == [
        ("user.revoke_tokens", "regul"),
        ("user.disable", "regul"),
        ("user.enable", "regul"),
        ("user.passwd", "regul"),
    ]
    users_rows = [r for r in stack.audit() if r.action.startswith("user.")]
    assert all(r.actor and r.actor.startswith("cli:") for r in users_rows)


def test_scope_changes_what_a_dispatcher_sees_at_once(api_sqlite: ApiStack) -> None:
    stack = api_sqlite
    stack.add_user("regul", departements=("13",))
    stack.add_alert("13")
    stack.add_alert("75")
    token = stack.token("regul")

    def seen() -> set[str | None]:
        with stack.client(token) as c:
            return {a["departement"] for a in c.get("/api/alerts").json()}

    assert seen() == {"13"}
    code, out, err = _cli(stack, "scope", "regul", "--departements", "75")
    assert (code, out.strip()) == (0, "Portée de regul : 75."), err
    assert seen() == {"75"}
    code, _, err = _cli(stack, "scope", "regul")
    assert code == 2 and "--all-departements" in err
    assert _cli(stack, "scope", "regul", "--all-departements")[0] == 0
    assert seen() == {"13", "75"}
    code, _, err = _cli(stack, "scope", "personne", "--all-departements")
    assert code == 2 and err.strip() == "vigie: erreur: USERNAME: compte 'personne' inconnu"


def test_dispatcher_without_departements_is_refused_unless_asked(
    tmp_path: Path,
) -> None:
    env = {"VIGIE_DATABASE_URL": f"sqlite:///{tmp_path / 'v.db'}"}
    runner = CliRunner()
    r = runner.invoke(
        vigie_app, ["users", "add", "bob", "--role", "dispatcher"], env=env,
        input="un mot de passe sûr\n",
    )  # fmt: skip
    assert r.exit_code == 2
    assert "--departements: obligatoire" in r.stderr and "--all-departements" in r.stderr
    r = runner.invoke(
        vigie_app, ["users", "add", "bob", "--role", "dispatcher", "--all-departements"],
        env=env, input="un mot de passe sûr\n",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "portée : national" in r.stdout
    engine = make_engine(env["VIGIE_DATABASE_URL"])
    try:
        with write_scope(engine) as s:
            accounts = list(s.exec(select(Account)))
            assert [(a.username, a.departements) for a in accounts] == [("bob", [])]
            assert users_service.login(
                s, username="bob", password="un mot de passe sûr", ip="1.2.3.4", now=utcnow()
            ).status == "ok"  # fmt: skip
            assert [a.action for a in s.exec(select(AuditRecord))] == ["user.add"]
    finally:
        engine.dispose()


def test_secret_from_stdin_and_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO("premier\nsecond\n")
    assert read_secret("PIN", stdin=stream, prompt=False) == "premier"
    assert read_secret("PIN", stdin=stream, prompt=False) == "second"
    with pytest.raises(SecretInputError, match="rien lu"):
        read_secret("PIN", stdin=stream, prompt=False)
    answers = iter(["abc", "abd"])
    monkeypatch.setattr("getpass.getpass", lambda _prompt: next(answers))
    with pytest.raises(SecretInputError, match="diffèrent"):
        read_secret("Mot de passe", prompt=True)


def test_device_pins_read_from_stdin(tmp_path: Path) -> None:
    env = {"VIGIE_DATABASE_URL": f"sqlite:///{tmp_path / 'v.db'}"}
    args = ["devices", "add", "nurse-9", "--worker", "Inès", "--role", "nurse",
            "--phone", "+33612345678", "--json"]  # fmt: skip
    r = CliRunner().invoke(vigie_app, args, env=env, input="2468\n")
    assert r.exit_code == 2 and "Code de contrainte (--duress-pin) : rien lu" in r.stderr
    r = CliRunner().invoke(vigie_app, args, env=env, input="2468\n1357\n")
    assert r.exit_code == 0, r.stderr
    engine = make_engine(env["VIGIE_DATABASE_URL"])
    try:
        with write_scope(engine) as s:
            found = devices_service.device_and_worker(s, "nurse-9")
            assert found is not None
            assert devices_service.pin_matches("2468", found[1].pin_hash)
            assert devices_service.pin_matches("1357", found[1].duress_pin_hash)
    finally:
        engine.dispose()
