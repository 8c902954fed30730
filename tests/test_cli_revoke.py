"""``vigie devices revoke`` never says "révoqué" alone when the broker was not told: exit 1
and a French line saying what to do. (The successful revoke against a real Mosquitto, with the
old password refused afterwards, is tests/integration/test_acl.py.)"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from alert_server.cli import app
from vigie.brokers import files as broker_files


def _add(env: dict[str, str]) -> None:
    args = ["devices", "add", "nurse-5", "--worker", "Inès", "--role", "nurse",
            "--phone", "+33612345678", "--json"]  # fmt: skip
    r = CliRunner().invoke(app, args, env=env, input="2468\n1357\n")
    assert r.exit_code == 0, r.stderr


def test_revoke_fails_when_the_broker_cannot_be_reloaded(tmp_path: Path) -> None:
    env = {
        "VIGIE_DATABASE_URL": f"sqlite:///{tmp_path / 'v.db'}",
        "VIGIE_BROKER_PASSWD_FILE": str(tmp_path / "passwd"),
        "VIGIE_BROKER_ACL_FILE": str(tmp_path / "acl"),
        "VIGIE_BROKER_PID_FILE": str(tmp_path / "absent.pid"),
    }
    _add(env)
    r = CliRunner().invoke(app, ["devices", "revoke", "nurse-5"], env=env)
    assert r.exit_code == 1
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("vigie: erreur: boîtier nurse-5 révoqué dans la base, mais le broker")
    assert "systemctl reload mosquitto" in line and "vigie devices revoke nurse-5" in line
    assert "révoqué ;" not in r.stdout
    # The files were still written: once reloaded, the broker refuses it.
    assert "nurse-5" in broker_files.read_revoked(tmp_path / "acl")
    assert "nurse-5" not in (tmp_path / "passwd").read_text()
    # Idempotent: running it again (after fixing the broker) is the documented next step.
    assert CliRunner().invoke(app, ["devices", "revoke", "nurse-5"], env=env).exit_code == 1


def test_revoke_fails_without_broker_files(tmp_path: Path) -> None:
    env = {"VIGIE_DATABASE_URL": f"sqlite:///{tmp_path / 'v.db'}"}
    _add(env)
    r = CliRunner().invoke(app, ["devices", "revoke", "nurse-5"], env=env)
    assert r.exit_code == 1
    assert "VIGIE_BROKER_PASSWD_FILE" in r.stderr and "mosquitto_passwd -D" in r.stderr
