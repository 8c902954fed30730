"""Three servers sharing one PostgreSQL and one Mosquitto (shared subscription ``$share/vigie``),
one of them SIGKILLed mid-run and never restarted: the two survivors carry on alone.

Every alert pressed is stored exactly once and every escalation step sent exactly once
(``harness.check``); and the work was really spread: each server stored a share of the alerts
(``vigie_alerts_stored_total``, the killed one's read just before the kill) and at least two
servers claimed the escalation steps that were sent (``dispatch_notification.claimed_by``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy import select

from alert_server.db import make_engine
from device_sim.geo import CommuneIndex
from device_sim.load import LoadConfig
from dispatch.models import KIND_ALERT, SENT, Notification
from tests.chaos.harness import ChaosStack, Fault, check, run_load_with_faults
from tests.support import ServerProcess

STORED = "vigie_alerts_stored_total"
# Alerts the killed server's counter may be off by: one stored between the last reading and the
# SIGKILL (under-counted), or counted inside a transaction the kill then lost and stored again
# by a survivor (over-counted). Each window is a few milliseconds wide at ~4 alerts/s.
KILL_SLACK = 2


def fleet(seed: int) -> LoadConfig:
    """90 devices in Bouches-du-Rhône and Vaucluse, heartbeats every 2 s, ~4 alerts/s for 10 s."""
    return LoadConfig(
        devices=90,
        hb_interval_s=2.0,
        alert_rate=4.0,
        duration_s=10.0,
        drain_s=90.0,
        departements=["13", "84"],
        id_prefix=f"trio{seed}-",
        seed=seed,
        progress_interval_s=1.0,
    )


def _sent_by_claimer(db_url: str) -> Counter[str]:
    """Sent alert steps per ``claimed_by`` (the last claimer: a takeover overwrites it)."""
    n = Notification.__table__  # type: ignore[attr-defined]
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(n.c.claimed_by).where(n.c.kind == KIND_ALERT, n.c.status == SENT)
            ).all()
    finally:
        engine.dispose()
    return Counter(str(row[0]) for row in rows)


def _pid_of(claimer: str) -> int | None:
    """``claimed_by`` is ``{hostname}-{pid}-{random}`` (dispatch.engine._default_server_id)."""
    parts = claimer.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _alive(s: ServerProcess) -> bool:
    return s.proc is not None and s.proc.poll() is None


def kill_and_read(victim: ServerProcess, at_kill: dict[str, float]) -> None:
    """Read the victim's counter, then SIGKILL it wherever it is (ingest mid-batch, a step
    mid-send: that row is taken over by a survivor when its lease expires, after asking the
    provider whether it had already accepted it)."""
    at_kill["stored"] = victim.metric(STORED)  # the last reading: it dies with the process
    victim.kill()


@pytest.mark.postgres
def test_three_servers_one_killed_for_good(
    new_stack: Callable[..., ChaosStack], communes: CommuneIndex, pg_database: str
) -> None:
    stack = new_stack(pg_database, servers=3, VIGIE_MQTT_SHARED_GROUP="vigie")
    servers = stack.servers
    # Not server 0: the fake Twilio posts its status callbacks there.
    victim = servers[1]
    survivors = [s for s in servers if s is not victim]
    pids = {s.proc.pid: i for i, s in enumerate(servers) if s.proc is not None}
    assert len(pids) == 3
    at_kill: dict[str, float] = {}

    # Mosquitto keeps the dead server in the round-robin (its session outlives it: one day by
    # default, docs/scale-out.md, mosquitto#2662) and parks a third of what follows there. The
    # survivor elected by presence (rescue.py) takes that session over and drains it, so parked
    # alerts get through in about a second instead of at the device's re-send (5 s, then 10 s);
    # tests/integration/test_session_rescue.py proves it with devices that never re-send.
    kill = Fault(4.0, "SIGKILL server-1 (never restarted)", lambda: kill_and_read(victim, at_kill))
    faults = [kill]
    report, pressed, log = run_load_with_faults(stack, fleet(11), faults, communes)
    title = "three servers, one SIGKILLed for good (postgresql)"
    acc = check(title, stack, report, pressed, log)

    assert not _alive(victim), "server-1 is still running"
    for s in survivors:
        assert _alive(s), f"{s.log_path.name}: a survivor died"

    # Alerts: each server stored a share; together, the alerts stored.
    stored = [at_kill["stored"] if s is victim else s.metric(STORED) for s in servers]
    total = sum(stored)
    by_claimer = _sent_by_claimer(pg_database)
    sent_by_server: Counter[str] = Counter()
    for claimer, count in by_claimer.items():
        pid = _pid_of(claimer)
        sent_by_server[f"server-{pids[pid]}" if pid in pids else claimer] += count

    shares = ", ".join(
        f"server-{i} {v:.0f}" + (" (read at the kill)" if servers[i] is victim else "")
        for i, v in enumerate(stored)
    )
    print(
        f"alerts stored per server ({STORED}): {shares}; "
        f"sum {total:.0f} vs stored {acc.stored} (difference {total - acc.stored:+.0f})"
    )
    steps = ", ".join(f"{k} {v}" for k, v in sorted(sent_by_server.items()))
    print(
        f"alert steps sent per claimer (dispatch_notification.claimed_by): {steps}; "
        f"{len(by_claimer)} distinct, {sum(by_claimer.values())} sent"
    )

    assert acc.stored == acc.pressed
    assert all(v > 0 for v in stored), f"a server stored no alert: {stored}"
    assert abs(total - acc.stored) <= KILL_SLACK, (
        f"per-server counts add up to {total:.0f}, {acc.stored} alerts stored: {stored}"
    )
    assert len(by_claimer) >= 2, f"escalation steps not spread: {dict(by_claimer)}"
    assert sum(by_claimer.values()) == acc.steps_sent
