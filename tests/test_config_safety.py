"""``vigie server`` refuses an unsafe configuration (operations.md 1.1): exit status 2, one
French line naming what is wrong, nothing started or written. Run as a real process with a
controlled environment, as an operator would."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from alert_server.app import create_app
from alert_server.safety import UnsafeConfiguration, problems
from alert_server.settings import Settings
from tests.support import REPO

GOOD_KEY = secrets.token_hex(32)
TWILIO = {
    "VIGIE_TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "VIGIE_TWILIO_AUTH_TOKEN": "a-real-looking-auth-token",
    "VIGIE_TWILIO_FROM": "+33700000000",
}


def run_server(tmp_path: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
    env.update(VIGIE_DATABASE_URL=f"sqlite:///{tmp_path / 'vigie.db'}", **env_vars)
    return subprocess.run(
        [sys.executable, "-m", "alert_server.cli", "server", "--port", "9"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def assert_refused(out: subprocess.CompletedProcess[str], tmp_path: Path, *expected: str) -> str:
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    line = lines[0]
    assert line.startswith("vigie: erreur: Configuration dangereuse : "), line
    for text in expected:
        assert text in line, line
    # Nothing half-done: not even the database was created.
    assert not (tmp_path / "vigie.db").exists()
    return line


@pytest.mark.parametrize("missing", sorted(TWILIO))
def test_twilio_chosen_with_a_setting_missing_is_refused(tmp_path: Path, missing: str) -> None:
    env = {k: v for k, v in TWILIO.items() if k != missing}
    out = run_server(tmp_path, VIGIE_TELEPHONY="twilio", VIGIE_SECRET_KEY=GOOD_KEY, **env)
    line = assert_refused(out, tmp_path, f"{missing} manquant alors que VIGIE_TELEPHONY=twilio")
    for present in set(TWILIO) - {missing}:
        assert present not in line


def test_twilio_is_the_default_of_vigie_server(tmp_path: Path) -> None:
    # The old silent fall-back: SID and token set, the number forgotten, VIGIE_TELEPHONY unset.
    env = {k: v for k, v in TWILIO.items() if k != "VIGIE_TWILIO_FROM"}
    out = run_server(tmp_path, VIGIE_SECRET_KEY=GOOD_KEY, **env)
    assert_refused(out, tmp_path, "VIGIE_TWILIO_FROM manquant alors que VIGIE_TELEPHONY=twilio")


def test_nothing_configured_names_every_missing_setting_on_one_line(tmp_path: Path) -> None:
    out = run_server(tmp_path)
    assert_refused(
        out,
        tmp_path,
        "VIGIE_TWILIO_ACCOUNT_SID, VIGIE_TWILIO_AUTH_TOKEN et VIGIE_TWILIO_FROM manquants",
        "VIGIE_SECRET_KEY manquant",
    )


def test_invalid_telephony_is_refused(tmp_path: Path) -> None:
    out = run_server(tmp_path, VIGIE_TELEPHONY="sms", VIGIE_SECRET_KEY=GOOD_KEY, **TWILIO)
    assert_refused(out, tmp_path, "VIGIE_TELEPHONY='sms' invalide", "twilio, simulated")


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        (None, "VIGIE_SECRET_KEY manquant"),
        ("change-me-in-production", "VIGIE_SECRET_KEY est une valeur d'exemple"),
        ("0f3a9c27e4b1d856", "VIGIE_SECRET_KEY trop court (16 caractères, 32 au moins"),
    ],
)
def test_unset_placeholder_or_short_secret_key_is_refused(
    tmp_path: Path, secret: str | None, says: str
) -> None:
    env = {} if secret is None else {"VIGIE_SECRET_KEY": secret}
    out = run_server(tmp_path, VIGIE_TELEPHONY="simulated", **env)
    line = assert_refused(out, tmp_path, says)
    if secret:
        assert secret not in line  # the message never echoes a secret


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ("", "VIGIE_SECRET_KEY manquant"),
        ("   ", "VIGIE_SECRET_KEY manquant"),
        ("changeme", "VIGIE_SECRET_KEY est une valeur d'exemple"),
        ("secret", "VIGIE_SECRET_KEY est une valeur d'exemple"),
        ("CHANGE_ME_" + "x7" * 20, "VIGIE_SECRET_KEY est une valeur d'exemple"),
        ("<your-secret-here>" + "0123456789" * 3, "VIGIE_SECRET_KEY est une valeur d'exemple"),
        ("k" * 31, "VIGIE_SECRET_KEY trop court (31 caractères"),
        ("ab" * 20, "VIGIE_SECRET_KEY n'est pas aléatoire"),
    ],
)
def test_placeholder_secret_keys(secret: str, says: str) -> None:
    found = problems(Settings(telephony="simulated", secret_key=SecretStr(secret)))
    assert len(found) == 1 and found[0].startswith(says), found


def test_server_client_id_outside_the_reserved_names_is_refused(tmp_path: Path) -> None:
    out = run_server(
        tmp_path,
        VIGIE_TELEPHONY="simulated",
        VIGIE_SECRET_KEY=GOOD_KEY,
        VIGIE_MQTT_CLIENT_ID="nurse-0042",
    )
    assert_refused(out, tmp_path, "VIGIE_MQTT_CLIENT_ID='nurse-0042'")


def test_safe_settings_have_no_problem() -> None:
    assert problems(Settings(telephony="simulated", secret_key=SecretStr(GOOD_KEY))) == []
    assert problems(Settings(secret_key=SecretStr(GOOD_KEY), **_twilio_fields())) == []
    assert (
        problems(
            Settings(
                telephony="simulated",
                secret_key=SecretStr(GOOD_KEY),
                mqtt_client_id="vigie-server-2",
            )
        )
        == []
    )


def test_create_app_refuses_too() -> None:
    """No other way of building a server gets around the check (no silent fall-back)."""
    with pytest.raises(UnsafeConfiguration, match="VIGIE_TWILIO_FROM manquant"):
        create_app(
            Settings(
                database_url="sqlite://",
                secret_key=SecretStr(GOOD_KEY),
                twilio_account_sid="AC" + "0" * 32,
                twilio_auth_token=SecretStr("token"),
            )
        )


def _twilio_fields() -> dict[str, object]:
    return {
        "twilio_account_sid": TWILIO["VIGIE_TWILIO_ACCOUNT_SID"],
        "twilio_auth_token": SecretStr(TWILIO["VIGIE_TWILIO_AUTH_TOKEN"]),
        "twilio_from": TWILIO["VIGIE_TWILIO_FROM"],
    }
