"""Abuse benchmark: does one device's abuse delay another worker's alert?

    uv run python benchmarks/abuse.py [--presses 100] [--wrong-pins 50] [--flood 1000]
                                      [--open 2000] [--json FILE]

Through the real broker and a real server (SQLite), another device presses its button one
press at a time and times press → ``alert.received``:

- quiet: nothing else happens (its baseline);
- wrong PINs: meanwhile one device sends ``--wrong-pins`` cancels with a wrong PIN at once;
- flood: meanwhile one device sends ``--flood`` SOS with new ``alert_id``s as fast as it can
  (how many SMS the referent gets for them is counted too);
- open alerts: with ``--open`` unacknowledged escalations holding acknowledgement codes on the
  national fallback's number (written straight into the database before the server starts),
  press → first SMS request at a fake Twilio for a new alert, beside the same with none open.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alert_server.db import make_engine, migrate, write_scope
from benchmarks.benchlib import machine_info, write_json
from benchmarks.ingest import BenchDevice, pct
from dispatch import lifecycle
from dispatch.policy import EscalationPolicy
from dispatch.schemas import AlertBrief, Chain, Contact
from tests.fakes.fake_twilio import FakeTwilio
from tests.support import ServerProcess, add_device, server_env, wait_until
from vigie.brokers import files as broker_files
from vigie.brokers.mosquitto import LocalMosquitto
from vigie.timeutil import rfc3339, utcnow

FALLBACK = "+33465710013"
DIRECTORY = f"""\
version: 1
departements: {{}}
national_fallback:
  - name: "Permanence nationale"
    phone: "{FALLBACK}"
escalation:
  steps:
    - {{after_s: 0, contact: 1, channels: [sms]}}
    - {{after_s: 3600, contact: 1, channels: [voice]}}
  repeat: 0
"""
PIN, DURESS_PIN = "1234", "9999"


def _reaches(count: Callable[[], int], target: int) -> Callable[[], bool]:
    return lambda: count() >= target


def presses(dev: BenchDevice, n: int) -> list[float]:
    """``n`` presses one after the other; press → ``alert.received`` in ms."""
    dev.latency_ms.clear()
    for _ in range(n):
        target = dev.receipts + 1
        dev.alert()
        wait_until(_reaches(lambda: dev.receipts, target), 60, "receipt")
    return list(dev.latency_ms)


def summary(lat: list[float]) -> dict[str, float]:
    return {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat), "n": len(lat)}


def sms_to_fallback(db_url: str) -> int:
    engine = make_engine(db_url)
    try:
        with engine.connect() as c:
            return int(
                c.execute(
                    text(
                        "SELECT count(*) FROM dispatch_notification "
                        "WHERE phone = :p AND kind = 'alert' AND channel = 'sms'"
                    ),
                    {"p": FALLBACK},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def seed_open_escalations(db_url: str, n: int) -> None:
    """``n`` open, unacknowledged escalations, each holding a code on the fallback number,
    their first SMS already sent (what weeks of unanswered false alarms leave behind)."""
    engine = make_engine(db_url)
    migrate(engine)
    now = utcnow() - timedelta(hours=1)
    policy = EscalationPolicy.model_validate(
        {"steps": [{"after_s": 0, "contact": 1, "channels": ["sms"]}], "repeat": 0}
    )
    chain = Chain(
        departement=None, force=None, contacts=(Contact("Permanence nationale", FALLBACK),)
    )
    for i in range(n):
        with write_scope(engine) as s:
            brief = AlertBrief(
                alert_id=f"seed-{i:05d}", device_id="seed", kind="sos", created_at=now
            )
            lifecycle.start(s, brief=brief, chains=[chain], policy=policy, now=now)
    with write_scope(engine) as s:
        s.execute(
            text(
                "UPDATE dispatch_notification SET status = 'sent', sent_at = :t, "
                "provider_sid = 'SMseed' || id WHERE alert_id LIKE 'seed-%'"
            ),
            {"t": now},
        )
        s.execute(
            text("UPDATE dispatch_escalation SET exhausts_at = :far WHERE alert_id LIKE 'seed-%'"),
            {"far": now + timedelta(days=30)},
        )
    engine.dispose()


def _sms_count(twilio: FakeTwilio) -> int:
    with twilio.lock:
        return len(twilio.sms)


def first_sms_ms(
    env: dict[str, str],
    tmp: Path,
    twilio: FakeTwilio,
    broker: LocalMosquitto,
    device_id: str,
    rounds: int,
) -> list[float]:
    """Press → the fake Twilio's first SMS request for it, ``rounds`` times."""
    password = add_device(env, device_id, pin=PIN, duress_pin=DURESS_PIN)
    dev = BenchDevice(device_id, password, broker.port)
    out: list[float] = []
    try:
        for _ in range(rounds):
            target = _sms_count(twilio) + 1
            t0 = time.perf_counter()
            aid = dev.alert()
            wait_until(_reaches(lambda: _sms_count(twilio), target), 60, "first SMS")
            out.append((time.perf_counter() - t0) * 1000)
            # Cancelled, so that the next press is a new alert, not a press of its incident.
            dev.client.publish(
                f"vigie/v1/dev/{device_id}/cancel",
                json.dumps({"v": 1, "alert_id": aid, "ts": rfc3339(utcnow()), "pin": PIN}),
                qos=1,
            )
            time.sleep(0.5)
    finally:
        dev.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presses", type=int, default=100)
    ap.add_argument("--wrong-pins", type=int, default=50)
    ap.add_argument("--flood", type=int, default=1000)
    ap.add_argument("--open", type=int, default=2000)
    ap.add_argument("--first-sms-rounds", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vigie-bench-abuse-"))
    directory = tmp / "referents.yaml"
    directory.write_text(DIRECTORY, encoding="utf-8")
    broker = LocalMosquitto(tmp / "broker").start()
    results: dict[str, Any] = {}
    try:
        # -- 1. another device's receipts, quiet / during wrong PINs / during a flood --------
        db_url = f"sqlite:///{tmp / 'vigie.db'}"
        env = server_env(broker, db_url, VIGIE_REFERENTS_FILE=str(directory))
        server = ServerProcess(env, tmp / "server.log").start()
        try:
            broker_files.set_password(broker.passwd_file, "bench-other", "bench-password")
            broker.reload()
            other = BenchDevice("bench-other", "bench-password", broker.port)
            attacker_pw = add_device(env, "bench-attacker", pin=PIN, duress_pin=DURESS_PIN)
            attacker = BenchDevice("bench-attacker", attacker_pw, broker.port)
            results["quiet"] = summary(presses(other, args.presses))

            target = attacker.alert()
            wait_until(lambda: attacker.receipts >= 1, 30, "attacker's alert")
            wrong = json.dumps({"v": 1, "alert_id": target, "ts": rfc3339(utcnow()), "pin": "0000"})
            for _ in range(args.wrong_pins):
                attacker.client.publish("vigie/v1/dev/bench-attacker/cancel", wrong, qos=1)
            results["wrong_pins"] = summary(presses(other, args.presses))

            sms_before = sms_to_fallback(db_url)
            stop = threading.Event()
            flood_sent = 0

            def flood() -> None:
                nonlocal flood_sent
                for _ in range(args.flood):
                    if stop.is_set():
                        return
                    attacker.alert()
                    flood_sent += 1

            t = threading.Thread(target=flood)
            t.start()
            flood_lat = presses(other, args.presses)
            t.join()
            wait_until(lambda: attacker.receipts >= 1 + flood_sent, 120, "flood receipts")
            time.sleep(2.0)
            results["flood"] = {
                **summary(flood_lat),
                "flood_alerts": flood_sent,
                "flood_sms_to_referent": sms_to_fallback(db_url) - sms_before,
            }
            other.close()
            attacker.close()
        finally:
            server.stop()

        # -- 2. first SMS with N open alerts holding codes on the fallback number -------------
        for label, n_open in (("first_sms_none_open", 0), ("first_sms_open", args.open)):
            twilio = FakeTwilio().start()
            db2 = f"sqlite:///{tmp / f'vigie-{label}.db'}"
            if n_open:
                seed_open_escalations(db2, n_open)
            env2 = server_env(
                broker,
                db2,
                VIGIE_REFERENTS_FILE=str(directory),
                VIGIE_TWILIO_ACCOUNT_SID=twilio.account_sid,
                VIGIE_TWILIO_AUTH_TOKEN=twilio.auth_token,
                VIGIE_TWILIO_FROM=twilio.from_number,
                VIGIE_TWILIO_API_BASE=twilio.url,
                VIGIE_TELEPHONY="twilio",
            )
            server = ServerProcess(env2, tmp / f"server-{label}.log").start()
            try:
                lat = first_sms_ms(
                    env2,
                    tmp,
                    twilio,
                    broker,
                    f"bench-{label.replace('_', '-')}",
                    args.first_sms_rounds,
                )
                results[label] = {**summary(lat), "open_alerts": n_open}
            finally:
                server.stop()
                twilio.stop()
    finally:
        broker.stop()

    print(f"\nanother device's press → alert.received ({args.presses} presses each)")
    for key in ("quiet", "wrong_pins", "flood"):
        r = results[key]
        p50, p99, worst = r["p50_ms"], r["p99_ms"], r["max_ms"]
        print(f"  {key:11s} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  max {worst:7.1f} ms")
    f = results["flood"]
    n, sms = f["flood_alerts"], f["flood_sms_to_referent"]
    print(f"  flood: {n} alerts from one device → {sms} SMS to the referent")
    for key in ("first_sms_none_open", "first_sms_open"):
        r = results[key]
        n, p50, p99 = r["open_alerts"], r["p50_ms"], r["p99_ms"]
        print(f"  press → first SMS, {n} open: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    write_json(
        args.json,
        {
            "benchmark": "abuse",
            "machine": machine_info(),
            "config": vars(args) | {"json": str(args.json) if args.json else None},
            **results,
        },
    )


if __name__ == "__main__":
    main()
