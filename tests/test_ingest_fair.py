"""One device's flood never makes another device's alert wait behind it (issue: "No worker's
alert ever waits on another"): the ingest writer serves the devices in turn, a device's own
messages in their order, and every message is committed and acknowledged once."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from sqlalchemy import text

from alert_server.db import migrate
from alert_server.ingest.handler import FairQueue, Inbound
from tests.writer_support import alert_item, in_process_writer
from vigie.persistence import make_engine


def _press(device_id: str, acks: Counter[str]) -> Inbound:
    return alert_item(device_id, lambda alert_id: acks.update([alert_id]))


def _ids(items: list[Inbound]) -> list[str]:
    return [json.loads(i.payload)["alert_id"] for i in items]


def test_the_queue_serves_devices_in_turn_and_keeps_each_devices_order() -> None:
    acks: Counter[str] = Counter()
    q = FairQueue(per_device=3)
    flood = [_press("flood", acks) for _ in range(10)]
    for item in flood:
        q.put(item)
    other = _press("other", acks)
    q.put(other)
    batch, finished = q.take(100)
    # The flood's share of a batch is capped; the other device is in the first batch.
    assert [i.device_id for i in batch] == ["flood", "other", "flood", "flood"]
    assert not finished
    rest: list[Inbound] = []
    q.close()
    while not finished:
        more, finished = q.take(100)
        rest += more
    taken = [i for i in batch + rest if i.device_id == "flood"]
    assert _ids(taken) == _ids(flood)  # the device's own order
    assert q.qsize() == 0


def test_a_flood_does_not_hold_back_another_devices_alert(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'vigie.db'}")
    migrate(engine)
    try:
        with in_process_writer(engine) as writer:
            ingestor = writer.ingestor
            batches: list[list[Inbound]] = []
            commit = ingestor._commit

            def recording(batch: list[Inbound]) -> None:
                batches.append(list(batch))
                commit(batch)

            ingestor._commit = recording  # type: ignore[method-assign]
            acks: Counter[str] = Counter()
            # 500 presses of one device are waiting when another device's alert arrives.
            flood = [_press("stuck-button", acks) for _ in range(500)]
            for item in flood:
                ingestor.submit(item)
            other = _press("nurse-2", acks)
            ingestor.submit(other)
            ingestor.start()
            ingestor.stop()
        # The other device's alert is committed (and receipted) with the first batch, not
        # after the 500 presses.
        assert other in batches[0]
        committed = [i for b in batches for i in b]
        assert _ids([i for i in committed if i.device_id == "stuck-button"]) == _ids(flood)
        # Everything stored and acknowledged exactly once.
        assert sorted(acks.values()) == [1] * 501
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT device_id, count(*) FROM alert GROUP BY 1")).all()
        assert dict(rows) == {"stuck-button": 500, "nurse-2": 1}
        assert writer.sent.count("vigie/v1/dev/nurse-2/cmd") == 1
    finally:
        engine.dispose()
