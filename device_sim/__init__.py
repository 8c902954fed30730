"""Simulated alert devices, scenarios and the load generator (``vigie sim``).

Public API:
- ``device_sim.cli.app``: the ``vigie sim`` Typer app (run, load, press, list).
- ``device_sim.device.SimDevice`` on a ``device_sim.reactor.Reactor`` shard.
- ``device_sim.scenario.run_scenario`` / ``ScenarioRunner`` with a ``RunEnv``.
- ``device_sim.load.LoadRun`` / ``run_load`` with ``LoadConfig``.
- ``device_sim.hooks``: ``AlertStore``, ``Responder``, ``BrokerControl``,
  ``FirstNotificationSource`` (and their HTTP forms).
"""
