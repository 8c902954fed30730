"""Dispatch benchmark: first-SMS latency and step lateness with 10,000 open escalations.

    uv run python benchmarks/dispatch.py [--db postgresql|sqlite|both] [--window 60]
                                         [--open 10000] [--baseline] [--json FILE]

For each database:
1. 10,000 open escalations are bulk-loaded (distinct numbers, a 0 / 1800 / 3600 s policy,
   created over the last hour, steps already due marked as sent), so about 5 of their steps
   come due every second, and the engine has 10,000 open escalations to work through.
2. The real clock (APScheduler sweep + wake-up) runs the engine; the real Twilio client sends
   to the fake Twilio HTTP server of the tests.
3. For ``--window`` seconds a new alert is started every 200 ms (default policy): its start →
   "SMS request received by the fake Twilio" time is measured, and every step that came due
   in the window is matched to the request the fake received: lateness = received − due.

``--baseline`` also runs the same schedule (the same background escalations, the same new
alert every 200 ms with the same policy) through a bare in-memory timer: a heap of due times,
one timer thread, as many send threads as the engine, the same Twilio client and fake Twilio,
no database. What is left of the lateness there is the timer, the hand-off and the HTTP
request: the floor under the engine's figures.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from sqlalchemy import Engine, select  # noqa: E402
from sqlmodel import Session  # noqa: E402

from alert_server.db import make_engine, migrate  # noqa: E402
from benchmarks.benchlib import GcPauses, machine_info, postgres_version, write_json  # noqa: E402
from dispatch import DispatchConfig, Dispatcher  # noqa: E402
from dispatch.channels.twilio import TwilioNotifier  # noqa: E402
from dispatch.models import (  # noqa: E402
    AckCode,
    ChainRow,
    ContactRow,
    Escalation,
    Notification,
)
from dispatch.policy import DEFAULT_POLICY, EscalationPolicy, Step, plan  # noqa: E402
from dispatch.schemas import AlertBrief, Chain, Contact  # noqa: E402
from dispatch.store import brief_to_json  # noqa: E402
from tests.fakes.fake_twilio import FakeTwilio  # noqa: E402
from vigie.persistence import WalCheckpointer  # noqa: E402

PG_ADMIN_DSN = os.environ.get("VIGIE_TEST_PG_DSN", "postgresql://127.0.0.1:5432/test")
N_OPEN = 10_000
BACKGROUND_POLICY = EscalationPolicy(
    steps=(
        Step(after_s=0, contact=1, channels=("sms",)),
        Step(after_s=1800, contact=2, channels=("sms",)),
        Step(after_s=3600, contact=3, channels=("sms",)),
    ),
    repeat=0,
)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


def load_background(engine: Engine, now: datetime, n_open: int = N_OPEN) -> None:
    """Bulk-load n_open open escalations, as ``dispatch.lifecycle.start`` would write them."""
    rng = random.Random(42)
    esc, chains, contacts, codes, notifs = [], [], [], [], []
    contact_id = 0
    offsets = (0, 1800, 3600)
    for i in range(n_open):
        alert_id = f"bg-{i:05d}"
        created = now - timedelta(seconds=rng.uniform(0, 3600))
        brief = AlertBrief(alert_id=alert_id, device_id=f"dev-{i}", kind="sos", created_at=created,
                           worker_first_name="Camille", worker_role="nurse",
                           worker_phone="+33612345678", commune="Aubagne",
                           lat=43.29, lon=5.57, acc_m=15, position_at=created)  # fmt: skip
        esc.append(
            {
                "alert_id": alert_id, "status": "active", "alert_created_at": created,
                "started_at": created, "exhausts_at": created + timedelta(seconds=5400),
                "ack_code": "482", "duress": False, "brief": brief_to_json(brief),
                "policy": BACKGROUND_POLICY.model_dump_json(), "updated_at": created,
            }
        )  # fmt: skip
        chains.append({"alert_id": alert_id, "chain_index": 0, "departement": "13",
                       "force": "PN", "starts_at": created})  # fmt: skip
        for pos in (1, 2, 3):
            contact_id += 1
            phone = f"+336{i:05d}{pos:03d}"
            contacts.append({"id": contact_id, "alert_id": alert_id, "chain_index": 0,
                             "position": pos, "name": f"R{pos}", "phone": phone})  # fmt: skip
            codes.append({"alert_id": alert_id, "phone": phone, "code": "482",
                          "created_at": created})  # fmt: skip
            due = created + timedelta(seconds=offsets[pos - 1])
            done = due <= now
            notifs.append(
                {
                    "alert_id": alert_id, "kind": "alert", "chain_index": 0, "step_no": pos - 1,
                    "round_no": 0, "contact_id": contact_id, "contact_name": f"Référent {pos}",
                    "phone": phone, "channel": "sms", "status": "sent" if done else "planned",
                    "due_at": due, "next_action_at": due, "attempts": 0, "ack_code": "482",
                    "provider_rank": 3 if done else 0,
                    "provider_sid": f"SMBG{uuid.uuid4().hex}" if done else None,
                    "provider_status": "sent" if done else None,
                    "sent_at": due if done else None, "created_at": created, "updated_at": created,
                }
            )  # fmt: skip
    with Session(engine) as s:
        for model, rows in (
            (Escalation, esc),
            (ChainRow, chains),
            (ContactRow, contacts),
            (AckCode, codes),
            (Notification, notifs),
        ):
            table = model.__table__  # type: ignore[attr-defined]
            for k in range(0, len(rows), 5000):
                s.execute(table.insert(), rows[k : k + 5000])
        s.commit()
        if engine.dialect.name == "postgresql":
            # Contact ids were given explicitly: move the sequence past them.
            s.connection().exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('dispatch_contact', 'id'), "
                "(SELECT max(id) FROM dispatch_contact))"
            )
            s.connection().exec_driver_sql("ANALYZE")
            s.commit()


def run(db: str, window_s: float, n_open: int = N_OPEN) -> dict[str, object]:
    tmp = tempfile.TemporaryDirectory()
    pg_name = None
    if db == "postgresql":
        pg_name = f"vigie_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        url = PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + pg_name
    else:
        url = f"sqlite:///{tmp.name}/bench.db"
    # As the server makes it: on SQLite, the log copied into the database off the commits.
    engine = make_engine(url, checkpoints_elsewhere=True)
    checkpointer = WalCheckpointer(engine)
    fake = FakeTwilio().start()
    try:
        migrate(engine)
        checkpointer.start()
        t_load = time.monotonic()
        load_background(engine, datetime.now(UTC), n_open)
        load_s = time.monotonic() - t_load
        notifier = TwilioNotifier(
            account_sid=fake.account_sid,
            auth_token=fake.auth_token,
            from_number=fake.from_number,
            api_base=fake.url,
            public_url="http://127.0.0.1:9",
        )
        dispatcher = Dispatcher(
            engine=engine,
            notifier=notifier,
            config=DispatchConfig(public_url="http://127.0.0.1:9"),
            background=True,
            sweep_s=1.0,
        )
        pauses = GcPauses().start()
        window_start = datetime.now(UTC)
        dispatcher.start_background()
        starts: dict[str, float] = {}
        i = 0
        deadline = time.monotonic() + window_s
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            alert_id = f"fg-{i:05d}"
            created = datetime.now(UTC)
            chain = Chain(
                "13", "PN", tuple(Contact(f"R{k}", f"+337{i:05d}{k:03d}") for k in (1, 2, 3))
            )
            brief = AlertBrief(alert_id=alert_id, device_id="dev", kind="sos", created_at=created,
                               worker_first_name="Camille", worker_role="nurse", commune="Aubagne",
                               lat=43.29, lon=5.57, acc_m=12, position_at=created)  # fmt: skip
            t0 = time.monotonic()
            with Session(engine) as s:
                dispatcher.start(s, brief=brief, chains=[chain], policy=DEFAULT_POLICY, now=created)
                s.commit()
            starts[f"+337{i:05d}001"] = t0
            i += 1
            next_at += 0.2
            time.sleep(max(0.0, next_at - time.monotonic()))
        time.sleep(2.0)  # let the last ones go out
        window_end = datetime.now(UTC) - timedelta(seconds=2)
        dispatcher.shutdown()
        pauses.stop()
        with fake.lock:
            sms = list(fake.sms)
            calls = list(fake.calls)
        first_sms: dict[str, float] = {}
        for m in sms:
            if m.to in starts and m.to not in first_sms:
                first_sms[m.to] = m.received_at - starts[m.to]
        start_to_sms_ms = [v * 1000 for v in first_sms.values()]
        received = {m.sid: m.received_utc for m in sms}
        received_calls = {c.notification_id: c.received_utc for c in calls}
        late_ms: list[float] = []
        missing = 0
        with Session(engine) as s:
            rows = s.execute(
                select(Notification).where(
                    Notification.due_at >= window_start,  # type: ignore[arg-type]
                    Notification.due_at <= window_end,  # type: ignore[arg-type]
                    Notification.kind == "alert",  # type: ignore[arg-type]
                )
            ).scalars()
            for n in rows:
                got = (
                    received.get(n.provider_sid or "")
                    if n.channel == "sms"
                    else received_calls.get(n.id or -1)
                )
                if got is None:
                    missing += 1
                    continue
                late_ms.append((got - n.due_at).total_seconds() * 1000)
        dup_sids = len(sms) - len({m.sid for m in sms})
        return {
            "db": db,
            "open": n_open + i,
            "load_s": load_s,
            "alerts_started": i,
            "start_to_sms_n": len(start_to_sms_ms),
            "start_to_sms_p50_ms": pct(start_to_sms_ms, 50),
            "start_to_sms_p99_ms": pct(start_to_sms_ms, 99),
            "start_to_sms_max_ms": max(start_to_sms_ms, default=float("nan")),
            "steps_due": len(late_ms) + missing,
            "steps_missing": missing,
            "late_p50_ms": pct(late_ms, 50),
            "late_p99_ms": pct(late_ms, 99),
            "late_max_ms": max(late_ms, default=float("nan")),
            "requests": len(sms) + len(calls),
            "dup": dup_sids,
            "ticks": dispatcher.background.ticks if dispatcher.background else 0,
            "gc_collections": pauses.count,
            "gc_longest_ms": pauses.longest_ms,
        }
    finally:
        fake.stop()
        checkpointer.stop()
        engine.dispose()
        if pg_name:
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        tmp.cleanup()


def run_baseline(window_s: float, n_open: int = N_OPEN) -> dict[str, object]:
    """The same schedule as ``run`` with no database: see the module docstring."""
    fake = FakeTwilio().start()
    notifier = TwilioNotifier(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        from_number=fake.from_number,
        api_base=fake.url,
        public_url="http://127.0.0.1:9",
    )
    pool = ThreadPoolExecutor(DispatchConfig().send_workers)
    cond = threading.Condition()
    heap: list[tuple[datetime, int, str, str]] = []  # (due, id, channel, to)
    due_by_id: dict[int, datetime] = {}
    sid_to_id: dict[str, int] = {}
    ids = itertools.count(1)
    errors = [0]
    stop = threading.Event()
    body = "Alerte Vigie : Camille (infirmière) à Aubagne, 43.29000, 5.57000 ±12 m. " * 3

    def push(due: datetime, channel: str, to: str) -> None:
        nid = next(ids)
        due_by_id[nid] = due
        with cond:
            heapq.heappush(heap, (due, nid, channel, to))
            cond.notify()

    def send(due: datetime, nid: int, channel: str, to: str) -> None:
        try:
            if channel == "sms":
                r = notifier.send_sms(to=to, body=body, notification_id=nid, alert_id="bench")
                sid_to_id[r.sid] = nid
            else:
                notifier.place_call(to=to, notification_id=nid, alert_id="bench")
        except Exception:
            errors[0] += 1

    def timer() -> None:
        while not stop.is_set():
            with cond:
                if not heap:
                    cond.wait(0.5)
                    continue
                wait = (heap[0][0] - datetime.now(UTC)).total_seconds()
                if wait > 0:
                    cond.wait(min(wait, 0.5))
                    continue
                item = heapq.heappop(heap)
            pool.submit(send, *item)

    try:
        # Background: the same 10,000 escalations as load_background (same seed, so the same
        # creation times), only the steps still to come.
        now = datetime.now(UTC)
        rng = random.Random(42)
        for i in range(n_open):
            created = now - timedelta(seconds=rng.uniform(0, 3600))
            for pos, offset in ((1, 0), (2, 1800), (3, 3600)):
                due = created + timedelta(seconds=offset)
                if due > now:
                    push(due, "sms", f"+336{i:05d}{pos:03d}")
        steps = plan(DEFAULT_POLICY, 3)
        thread = threading.Thread(target=timer, name="baseline-timer", daemon=True)
        pauses = GcPauses().start()
        window_start = datetime.now(UTC)
        thread.start()
        starts: dict[str, float] = {}
        i = 0
        deadline = time.monotonic() + window_s
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            created = datetime.now(UTC)
            for st in steps:
                push(
                    created + timedelta(seconds=st.offset_s),
                    st.channel,
                    f"+337{i:05d}{st.position:03d}",
                )
            starts[f"+337{i:05d}001"] = t0
            i += 1
            next_at += 0.2
            time.sleep(max(0.0, next_at - time.monotonic()))
        time.sleep(2.0)
        window_end = datetime.now(UTC) - timedelta(seconds=2)
        stop.set()
        thread.join(5)
        pool.shutdown(wait=True)
        pauses.stop()
        with fake.lock:
            sms = list(fake.sms)
            calls = list(fake.calls)
        first_sms: dict[str, float] = {}
        for m in sms:
            if m.to in starts and m.to not in first_sms:
                first_sms[m.to] = m.received_at - starts[m.to]
        start_to_sms_ms = [v * 1000 for v in first_sms.values()]
        received: dict[int, datetime] = {}
        for m in sms:
            if m.sid in sid_to_id:
                received[sid_to_id[m.sid]] = m.received_utc
        for c in calls:
            received[c.notification_id] = c.received_utc
        late_ms: list[float] = []
        missing = 0
        for nid, due in due_by_id.items():
            if not window_start <= due <= window_end:
                continue
            got = received.get(nid)
            if got is None:
                missing += 1
            else:
                late_ms.append((got - due).total_seconds() * 1000)
        return {
            "db": "none (in-memory timer)",
            "open": n_open + i,
            "alerts_started": i,
            "start_to_sms_n": len(start_to_sms_ms),
            "start_to_sms_p50_ms": pct(start_to_sms_ms, 50),
            "start_to_sms_p99_ms": pct(start_to_sms_ms, 99),
            "start_to_sms_max_ms": max(start_to_sms_ms, default=float("nan")),
            "steps_due": len(late_ms) + missing,
            "steps_missing": missing,
            "late_p50_ms": pct(late_ms, 50),
            "late_p99_ms": pct(late_ms, 99),
            "late_max_ms": max(late_ms, default=float("nan")),
            "requests": len(sms) + len(calls),
            "dup": len(sms) - len({m.sid for m in sms}),
            "send_errors": errors[0],
            "gc_collections": pauses.count,
            "gc_longest_ms": pauses.longest_ms,
        }
    finally:
        stop.set()
        pool.shutdown(wait=False)
        fake.stop()


def machine() -> str:
    model = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next(
        (ln.split(":", 1)[1].strip() for ln in model.splitlines() if "Model name" in ln), "?"
    )
    mem_kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                  if ln.startswith("MemTotal"))  # fmt: skip
    return f"{os.cpu_count()} CPU ({name}), {mem_kb / 1024 / 1024:.1f} GiB RAM"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--open", type=int, default=N_OPEN, help="open escalations loaded first")
    parser.add_argument(
        "--baseline", action="store_true", help="also run the bare in-memory timer baseline"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    dbs = ["postgresql", "sqlite"] if args.db == "both" else [args.db]
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — {machine()}")
    results: dict[str, dict[str, object]] = {}
    for db in dbs:
        r = run(db, args.window, args.open)
        results[db] = r
        print(
            f"{r['db']}: {r['open']} open escalations (loaded in {r['load_s']:.1f} s), "
            f"{r['alerts_started']} alerts started in {args.window:.0f} s\n"
            f"  start → SMS at fake Twilio: p50 {r['start_to_sms_p50_ms']:.1f} ms, "
            f"p99 {r['start_to_sms_p99_ms']:.1f} ms, max {r['start_to_sms_max_ms']:.1f} ms "
            f"(n={r['start_to_sms_n']})\n"
            f"  step lateness (received − due): p50 {r['late_p50_ms']:.1f} ms, "
            f"p99 {r['late_p99_ms']:.1f} ms, max {r['late_max_ms']:.1f} ms "
            f"(n={r['steps_due']}, not sent {r['steps_missing']})\n"
            f"  {r['requests']} requests to the fake, duplicated SIDs {r['dup']}, "
            f"{r['ticks']} sweeps; cycle collections {r['gc_collections']}, "
            f"longest {r['gc_longest_ms']:.1f} ms",
            flush=True,
        )
    baseline = None
    if args.baseline:
        baseline = b = run_baseline(args.window, args.open)
        print(
            f"baseline, in-memory timer (no database): {b['open']} escalations, "
            f"{b['alerts_started']} alerts started in {args.window:.0f} s\n"
            f"  start → SMS at fake Twilio: p50 {b['start_to_sms_p50_ms']:.1f} ms, "
            f"p99 {b['start_to_sms_p99_ms']:.1f} ms, max {b['start_to_sms_max_ms']:.1f} ms "
            f"(n={b['start_to_sms_n']})\n"
            f"  step lateness (received − due): p50 {b['late_p50_ms']:.1f} ms, "
            f"p99 {b['late_p99_ms']:.1f} ms, max {b['late_max_ms']:.1f} ms "
            f"(n={b['steps_due']}, not sent {b['steps_missing']})\n"
            f"  {b['requests']} requests to the fake, duplicated SIDs {b['dup']}, "
            f"send errors {b['send_errors']}; cycle collections {b['gc_collections']}, "
            f"longest {b['gc_longest_ms']:.1f} ms",
            flush=True,
        )
    info = machine_info()
    if "postgresql" in dbs:
        info["postgresql"] = postgres_version(PG_ADMIN_DSN)
    write_json(
        args.json,
        {
            "benchmark": "dispatch",
            "machine": info,
            "config": {"window_s": args.window, "open": args.open, "dbs": dbs},
            "vigie": results,
            "baseline": baseline,
        },
    )


if __name__ == "__main__":
    main()
