"""``vigie_sqlite_memory_bytes``: the memory SQLite holds in the server's process.

Each pooled SQLite connection keeps up to 2 MiB of pages, filled as the database grows; read
beside the process's memory, the gauge tells SQLite's share of a growth. It must read the very
library the ``sqlite3`` module uses (a second copy of SQLite loaded beside it would always say
0).
"""

from __future__ import annotations

import sqlite3

from alert_server.metrics import Metrics


def _gauge(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("vigie_sqlite_memory_bytes")
    assert value is not None, "vigie_sqlite_memory_bytes is not exposed"
    return value


def test_the_gauge_follows_the_page_cache_of_a_connection() -> None:
    metrics = Metrics()
    before = _gauge(metrics)
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t (x TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 100,)] * 50_000)
        filled = _gauge(metrics)
        # 50,000 rows of 100 bytes: about 6 MB of pages, all in this connection's cache. Far
        # more than another connection of this process (a cache of at most 2 MiB) could give
        # back or take meanwhile.
        assert filled - before > 4_000_000, (before, filled)
    finally:
        conn.close()
    assert _gauge(metrics) < filled - 4_000_000, "closing the connection gave nothing back"
