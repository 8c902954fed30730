"""The ``vigie`` sub-command groups are imported only when used (``alert_server.lazy_cli``):
check that each one is still reachable through the lazy loader, and that ``vigie --help``
lists them without importing the heavy libraries they need."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from alert_server.cli import VigieGroup, app

# Each lazy group and one of its sub-commands (so the real group, not the stand-in, answered).
GROUPS = {
    "users": "add",
    "referents": "check",
    "geo": "import",
    "sim": "press",
    "purge": None,
    "broker": "init",
}


def test_every_lazy_group_is_checked() -> None:
    assert set(VigieGroup.lazy) == set(GROUPS)


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_lazy_group_is_reachable(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"], prog_name="vigie")
    assert result.exit_code == 0, result.output
    assert f"vigie {name}" in result.output
    sub = GROUPS[name]
    if sub is not None:
        assert sub in result.output
        deeper = CliRunner().invoke(app, [name, sub, "--help"], prog_name="vigie")
        assert deeper.exit_code == 0, deeper.output


def test_help_lists_every_command_without_heavy_imports() -> None:
    code = (
        "import sys\n"
        "from alert_server.cli import app\n"
        "try:\n"
        "    app(['--help'], prog_name='vigie')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('sqlalchemy', 'alembic', 'shapely', 'paho', 'device_sim')\n"
        "               if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    for command in ("server", "demo", "devices", *GROUPS):
        assert f"  {command} " in out, out
    assert "HEAVY=\n" in out, out
