"""Login throttling: a delay that grows, never a lock (a dispatcher under attack and a room
behind one NAT address still log in), password checks bounded under concurrency, and no
proxy trusted unless configured."""

from __future__ import annotations

import concurrent.futures
from datetime import datetime, timedelta

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from alert_server.db import write_scope
from alert_server.serving import uvicorn_options
from alert_server.settings import Settings
from alert_server.users import service, throttle
from alert_server.users.schemas import NewAccount
from alert_server.users.throttle import GATE, POLICY, Policy, delay_s
from tests.api.conftest import PASSWORD, ApiStack
from vigie.timeutil import utcnow

RIGHT = "le bon mot de passe"


def _add(engine: Engine, username: str) -> None:
    with write_scope(engine) as s:
        service.add_account(s, new=NewAccount(username, RIGHT, "dispatcher", ("13",)), now=utcnow())


def _login(
    engine: Engine, username: str, password: str, ip: str, now: datetime
) -> service.LoginResult:
    with write_scope(engine) as s:
        return service.login(s, username=username, password=password, ip=ip, now=now)


def test_an_attacked_account_waits_a_bounded_delay_then_logs_in(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shipped policy's shape, fewer free guesses (each costs a deliberately slow hash).
    monkeypatch.setattr(throttle, "POLICY", Policy(account_free=2))
    _add(engine, "regul")
    t = datetime(2026, 12, 2, 3, 0, tzinfo=utcnow().tzinfo)
    # 6 wrong guesses from two addresses, each made as soon as allowed.
    waits = []
    for i in range(6):
        r = _login(engine, "regul", "mauvais mot de passe", f"203.0.113.{i % 2}", t)
        if r.status == "throttled":
            waits.append(r.retry_after_s)
            t += timedelta(seconds=r.retry_after_s)
            r = _login(engine, "regul", "mauvais mot de passe", f"203.0.113.{i % 2}", t)
        assert r.status == "bad"
    assert waits and waits == sorted(waits)  # the delay grows
    # The dispatcher, from their own address: told to wait, at most the cap, never locked.
    r = _login(engine, "regul", RIGHT, "198.51.100.7", t)
    assert r.status == "throttled" and 0 < r.retry_after_s <= POLICY.account_cap_s
    # Hammering while throttled does not extend the wait.
    for _ in range(20):
        assert _login(engine, "regul", RIGHT, "198.51.100.9", t).status == "throttled"
    t += timedelta(seconds=POLICY.account_cap_s)
    assert _login(engine, "regul", RIGHT, "198.51.100.7", t).status == "ok"


def test_a_room_behind_one_address_is_never_locked_out(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same shape as the shipped policy, with fewer free typos (each costs a slow hash).
    monkeypatch.setattr(throttle, "POLICY", Policy(ip_free=6, account_free=3))
    policy = throttle.POLICY
    for name in ("poste1", "poste2", "poste3"):
        _add(engine, name)
    t = datetime(2026, 12, 2, 8, 0, tzinfo=utcnow().tzinfo)
    nat = "192.0.2.10"
    # Many typos from the room's one address, spread over three accounts.
    typos = 0
    while typos < policy.ip_free + 3:
        r = _login(engine, f"poste{typos % 3 + 1}", "faute de frappe!", nat, t)
        if r.status == "throttled":
            assert r.retry_after_s <= policy.account_cap_s
            t += timedelta(seconds=r.retry_after_s)
            continue
        typos += 1
    # Whoever types their password right next waits no more than the per-address cap.
    r = _login(engine, "poste1", RIGHT, nat, t)
    if r.status == "throttled":
        assert r.retry_after_s <= policy.account_cap_s
        t += timedelta(seconds=r.retry_after_s)
        r = _login(engine, "poste1", RIGHT, nat, t)
    assert r.status == "ok"
    # A few typos in a row from the room do not delay anyone.
    t += policy.window
    for _ in range(policy.account_free - 1):
        assert _login(engine, "poste2", "faute de frappe!", nat, t).status == "bad"
    assert _login(engine, "poste3", RIGHT, nat, t).status == "ok"


def test_delay_grows_and_is_capped() -> None:
    assert [delay_s(n, free=5, cap_s=60.0, base_s=5.0) for n in (0, 4, 5, 6, 7, 8, 9, 500)] == [
        0, 0, 5, 10, 20, 40, 60, 60
    ]  # fmt: skip


def test_concurrent_guesses_get_bounded_password_checks(api_sqlite: ApiStack) -> None:
    api_sqlite.add_user("regul", departements=("13",))
    before = GATE.checks_done

    def attempt(_: int) -> int:
        with httpx.Client(base_url=api_sqlite.url, timeout=120) as c:
            r = c.post("/api/token", data={"username": "regul", "password": "pas le bon du tout"})
            return r.status_code

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        codes = list(pool.map(attempt, range(24)))
    checks = GATE.checks_done - before
    assert set(codes) <= {401, 429} and 429 in codes
    assert 1 <= checks <= POLICY.account_free, checks
    # And the right password, once the delay is over, still works (not a lock).
    with api_sqlite.client() as c:
        r = c.post("/api/token", data={"username": "regul", "password": PASSWORD})
    assert r.status_code in (200, 429)
    if r.status_code == 429:
        assert int(r.headers["retry-after"]) <= POLICY.account_cap_s


def test_no_proxy_is_trusted_unless_configured() -> None:
    def loaded(**settings: str) -> object:
        config = uvicorn.Config(
            lambda *_: None,
            **uvicorn_options(Settings(**settings)),  # type: ignore[arg-type]
        )
        config.load()
        return config.loaded_app

    assert not isinstance(loaded(), ProxyHeadersMiddleware)
    app = loaded(trusted_proxies="10.0.0.5")
    assert isinstance(app, ProxyHeadersMiddleware)
    assert app.trusted_hosts.always_trust is False
    assert "10.0.0.5" in app.trusted_hosts
