"""Pieces of the simulator that need no broker: geography, noise, scenario files, the CLI."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from device_sim.cli import app
from device_sim.device import BrokerTarget
from device_sim.geo import CommuneIndex, NurseRound, haversine_m, noisy_fix
from device_sim.load import percentile
from device_sim.scenario import Scenario, StepDecl, list_scenarios, parse_duration

BUNDLED = {
    "sos", "silent", "fall", "duress", "session-overdue", "device-offline",
    "broker-outage", "border", "night-pharmacy",
}  # fmt: skip


def test_find_communes(communes: CommuneIndex) -> None:
    assert communes.find("84007").nom == "Avignon"
    assert communes.find("aubagne").code == "13005"
    assert communes.find("Laval (53)").code == "53130"
    with pytest.raises(KeyError, match="ambiguë"):
        communes.find("Laval")
    with pytest.raises(KeyError):
        communes.find("Nulle-Part-sur-Rien")


def test_nearby_is_sorted_within_radius_and_department(communes: CommuneIndex) -> None:
    avignon = communes.find("Avignon")
    near = communes.nearby(avignon, 12_000)
    assert near and all(c.departement == "84" for c in near)
    dists = [haversine_m(avignon.lat, avignon.lon, c.lat, c.lon) for c in near]
    assert dists == sorted(dists) and dists[-1] <= 12_000
    # Across the Durance: Rognonas (13) is close, but only when départements may be mixed.
    assert "13083" not in {c.code for c in near}
    assert "13083" in {c.code for c in communes.nearby(avignon, 12_000, same_departement=False)}


def test_announced_accuracy_is_the_68_percent_radius() -> None:
    rng = random.Random(5)
    at = datetime.now(UTC)
    inside = sum(
        haversine_m(43.3, 5.4, f.lat, f.lon) <= 20.0
        for f in (noisy_fix(rng, 43.3, 5.4, 20.0, "gps", at) for _ in range(4000))
    )
    assert 0.65 <= inside / 4000 <= 0.71


def test_nurse_round_is_plausible(communes: CommuneIndex) -> None:
    start = datetime(2026, 11, 22, 8, tzinfo=UTC)
    rnd = NurseRound(communes, communes.find("Aubagne"), random.Random(1), start, stops=5)
    assert rnd.route[0] == rnd.route[-1] == communes.find("Aubagne")
    assert {c.departement for c in rnd.route} == {"13"}
    prev = rnd.true_position(start)
    for minute in range(1, 8 * 60):
        here = rnd.true_position(start + timedelta(minutes=minute))
        # Never faster than ~65 km/h on the road, i.e. < 1.1 km per minute as the crow flies.
        assert haversine_m(*prev, *here) < 1_100
        prev = here
    driving = [rnd.driving(start + timedelta(minutes=m)) for m in range(0, 8 * 60, 5)]
    assert any(driving) and not all(driving)
    fix = rnd.fix(random.Random(2), start + timedelta(minutes=30))
    assert fix is not None and 5 <= fix.acc_m <= 30 and fix.src == "gps"


def test_bundled_scenarios_load() -> None:
    names = {name for name, _ in list_scenarios()}
    assert names >= BUNDLED
    for name in names:
        sc = Scenario.load(name)
        assert sc.devices and sc.timeline and sc.description


def test_scenario_validation() -> None:
    with pytest.raises(ValidationError, match="do"):
        StepDecl.model_validate({"at": "1s", "device": "x"})
    with pytest.raises(ValidationError, match="action inconnue"):
        StepDecl.model_validate({"do": "explode"})
    with pytest.raises(ValidationError, match="attente inconnue"):
        StepDecl.model_validate({"expect": "alert.exploded"})
    with pytest.raises(ValidationError, match="boîtier inconnu"):
        Scenario.model_validate(
            {"name": "x", "devices": [{"id": "a"}], "timeline": [{"do": "press", "device": "b"}]}
        )
    step = StepDecl.model_validate({"expect": "no alert.sent", "for": "1.5s", "needs": "dispatch"})
    assert step.hold == 1.5 and step.needs == ["dispatch"]


def test_durations_and_percentiles() -> None:
    assert parse_duration("2s") == 2 and parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120 and parse_duration(3) == 3.0
    with pytest.raises(ValueError):
        parse_duration("soon")
    assert percentile([], 50) is None
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99
    assert math.isclose(percentile(values, 100) or 0, 100)


def test_broker_target() -> None:
    assert BrokerTarget.parse("mqtt://10.0.0.2:1884") == BrokerTarget("10.0.0.2", 1884, "5")
    assert BrokerTarget.parse("localhost", "3.1.1").protocol == "3.1.1"
    with pytest.raises(ValueError):
        BrokerTarget.parse("http://x")


def test_cli_lists_scenarios_and_refuses_bad_input() -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["list"])
    assert out.exit_code == 0 and "broker-outage" in out.output
    bad = runner.invoke(app, ["run", "no-such-scenario"])
    assert bad.exit_code == 2 and "introuvable" in bad.output
    bad = runner.invoke(app, ["run", "sos", "--features", "teleportation"])
    assert bad.exit_code == 2
    assert runner.invoke(app, ["load", "--devices", "1"]).exit_code == 2
