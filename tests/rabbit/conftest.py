"""RabbitMQ fixtures: a 1-node broker shared by the module's tests (the 3-node cluster is
started by the chaos tests that need it). Nodes are the test's own and always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rabbit.cluster import RabbitCluster, available


@pytest.fixture(scope="module")
def rabbit1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    if not available():
        pytest.fail(
            "rabbitmq-server absent: apt-get install -y rabbitmq-server (.ci/run installs it)"
        )
    cluster = RabbitCluster(tmp_path_factory.mktemp("rabbit1"), size=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def rabbit3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    if not available():
        pytest.fail(
            "rabbitmq-server absent: apt-get install -y rabbitmq-server (.ci/run installs it)"
        )
    cluster = RabbitCluster(tmp_path_factory.mktemp("rabbit3"), size=3).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
