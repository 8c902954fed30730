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
from pydantic import SecretStr, ValidationError

from alert_server.app import create_app, dispatch_config
from alert_server.safety import UnsafeConfiguration, problems
from alert_server.settings import Settings, setting_errors
from dispatch.config import DispatchConfig
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


# --- Dispatch's knobs as settings (issue #12's leftover) ------------------------------------


DISPATCH_SETTINGS = (
    "VIGIE_DISPATCH_LOW_SEND_WORKERS",
    "VIGIE_SMS_ACK_MAX_WRONG",
    "VIGIE_SMS_ACK_LOCK_WINDOW_S",
)


def test_dispatch_settings_reach_the_dispatcher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIE_DISPATCH_LOW_SEND_WORKERS", "2")
    monkeypatch.setenv("VIGIE_SMS_ACK_MAX_WRONG", "3")
    monkeypatch.setenv("VIGIE_SMS_ACK_LOCK_WINDOW_S", "1800")
    config = dispatch_config(Settings(telephony="simulated", secret_key=SecretStr(GOOD_KEY)))
    assert (config.low_send_workers, config.sms_ack_max_wrong, config.sms_ack_lock_window_s) == (
        2,
        3,
        1800.0,
    )
    # Unset: dispatch's own defaults, unchanged.
    for name in DISPATCH_SETTINGS:
        monkeypatch.delenv(name)
    config = dispatch_config(Settings(telephony="simulated", secret_key=SecretStr(GOOD_KEY)))
    default = DispatchConfig()
    assert (config.low_send_workers, config.sms_ack_max_wrong, config.sms_ack_lock_window_s) == (
        default.low_send_workers,
        default.sms_ack_max_wrong,
        default.sms_ack_lock_window_s,
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        # No worker at all: reminders, "taken by" and stand-downs would never go out.
        ("VIGIE_DISPATCH_LOW_SEND_WORKERS", "0", "doit valoir au moins 1"),
        # More than the urgent pool: more provider requests and connections than alerts get.
        ("VIGIE_DISPATCH_LOW_SEND_WORKERS", "9", "doit valoir au plus 8"),
        ("VIGIE_DISPATCH_LOW_SEND_WORKERS", "deux", "doit être un nombre entier"),
        # No attempt at all would refuse the first typo.
        ("VIGIE_SMS_ACK_MAX_WRONG", "0", "doit valoir au moins 1"),
        ("VIGIE_SMS_ACK_MAX_WRONG", "21", "doit valoir au plus 20"),
        # A window of seconds would be no limit at all.
        ("VIGIE_SMS_ACK_LOCK_WINDOW_S", "30", "doit valoir au moins 60"),
        ("VIGIE_SMS_ACK_LOCK_WINDOW_S", "1e9", "doit valoir au plus 86400"),
    ],
)
def test_dispatch_settings_out_of_bounds_are_named_in_french(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as exc:
        Settings()
    assert setting_errors(exc.value) == [f"{name}={value!r} : {says}"]


def test_low_workers_never_exceed_the_urgent_pool() -> None:
    urgent = DispatchConfig().send_workers
    assert Settings(dispatch_low_send_workers=urgent).dispatch_low_send_workers == urgent
    with pytest.raises(ValidationError):
        Settings(dispatch_low_send_workers=urgent + 1)


def test_vigie_server_names_each_bad_dispatch_setting_and_starts_nothing(tmp_path: Path) -> None:
    out = run_server(
        tmp_path,
        VIGIE_TELEPHONY="simulated",
        VIGIE_SECRET_KEY=GOOD_KEY,
        VIGIE_DISPATCH_LOW_SEND_WORKERS="0",
        VIGIE_SMS_ACK_LOCK_WINDOW_S="dix",
    )
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("vigie: erreur: réglages: "), line
    assert "VIGIE_DISPATCH_LOW_SEND_WORKERS='0' : doit valoir au moins 1" in line
    assert "VIGIE_SMS_ACK_LOCK_WINDOW_S='dix' : doit être un nombre" in line
    assert not (tmp_path / "vigie.db").exists()


@pytest.mark.parametrize(
    ("max_wrong", "window_s", "refused"),
    [
        (5, 900.0, False),  # the default: 20 wrong codes an hour
        (10, 1800.0, False),  # the same rate over a longer window
        (1, 60.0, True),  # 60 an hour
        (6, 900.0, True),  # 24 an hour
        (3, 3600.0, False),  # tighter
    ],
)
def test_sms_code_attempts_can_be_tightened_never_loosened(
    max_wrong: int, window_s: float, refused: bool
) -> None:
    found = problems(
        Settings(
            telephony="simulated",
            secret_key=SecretStr(GOOD_KEY),
            sms_ack_max_wrong=max_wrong,
            sms_ack_lock_window_s=window_s,
        )
    )
    if refused:
        (problem,) = found
        assert problem.startswith(
            f"VIGIE_SMS_ACK_MAX_WRONG={max_wrong} en VIGIE_SMS_ACK_LOCK_WINDOW_S={window_s:g} "
        ), problem
        assert "au plus 20" in problem
    else:
        assert found == []


def test_vigie_server_refuses_a_looser_sms_code_limit(tmp_path: Path) -> None:
    out = run_server(
        tmp_path,
        VIGIE_TELEPHONY="simulated",
        VIGIE_SECRET_KEY=GOOD_KEY,
        VIGIE_SMS_ACK_MAX_WRONG="20",
    )
    assert_refused(
        out,
        tmp_path,
        "VIGIE_SMS_ACK_MAX_WRONG=20 en VIGIE_SMS_ACK_LOCK_WINDOW_S=900 laisse essayer 80 codes",
    )
