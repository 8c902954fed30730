"""The bundled scenarios against a real Mosquitto and the real server.

The stack declares every feature the server implements (``cancel``, ``dispatch``, ``sessions``,
``locate``) and a responder, so no step may be skipped: a skipped step is a harness bug.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from device_sim.cli import app
from device_sim.geo import CommuneIndex
from device_sim.scenario import Scenario, ScenarioReport, format_report, run_scenario
from tests.device_sim.conftest import MosquittoControl, Stack


def _check(report: ScenarioReport, scenario: Scenario) -> None:
    text = format_report(report)
    assert report.passed, text
    for result in report.steps:
        # Every feature the server has is declared (tests/device_sim/conftest.py): nothing
        # may be skipped.
        assert result.status != "skipped", f"step {result.index} skipped: {result.detail}\n{text}"


@pytest.mark.parametrize(
    "name",
    [
        "sos",
        "silent",
        "fall",
        "duress",
        "border",
        "night-pharmacy",
        "device-offline",
        "session-overdue",
    ],
)
def test_scenario(name: str, shared_stack: Stack, communes: CommuneIndex) -> None:
    scenario = Scenario.load(name)
    report = run_scenario(scenario, shared_stack.run_env(prefix=f"{name}-", index=communes))
    _check(report, scenario)
    assert report.steps and report.counts()["ok"] >= 2


def test_broker_outage_scenario(outage_stack: Stack, communes: CommuneIndex) -> None:
    scenario = Scenario.load("broker-outage")
    env = outage_stack.run_env(
        broker_control=MosquittoControl(outage_stack.broker),
        index=communes,
        # The observer's own connection would die with the broker: not needed here.
        observer_url=None,
    )
    report = run_scenario(scenario, env)
    _check(report, scenario)
    assert report.counts()["skipped"] == 0  # every step ran, including the outage itself


def test_cli_run_against_a_running_server(
    shared_stack: Stack, communes: CommuneIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `vigie sim run` registers its devices with `vigie devices add`, configured like the
    # server it talks to (here through the environment).
    for key, value in shared_stack.env.items():
        if key.startswith("VIGIE_"):
            monkeypatch.setenv(key, value)
    result = CliRunner().invoke(
        app,
        [
            "run", "sos", "--seed", "11",
            "--broker", f"mqtt://127.0.0.1:{shared_stack.broker.port}",
            "--features", "cancel",
            "--observer-url", shared_stack.broker.server_url(),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "RÉUSSI" in result.output and "ÉCHEC" not in result.output


def test_cli_press_prints_the_commands_received(shared_stack: Stack) -> None:
    password = shared_stack.add_device("nurse-press", pin="2468", duress_pin="1357")
    result = CliRunner().invoke(
        app,
        [
            "press", "nurse-press", "--password", password,
            "--broker", f"mqtt://127.0.0.1:{shared_stack.broker.port}",
            "--lat", "43.2965", "--lon", "5.3698", "--cancel-pin", "2468", "--wait", "1.5",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "alert.received" in result.output and "alert.cancelled" in result.output
    (row,) = shared_stack.store.alerts(device_id="nurse-press")
    assert row["state"] == "cancelled" and row["pos_src"] == "gps"
