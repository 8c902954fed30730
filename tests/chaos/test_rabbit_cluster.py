"""Past one machine: a real 3-node RabbitMQ cluster (the test's own nodes, MQTT plugin, one
quorum queue), three ``vigie server`` processes with ``VIGIE_INGEST=amqp`` on one PostgreSQL,
a simulated fleet speaking MQTT 3.1.1 through a TCP front (the load balancer of production),
and, while alerts are in flight:

1. SIGKILL of the server holding the queue (its single active consumer): the broker requeues
   what it held unacknowledged and hands the queue to a survivor;
2. SIGKILL of a broker node that is not the queue's leader (devices and servers on it move to
   the other nodes); it is restarted on its data and rejoins;
3. SIGKILL of the quorum queue's leader node (a new leader is elected among the two others).

Then the same account as every chaos test (``harness.check``): every alert pressed stored
exactly once, every escalation step sent exactly once, figures printed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from alert_server.devices.rabbitmq_accounts import RabbitAccounts
from device_sim.device import BrokerTarget
from device_sim.geo import CommuneIndex
from device_sim.load import LoadConfig, LoadReport, LoadRun, load_passwords
from tests.chaos.harness import DIRECTORY, ChaosStack, Fault, FaultLog, check, geo_subset
from tests.fakes.fake_twilio import FakeTwilio
from tests.rabbit.cluster import RabbitCluster, RabbitNode
from tests.rabbit.conftest import rabbit3  # noqa: F401  (the 3-node cluster)
from tests.rabbit.proxy import TcpFront
from tests.rabbit.support import amqp_env
from tests.support import ServerProcess, wait_until
from vigie.brokers.mosquitto import LocalMosquitto, free_port

QUEUE = "vigie.uplink"


def fleet(seed: int) -> LoadConfig:
    """60 devices in Bouches-du-Rhône and Vaucluse, heartbeats every 2 s (QoS 1, through the
    quorum queue too), 1.5 alerts/s for 60 s: the three faults fall inside the pressing."""
    return LoadConfig(
        devices=60,
        hb_interval_s=2.0,
        hb_qos=1,
        alert_rate=1.5,
        duration_s=60.0,
        drain_s=90.0,
        departements=["13", "84"],
        id_prefix=f"rq{seed}-",
        seed=seed,
        progress_interval_s=5.0,
    )


def _healthy(server: ServerProcess) -> Callable[[], bool]:
    return lambda: server.health()[0] == 200


class RabbitStack(ChaosStack):
    """``ChaosStack`` whose servers consume the cluster's quorum queue."""

    cluster: RabbitCluster

    def server_env(self, index: int, port: int, **extra: str) -> dict[str, str]:
        directory = self.workdir / "referents.yaml"
        if not directory.exists():
            directory.write_text(DIRECTORY, encoding="utf-8")
        env = amqp_env(
            self.cluster,
            self.db_url,
            VIGIE_GEO_DIR=str(geo_subset(self.geo_dir, self.workdir / "geo")),
            VIGIE_REFERENTS_FILE=str(directory),
            VIGIE_TELEPHONY="twilio",
            VIGIE_TWILIO_ACCOUNT_SID=self.twilio.account_sid,
            VIGIE_TWILIO_AUTH_TOKEN=self.twilio.auth_token,
            VIGIE_TWILIO_FROM=self.twilio.from_number,
            VIGIE_TWILIO_API_BASE=self.twilio.url,
            VIGIE_PUBLIC_URL=f"http://127.0.0.1:{port}",
            VIGIE_MQTT_CLIENT_ID=f"vigie-server-{index}",
            VIGIE_PRESENCE_FLUSH_S="1",
            VIGIE_DISPATCH_LEASE_S="20",
        )
        env.update(extra)
        return env

    def start_servers(self, n: int = 1, **extra: str) -> list[ServerProcess]:
        """One after the other, each with a readiness deadline wider still than
        ``ServerProcess``'s (a cluster of three Erlang nodes shares the machine)."""
        for i in range(n):
            port = free_port()
            server = ServerProcess(
                self.server_env(i, port, **extra), self.workdir / f"server-{i}.log", port=port
            )
            self.servers.append(server)
            server.start(wait_healthy=False)
            wait_until(_healthy(server), 600, f"server-{i} /healthz 200")
        self.twilio.webhook_base = self.servers[0].url
        return self.servers


@pytest.fixture
def rabbit_stack(
    tmp_path: Path,
    rabbit3: RabbitCluster,  # noqa: F811
    twilio: FakeTwilio,
    geo_dir: Path,
    pg_database: str,
) -> Iterator[RabbitStack]:
    # The harness's type wants a Mosquitto; nothing here uses it (servers speak AMQP).
    placeholder = LocalMosquitto(tmp_path / "unused-mosquitto", port=free_port())
    stack = RabbitStack(
        workdir=tmp_path, broker=placeholder, db_url=pg_database, twilio=twilio, geo_dir=geo_dir
    )
    stack.cluster = rabbit3
    try:
        yield stack
    finally:
        stack.stop()


def active_consumer(cluster: RabbitCluster) -> str | None:
    """The client id of the server holding the queue (consumer tag ``{client_id}-{n}``)."""
    info = cluster.api("GET", f"/queues/%2F/{QUEUE}")
    tag = info.get("single_active_consumer_tag")
    if not tag:
        active = [
            c.get("consumer_tag")
            for c in info.get("consumer_details", [])
            if c.get("activity_status") in ("single_active", "up")
        ]
        tag = active[0] if len(active) == 1 else None
    return str(tag).rsplit("-", 1)[0] if tag else None


@pytest.mark.postgres
# Not in the default run (pyproject addopts deselect it): this test has not yet passed reliably
# on the shared 2-core CI machine within the suite's time. `pytest -m rabbit_cluster` runs it.
@pytest.mark.rabbit_cluster
# A 3-node cluster start, three servers, 60 s of pressing, a node restart and the drain: longer
# than the suite's default time-out on a busy machine.
@pytest.mark.timeout(900)
def test_rabbitmq_cluster_node_leader_and_server_killed(
    rabbit_stack: RabbitStack, communes: CommuneIndex
) -> None:
    stack, cluster = rabbit_stack, rabbit_stack.cluster
    servers = stack.start_servers(3)
    cfg = fleet(19)
    passwords = load_passwords(cfg)
    accounts = RabbitAccounts(cluster.api_url())
    try:
        for device_id, password in passwords.items():
            accounts.add_device(device_id, password)
    finally:
        accounts.close()
    front = TcpFront([n.mqtt_port for n in cluster.nodes]).start()
    run = LoadRun(cfg, BrokerTarget(port=front.port, protocol="3.1.1"), passwords, index=communes)
    log = FaultLog()
    figures: dict[str, object] = {}
    killed: dict[str, RabbitNode] = {}

    def kill_active_server() -> None:
        holder = active_consumer(cluster)
        victim = next(s for s in servers if s.env["VIGIE_MQTT_CLIENT_ID"] == holder)
        figures["server killed"] = holder
        t = time.monotonic()
        victim.kill()
        wait_until(lambda: active_consumer(cluster) not in (None, holder), 60, "queue handed over")
        elapsed = time.monotonic() - t
        figures["queue handed to"] = f"{active_consumer(cluster)} in {elapsed:.2f} s"

    def kill_plain_node() -> None:
        leader = cluster.queue_leader(QUEUE)
        node = next(n for n in cluster.nodes if n is not leader)
        killed["node"] = node
        figures["node killed"] = node.name
        node.kill()

    def restart_node() -> None:
        t = time.monotonic()
        cluster.restart(killed["node"])
        figures["node back in"] = f"{time.monotonic() - t:.1f} s"

    def kill_leader() -> None:
        leader = cluster.queue_leader(QUEUE)
        figures["leader killed"] = leader.name
        t = time.monotonic()
        leader.kill()
        killed["leader"] = leader

        def elected() -> bool:
            try:
                return cluster.queue_leader(QUEUE) is not leader
            except (RuntimeError, StopIteration):
                return False

        wait_until(elected, 60, "new quorum leader")
        elapsed = time.monotonic() - t
        figures["new leader"] = f"{cluster.queue_leader(QUEUE).name} in {elapsed:.2f} s"

    faults = [
        Fault(4.0, "SIGKILL of the server holding the queue", kill_active_server),
        Fault(10.0, "SIGKILL of a broker node (not the leader)", kill_plain_node),
        Fault(12.0, "restart of that node", restart_node),
        Fault(16.0, "SIGKILL of the quorum leader's node", kill_leader),
    ]

    def fire() -> None:
        while run.connect_s is None and not run._stop.is_set():
            time.sleep(0.05)
        t0 = time.monotonic()
        for fault in faults:
            time.sleep(max(0.0, t0 + fault.at_s - time.monotonic()))
            try:
                fault.action()
                log.entries.append((time.monotonic() - t0, fault.name))
            except Exception as exc:
                log.errors.append(f"{fault.name}: {type(exc).__name__}: {exc}")

    chaos = threading.Thread(target=fire, name="chaos", daemon=True)
    chaos.start()
    try:
        report: LoadReport = run.run()
        chaos.join(240)
    finally:
        front.stop()
    pressed = [r.alert_id for _, r in run._records()]
    assert not log.errors, log.errors
    live = [s for s in servers if s.proc is not None and s.proc.poll() is None]
    assert len(live) == 2, "exactly the killed server is gone"
    title = "RabbitMQ 3 nodes: server, node and quorum leader killed (postgresql)"
    acc = check(title, stack, report, pressed, log)
    print("; ".join(f"{k}: {v}" for k, v in figures.items()))
    assert acc.stored == acc.pressed
    # The survivors hold the queue, and the leader's node is the only one down.
    assert active_consumer(cluster) in {s.env["VIGIE_MQTT_CLIENT_ID"] for s in live}
