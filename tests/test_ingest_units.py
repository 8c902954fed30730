"""Pure pieces of ingest: payload reading, salvage of malformed alerts, PUBACK ordering."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from alert_server.db import database_unavailable, make_engine
from alert_server.ingest.handler import interpret_alert
from alert_server.ingest.mqtt import AckSequencer, BrokerAddress, LinkAcks
from alert_server.ingest.rescue import Presence, dead_session_filters, elect
from vigie import payloads, topics
from vigie.brokers.mosquitto import free_port

NOW = datetime(2026, 11, 22, 18, 4, 10, tzinfo=UTC)


def _alert(**kw: object) -> bytes:
    body = {"v": 1, "alert_id": "a-1", "kind": "sos", "ts": "2026-11-22T18:04:05.123Z"}
    body.update(kw)
    return json.dumps(body).encode()


def test_valid_alert() -> None:
    d = interpret_alert(
        "nurse-1", _alert(pos={"lat": 43.3, "lon": 5.4, "acc_m": 12, "src": "gps"}), NOW
    )
    assert (d.alert_id, d.kind, d.original_kind) == ("a-1", "sos", None)
    assert d.flags == [] and d.pos is not None and d.pos.acc_m == 12
    assert d.device_ts == datetime(2026, 11, 22, 18, 4, 5, 123000, tzinfo=UTC)


def test_silent_fall_and_no_motion_are_known_kinds() -> None:
    for kind in ("sos_silent", "fall", "no_motion"):
        assert interpret_alert("nurse-1", _alert(kind=kind), NOW).kind == kind


def test_late_alert_from_offline_queue_is_flagged_delayed_not_refused() -> None:
    old = (NOW - timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    d = interpret_alert("nurse-1", _alert(ts=old), NOW)
    assert "delayed" in d.flags and "malformed" not in d.flags


def test_unreadable_alert_gets_a_stable_id() -> None:
    a = interpret_alert("nurse-1", b"\x00garbage", NOW)
    b = interpret_alert("nurse-1", b"\x00garbage", NOW)
    c = interpret_alert("nurse-2", b"\x00garbage", NOW)
    assert a.alert_id == b.alert_id != c.alert_id
    assert {"malformed", "no_alert_id", "unknown_kind", "no_position"} <= set(a.flags)


def test_naive_and_numeric_timestamps_are_refused() -> None:
    for ts in (
        "2026-11-22T18:04:05",
        "2026-11-22 18:04:05Z",
        1763834645,
        "2026-11-22T18:04:05+0100",
    ):
        d = interpret_alert("nurse-1", _alert(ts=ts), NOW)
        assert "malformed" in d.flags and d.alert_id == "a-1"


def test_any_rfc3339_offset_is_read_as_utc() -> None:
    """protocol.md 1.1: Z, z or a numeric offset; stored as UTC."""
    expected = datetime(2026, 11, 22, 18, 4, 5, 123456, tzinfo=UTC)
    for ts in (
        "2026-11-22T18:04:05.123456Z",
        "2026-11-22t18:04:05.123456z",
        "2026-11-22T19:04:05.123456+01:00",
        "2026-11-22T18:04:05.123456+00:00",
        "2026-11-22T13:04:05.123456789-05:00",
    ):
        d = interpret_alert("nurse-1", _alert(ts=ts), NOW)
        assert "malformed" not in d.flags, ts
        assert d.device_ts == expected and d.device_ts.utcoffset() == timedelta(0), ts


def test_booleans_are_not_numbers() -> None:
    d = interpret_alert("nurse-1", _alert(pos={"lat": True, "lon": 5.4}), NOW)
    assert "malformed" in d.flags and d.pos is None


def test_topics() -> None:
    assert topics.parse("vigie/v1/dev/nurse-1/alert") == ("nurse-1", "alert")
    assert topics.parse("vigie/v1/dev/nurse-1/cmd") is None
    assert topics.parse("vigie/v1/dev/a/b/alert") is None
    assert topics.parse("other/x") is None
    assert ("$share/g/vigie/v1/dev/+/alert", 1) in topics.subscriptions("g")
    assert not topics.valid_device_id("vigie-server")
    assert not topics.valid_device_id("ab")


def test_command_payload() -> None:
    body = json.loads(payloads.command("alert.received", NOW, alert_id="a-1"))
    assert body == {
        "v": 1,
        "type": "alert.received",
        "alert_id": "a-1",
        "ts": "2026-11-22T18:04:10.000Z",
    }


def test_acks_leave_in_arrival_order() -> None:
    sent: list[int] = []
    seq = AckSequencer(lambda mid, qos: sent.append(mid))
    seq.new_connection()
    t1, t2, t3 = (seq.register(m, 1) for m in (1, 2, 3))
    t0 = seq.register(9, 0)  # QoS 0: no ack, never blocks
    seq.done(t3)
    seq.done(t2)
    assert sent == []  # 1 is still being committed
    seq.done(t1)
    seq.done(t0)
    assert sent == [1, 2, 3]


def test_acks_of_an_old_connection_are_dropped() -> None:
    sent: list[int] = []
    seq = AckSequencer(lambda mid, qos: sent.append(mid))
    old = seq.register(1, 1)
    seq.new_connection()
    new = seq.register(1, 1)
    seq.done(old)
    assert sent == []
    seq.done(new)
    assert sent == [1]


def test_acks_from_many_threads_stay_ordered() -> None:
    sent: list[int] = []
    seq = AckSequencer(lambda mid, qos: sent.append(mid))
    tokens = [seq.register(m, 1) for m in range(1, 2001)]
    threads = [
        threading.Thread(target=lambda ts=tokens[i::4]: [seq.done(t) for t in reversed(ts)])
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sent == list(range(1, 2001))


def test_acks_go_back_to_the_connection_the_message_came_on() -> None:
    """A message drained from a dead server's session (rescue.py) is acknowledged on that
    connection, in its own order; the server's own connection never sees its ids."""
    own: list[int] = []
    rescued: list[int] = []
    main = AckSequencer(lambda mid, qos: own.append(mid))
    drain = AckSequencer(lambda mid, qos: rescued.append(mid), conn=1)

    class Rescue:
        def done(self, token: object) -> None:
            drain.done(token)  # type: ignore[arg-type]

    acks = LinkAcks(main)
    acks.rescue = Rescue()  # type: ignore[assignment]
    a, b = main.register(7, 1), drain.register(7, 1)
    assert (a.conn, b.conn) == (0, 1)
    acks.done(b)
    assert (own, rescued) == ([], [7])
    acks.done(a)
    assert (own, rescued) == ([7], [7])


def test_the_next_server_after_the_dead_one_takes_its_session() -> None:
    online = ["vigie-server-0", "vigie-server-2", "vigie-server-3"]
    assert elect("vigie-server-1", online) == "vigie-server-2"
    assert elect("vigie-server-2", online) == "vigie-server-3"
    # Cyclic: after the last comes the first; the dead one never elects itself.
    assert elect("vigie-server-3", online) == "vigie-server-0"
    assert elect("vigie-server-1", ["vigie-server-1"]) is None
    # Every survivor computes the same answer from the same list, in any order.
    assert {elect("vigie-server-1", list(reversed(online)))} == {"vigie-server-2"}


def test_presence_messages() -> None:
    p = Presence("vigie-server-1", "offline", "vigie")
    assert Presence.decode(p.encode()) == p
    for bad in (b"", b"[]", b"not json", b'{"client_id": "x", "state": "asleep", "group": ""}',
                b'{"client_id": "", "state": "online", "group": "vigie"}',
                b'{"client_id": "x", "state": "online"}'):  # fmt: skip
        assert Presence.decode(bad) is None, bad
    # What a rescue unsubscribes is exactly what a server of the group subscribes to.
    filters = dead_session_filters("vigie", "vigie-server-1")
    assert [f for f, _ in topics.subscriptions("vigie")] == filters[:-2]
    assert filters[-2:] == ["$share/vigie/vigie/v1/probe/vigie-server-1", "vigie/v1/servers/+"]


def test_broker_address() -> None:
    a = BrokerAddress.parse("mqtts://vigie-server:p%40ss@broker.example:8884")
    assert (a.host, a.port, a.username, a.password, a.tls) == (
        "broker.example",
        8884,
        "vigie-server",
        "p@ss",
        True,
    )
    assert BrokerAddress.parse("mqtt://127.0.0.1").port == 1883


def test_database_outages_are_told_apart_from_bad_data(tmp_path: Path) -> None:
    """An outage (locked, unreachable) is retried as it is; a fault of the data is not."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    holder = sqlite3.connect(tmp_path / "x.db")
    holder.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    holder.execute("INSERT INTO t VALUES (1)")
    holder.commit()
    holder.execute("BEGIN EXCLUSIVE")
    engine = create_engine(url, connect_args={"timeout": 0})
    with pytest.raises(OperationalError) as locked, engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (2)"))
    assert database_unavailable(locked.value)
    holder.rollback()
    with pytest.raises(IntegrityError) as duplicate, engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    assert not database_unavailable(duplicate.value)
    engine.dispose()
    holder.close()

    refused = make_engine(f"postgresql+psycopg://vigie@127.0.0.1:{free_port()}/none")
    with pytest.raises(OperationalError) as down, refused.connect():
        pass
    assert database_unavailable(down.value)
    refused.dispose()
