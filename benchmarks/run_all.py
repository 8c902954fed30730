"""Run every benchmark, each beside its baseline, and append a dated section to RESULTS.md.

    ./benchmarks/run [--quick] [--only startup,ingest,geo,load,dispatch,memory,abuse,cluster]
                     [--append | --no-append] [--out DIR] [--results FILE]

Parts, in this order (each one a separate process; its JSON is kept in ``--out``):

- startup:  ``startup.py``  ``vigie --help``, ``devices list``, ``users list`` vs the bare
                            interpreter; ``vigie server`` start → ``/healthz`` 200 (restart,
                            first start with the boundary parse cache warm and cold) vs a bare
                            FastAPI app on uvicorn; ``vigie demo`` → URL, first and second run;
- ingest:   ``ingest.py``   server ingest vs a bare paho echo subscriber (SQLite);
- geo:      ``geo.py``      position resolution vs a naive loop over the commune polygons;
- load:     ``load.py``     press → first notification (and → ``alert.received``) with 10,000
                            connected devices, vs the same fleet answered by a bare paho echo;
- dispatch: ``dispatch.py`` step lateness with 10,000 open escalations (PostgreSQL when it is
                            reachable, and SQLite) vs the same schedule on an in-memory timer;
- memory:   ``memory.py``   bytes per connected device, server vs Mosquitto (and simulator);
- cluster:  ``cluster.py``  alerts/s and heartbeats/s with 1, 2, 3 servers on one PostgreSQL,
                            on a 3-node RabbitMQ cluster (quorum queue) beside one Mosquitto;
- failover: ``failover.py`` press → stored when one of three servers on ``$share`` is SIGKILLed,
                            with the session rescue (mosquitto#2662) vs without it;
- abuse:    ``abuse.py``    another device's press → ``alert.received`` while one device sends
                            wrong PINs or floods, and press → first SMS with 2,000 open alerts
                            holding codes on one number, each vs its quiet baseline.

A full run takes about 15 minutes on 2 cores and appends to RESULTS.md unless ``--no-append``.
``--quick`` (small sizes, short windows: 2–3 minutes) is a smoke check and appends nothing
unless ``--append`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.benchlib import machine_info, postgres_version  # noqa: E402

PARTS = (
    "startup",
    "ingest",
    "writer",
    "geo",
    "load",
    "dispatch",
    "memory",
    "abuse",
    "cluster",
    "failover",
)
DB_LABEL = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}
PG_ADMIN_DSN = os.environ.get("VIGIE_TEST_PG_DSN", "postgresql://127.0.0.1:5432/test")


@dataclass
class Part:
    name: str
    args: list[str]
    timeout_s: float
    json_path: Path
    elapsed_s: float | None = None
    returncode: int | None = None
    error: str | None = None
    data: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        return [sys.executable, str(REPO / "benchmarks" / f"{self.name}.py"), *self.args]

    def shown(self) -> str:
        """The command as a person would type it."""
        return "uv run python " + shlex.join([f"benchmarks/{self.name}.py", *self.args])


def plan_parts(args: argparse.Namespace, out: Path, pg: bool) -> list[Part]:
    def j(name: str) -> Path:
        return out / f"{name}.json"

    quick = args.quick
    dispatch_db = "both" if pg else "sqlite"
    # name: (quick arguments, full arguments, time limit quick / full in s)
    table: dict[str, tuple[str, str, float, float]] = {
        "startup": (
            "--repeat 3 --cold-repeat 1 --demo-rounds 1",
            "--repeat 10 --cold-repeat 3 --demo-rounds 3",
            900,
            1800,
        ),
        "ingest": (
            "--db sqlite --devices 10 --alerts 200 --heartbeats 2000 --sparse 10",
            "--db sqlite --devices 100 --alerts 2000 --heartbeats 20000 --sparse 50",
            300,
            900,
        ),
        "writer": ("--db sqlite --alerts 100", "--db sqlite --alerts 400", 300, 600),
        "geo": ("--points 2000 --naive-points 20", "--points 20000 --naive-points 200", 300, 900),
        "load": (
            "--sizes 200 --hb-interval 5 --alert-rate 5 --duration 8 --idle 10",
            "--sizes 10000 --hb-interval 30 --alert-rate 5 --duration 45",
            300,
            1200,
        ),
        "dispatch": (
            "--db sqlite --window 8 --open 2000",
            f"--db {dispatch_db} --window 60 --open 10000",
            300,
            1200,
        ),
        "memory": (
            "--sizes 200 --hb-interval 3 --rounds 2 --idle 2 --alert-rate 0.5",
            "--sizes 1000,10000 --hb-interval 30 --rounds 2 --alert-rate 0.1",
            300,
            1200,
        ),
        "abuse": (
            "--presses 20 --wrong-pins 50 --flood 200 --open 300 --first-sms-rounds 3",
            "--presses 100 --wrong-pins 50 --flood 1000 --open 2000 --first-sms-rounds 10",
            300,
            900,
        ),
        "cluster": (
            "--servers 1,2 --devices 10 --alerts 100 --heartbeats 1000",
            "--servers 1,2,3 --devices 20 --alerts 600 --heartbeats 6000",
            900,
            1800,
        ),
        "failover": (
            "--devices 30 --alert-rate 2 --duration 15",
            "--devices 60 --alert-rate 2 --duration 30",
            600,
            900,
        ),
    }
    extra = {
        "startup": [],
        "ingest": [],
        "writer": [],
        "geo": [],
        "load": ["--baseline", "--out", str(out / "load")],
        "dispatch": ["--baseline"],
        "memory": [],
        "abuse": [],
        "cluster": [],
        "failover": [],
    }
    parts = []
    for name in args.only:
        quick_args, full_args, quick_limit, full_limit = table[name]
        a = (quick_args if quick else full_args).split()
        timeout = quick_limit if quick else full_limit
        parts.append(Part(name, [*a, *extra[name], "--json", str(j(name))], timeout, j(name)))
    if not pg and "dispatch" in args.only and not quick:
        parts[args.only.index("dispatch")].notes.append(
            f"PostgreSQL not reachable at {PG_ADMIN_DSN}: dispatch on SQLite only"
        )
    return parts


def run_part(part: Part, log_path: Path) -> None:
    """Run one benchmark; its output goes to the terminal and to ``log_path``."""
    print(f"\n=== {part.name}: {part.shown()}", flush=True)
    t0 = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"$ {part.shown()}\n")
        proc = subprocess.Popen(
            part.command(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own group: a time-out ends it with its children
        )
        timed_out = threading.Event()

        def kill_group() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)

        watchdog = threading.Timer(part.timeout_s, kill_group)
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                log.write(line)
            proc.wait()
        except KeyboardInterrupt:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
        finally:
            watchdog.cancel()
    part.elapsed_s = time.monotonic() - t0
    part.returncode = proc.returncode
    if timed_out.is_set():
        part.error = f"stopped after its time limit ({part.timeout_s:.0f} s)"
    elif proc.returncode != 0:
        part.error = f"exit code {proc.returncode} (log: {log_path})"
    if part.error is None:
        try:
            part.data = json.loads(part.json_path.read_text())
        except (OSError, ValueError) as exc:
            part.error = f"no JSON figures: {exc}"
    status = "ok" if part.error is None else f"FAILED: {part.error}"
    print(f"=== {part.name}: {status}, {part.elapsed_s:.0f} s", flush=True)


# -- the summary table -----------------------------------------------------------------------
Row = tuple[str, str, str, str]


def _f(v: Any, fmt: str = ".1f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, fmt)


def _pair(a: Any, b: Any, unit: str, fmt: str = ".1f") -> str:
    return f"{_f(a, fmt)} / {_f(b, fmt)} {unit}"


def _ratio(a: Any, b: Any) -> float | None:
    try:
        return float(a) / float(b) if b else None
    except (TypeError, ValueError):
        return None


# The goals of issue #18 (benchmarks only, never asserted in tests).
STARTUP_ROWS = (
    ("help", "`vigie --help`", "python_floor", "≤ 0.5 s"),
    ("devices_list", "`vigie devices list` (SQLite, migrated)", "python_floor", "≤ 0.5 s"),
    ("users_list", "`vigie users list` (SQLite, migrated)", "python_floor", "≤ 0.5 s"),
    (
        "server_restart",
        "`vigie server` → `/healthz` 200, restart (boundaries in the database)",
        "bare_server",
        "≤ 1.5 s",
    ),
    (
        "server_first_warm_cache",
        "`vigie server` → `/healthz` 200, new database, boundary parse cache warm",
        "bare_server",
        "",
    ),
    (
        "server_first_cold",
        "`vigie server` → `/healthz` 200, new database, parse cache empty",
        "bare_server",
        "",
    ),
    ("demo_first", "`vigie demo` → URL printed, first run (parse cache empty)", None, ""),
    ("demo_second", "`vigie demo` → URL printed, second run", None, "≤ 10 s"),
)
BASELINE_LABEL = {
    "python_floor": "bare interpreter (`python -c pass`)",
    "bare_server": "bare FastAPI app on uvicorn → 200",
}


def rows_startup(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for key, label, base_key, goal in STARTUP_ROWS:
        x = d.get(key)
        if x is None:
            continue
        b = d.get(base_key) if base_key else None
        base = f"{BASELINE_LABEL[base_key]}: " if base_key else ""
        base += _pair(b["median_s"], b["p90_s"], "s", ".2f") if b else ""
        note = f"{x['n']} runs, best {_f(x['best_s'], '.2f')} s, load {_f(x['loadavg'], '.2f')}"
        if "cpu_median_s" in x:
            note += f", CPU {_f(x['cpu_median_s'], '.2f')} s (median)"
        if goal:
            note = f"goal {goal} (median); " + note
        rows.append(
            (
                f"startup: {label}, median / p90",
                _pair(x["median_s"], x["p90_s"], "s", ".2f"),
                base or "-",
                note,
            )
        )
    return rows


def rows_ingest(d: dict[str, Any]) -> list[Row]:
    c, v, b = d["config"], d["vigie"], d["baseline"]
    r_solo = _ratio(v["solo_p50_ms"], b["solo_p50_ms"])
    r_alerts = _ratio(v["alerts_per_s"], b["alerts_per_s"])
    r_hb = _ratio(v["heartbeats_per_s"], b["heartbeats_per_s"])
    return [
        (
            f"ingest: press → `alert.received`, one alert at a time, p50 / p99 "
            f"({c['devices']} devices, {DB_LABEL.get(c['db'], c['db'])})",
            _pair(v["solo_p50_ms"], v["solo_p99_ms"], "ms", ".2f"),
            "bare paho echo: " + _pair(b["solo_p50_ms"], b["solo_p99_ms"], "ms", ".2f"),
            f"×{_f(r_solo)} at p50 (the durable commit before the receipt)",
        ),
        *(
            [
                (
                    f"ingest: press → `alert.received`, {c['sparse']} alerts "
                    f"{c['sparse_gap_s']} s apart, p50 / max",
                    _pair(v["sparse_p50_ms"], v["sparse_max_ms"], "ms", ".2f"),
                    "bare paho echo: " + _pair(b["sparse_p50_ms"], b["sparse_max_ms"], "ms", ".2f"),
                    f"×{_f(_ratio(v['sparse_p50_ms'], b['sparse_p50_ms']))} at p50 "
                    "(alerts as they come in real use)",
                )
            ]
            if "sparse_p50_ms" in v
            else []
        ),
        (
            f"ingest: alerts/s, {c['alerts']:,} pressed at once",
            f"{_f(v['alerts_per_s'], '.0f')}/s",
            f"{_f(b['alerts_per_s'], '.0f')}/s",
            f"{_f(r_alerts, '.2f')}× the baseline; burst p99 {_f(v['burst_p99_ms'], '.0f')} ms "
            f"vs {_f(b['burst_p99_ms'], '.0f')} ms",
        ),
        (
            f"ingest: heartbeats/s (QoS 1, {c['heartbeats']:,})",
            f"{_f(v['heartbeats_per_s'], '.0f')}/s",
            f"{_f(b['heartbeats_per_s'], '.0f')}/s",
            f"{_f(r_hb, '.2f')}× the baseline",
        ),
    ]


def rows_writer(d: dict[str, Any]) -> list[Row]:
    db = DB_LABEL.get(d["config"]["db"], d["config"]["db"])
    return [
        (
            f"ingest writer ({db}, in process): {name}, per alert, CPU p50 / p99",
            _pair(r["cpu_p50_ms"], r["cpu_p99_ms"], "ms", ".3f"),
            "-",
            "wall p50 / p99: " + _pair(r["wall_p50_ms"], r["wall_p99_ms"], "ms", ".3f"),
        )
        for name, r in d["cases"].items()
    ]


def rows_geo(d: dict[str, Any]) -> list[Row]:
    lk, base, cfg = d["lookups"], d["baseline"]["naive_communes"], d["config"]
    naive = f"naive loop over 35,357 communes ({base['n']} points): " + _pair(
        base["p50_us"] / 1000, base["p99_us"] / 1000, "ms"
    )
    rows: list[Row] = []
    for key, label in (
        ("resolve_position (fresh GPS fix)", "`resolve_position` (fresh GPS fix)"),
        ("commune_at", "`commune_at`"),
    ):
        x = lk[key]
        rows.append(
            (
                f"geo: {label}, p50 / p99 ({cfg['points']:,} points)",
                _pair(x["p50_us"], x["p99_us"], "µs"),
                naive,
                f"{_f(_ratio(base['p50_us'], x['p50_us']), '.0f')}× faster at p50",
            )
        )
    rows.append(
        (
            "geo: start-up, stored import (SQLite) + index",
            f"{_f(d['startup_sqlite_s'], '.2f')} s",
            f"parse the GeoJSON + index: {_f(d['startup_parse_s'], '.2f')} s",
            f"{_f(_ratio(d['startup_parse_s'], d['startup_sqlite_s']), '.0f')}× faster",
        )
    )
    m = d["memory_mib"]
    rows.append(
        (
            "geo: RSS of a process holding the warmed index",
            f"{_f(m['total'], '.0f')} MiB",
            "-",
            f"{_f(m['total'] - m['start'] - m['rows'], '.0f')} MiB of it geometries + index",
        )
    )
    return rows


def rows_load(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    baselines = d.get("baseline") or [None] * len(d["vigie"])
    for v, b in zip(d["vigie"], baselines, strict=True):
        n = v["devices"]
        notif = v.get("press_to_first_notification") or {}
        rec = v["press_to_received"]
        brec = b["press_to_received"] if b else {}
        base = "bare paho echo, press → `alert.received`: " + _pair(
            brec.get("p50_ms"), brec.get("p99_ms"), "ms"
        )
        rows.append(
            (
                f"load: press → first notification, {n:,} devices connected, p50 / p99",
                _pair(notif.get("p50_ms"), notif.get("p99_ms"), "ms"),
                base if b else "-",
                f"{notif.get('count', 0)} alerts, {notif.get('missing', '?')} not notified, "
                f"{v['alerts_lost']} lost, {v['duplicate_receipts']} duplicate receipts",
            )
        )
        lost_b = b["alerts_lost"] if b else "-"
        rows.append(
            (
                f"load: press → `alert.received`, {n:,} devices connected, p50 / p99",
                _pair(rec.get("p50_ms"), rec.get("p99_ms"), "ms"),
                base if b else "-",
                f"×{_f(_ratio(rec.get('p50_ms'), brec.get('p50_ms')))} at p50; all connected "
                f"in {_f(v['connect_s'])} s; lost {v['alerts_lost']} (baseline {lost_b})",
            )
        )
        if v.get("osmand"):
            o = v["osmand"]
            rows.append(
                (
                    f"load: Traccar Client SOS → HTTP 200 (stored), {o['phones']} phones, "
                    "p50 / p99",
                    _pair(o.get("sos_200_p50_ms"), o.get("sos_200_p99_ms"), "ms"),
                    "-",
                    f"{o['sos']} SOS, {o['sos_failed']} not answered 200; {o['positions']} "
                    f"positions, {o['positions_refused']} refused",
                )
            )
        if v.get("buttons"):
            bt = v["buttons"]
            st = bt["press_to_stored"]
            rows.append(
                (
                    f"load: MQTT button press → stored, {bt['buttons']} buttons, p50 / p99",
                    _pair(st.get("p50_ms"), st.get("p99_ms"), "ms"),
                    "-",
                    f"{bt['stored']} stored for {bt['presses']} presses, {bt['lost']} lost",
                )
            )
        if v.get("server_log"):
            logs = v["server_log"]
            rows.append(
                (
                    "load: server log lines per minute (JSON), "
                    + " / ".join(logs)
                    + f", {n:,} devices",
                    " / ".join(f"{r['per_minute']:.1f}" for r in logs.values()),
                    "-",
                    "lines: " + " / ".join(str(r["lines"]) for r in logs.values()),
                )
            )
    return rows


def rows_dispatch(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    b = d.get("baseline") or {}
    label = DB_LABEL
    for db, v in d["vigie"].items():
        base = "in-memory timer, no database: " + _pair(
            b.get("late_p50_ms"), b.get("late_p99_ms"), "ms"
        )
        rows.append(
            (
                f"dispatch: step lateness, {v['open']:,} open escalations, {label[db]}, p50 / p99",
                _pair(v["late_p50_ms"], v["late_p99_ms"], "ms"),
                base if b else "-",
                f"max {_f(v['late_max_ms'], '.0f')} ms; {v['steps_due']} steps due, "
                f"{v['steps_missing']} not sent, {v['dup']} duplicates",
            )
        )
        base_sms = "in-memory timer: " + _pair(
            b.get("start_to_sms_p50_ms"), b.get("start_to_sms_p99_ms"), "ms"
        )
        rows.append(
            (
                f"dispatch: start → SMS request, {label[db]}, p50 / p99",
                _pair(v["start_to_sms_p50_ms"], v["start_to_sms_p99_ms"], "ms"),
                base_sms if b else "-",
                f"{v['alerts_started']} alerts started in {d['config']['window_s']:g} s",
            )
        )
    return rows


def rows_memory(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for r in d["results"]:
        per, m = r["per_device_bytes"], r["memory_kib"]

        def kib(v: float | None) -> str:
            return "-" if v is None else f"{v / 1024:.1f} KiB"

        srv, brk, sim = per["server"], per["broker"], per["simulator"]
        rows.append(
            (
                f"memory per connected device, {r['connected']:,} devices: vigie server (RSS)",
                kib(srv["rss_bytes"]),
                f"Mosquitto: {kib(brk['rss_bytes'])}",
                f"×{_f(_ratio(srv['rss_bytes'], brk['rss_bytes']))} the broker; simulator "
                f"{kib(sim['rss_bytes'])}; anonymous RSS server / broker "
                f"{kib(srv['rss_anon_bytes'])} / {kib(brk['rss_anon_bytes'])}; server RSS "
                f"{m['zero']['server']['rss_kib'] / 1024:.0f} → "
                f"{m['connected']['server']['rss_kib'] / 1024:.0f} MiB",
            )
        )
    return rows


def rows_abuse(d: dict[str, Any]) -> list[Row]:
    q = d["quiet"]
    quiet = "quiet: " + _pair(q["p50_ms"], q["p99_ms"], "ms", ".2f")
    rows: list[Row] = []
    for key, label in (
        ("wrong_pins", f"{d['config']['wrong_pins']} wrong-PIN cancels from one device"),
        ("flood", f"{d['flood']['flood_alerts']:,} SOS from one device as fast as it can"),
    ):
        r = d[key]
        note = f"×{_f(_ratio(r['p50_ms'], q['p50_ms']), '.2f')} at p50, max {_f(r['max_ms'])} ms"
        if key == "flood":
            note += f"; {r['flood_sms_to_referent']} SMS to the referent for the flood"
        rows.append(
            (
                f"abuse: another device's press → `alert.received` during {label}, p50 / p99",
                _pair(r["p50_ms"], r["p99_ms"], "ms", ".2f"),
                quiet,
                note,
            )
        )
    o, n = d["first_sms_open"], d["first_sms_none_open"]
    rows.append(
        (
            f"abuse: press → first SMS request with {o['open_alerts']:,} open alerts holding "
            "codes on one number, p50 / p99",
            _pair(o["p50_ms"], o["p99_ms"], "ms"),
            "none open: " + _pair(n["p50_ms"], n["p99_ms"], "ms"),
            f"×{_f(_ratio(o['p50_ms'], n['p50_ms']), '.2f')} at p50",
        )
    )
    return rows


def rows_cluster(d: dict[str, Any]) -> list[Row]:
    runs = d["runs"]
    rows: list[Row] = []
    for kind, label in (("rabbitmq", "RabbitMQ 3 nodes, quorum queue"), ("mosquitto", "")):
        for r in (x for x in runs if x["broker"] == kind):
            other = next(
                (x for x in runs if x["broker"] != kind and x["servers"] == r["servers"]), None
            )
            if kind == "mosquitto":
                continue  # shown as the baseline of the RabbitMQ row
            base = other["alerts_per_s"] if other else None
            rows.append(
                (
                    f"cluster: {r['servers']} server(s), {label} ({d['devices']} devices, "
                    "PostgreSQL): alerts/s stored, heartbeats/s",
                    f"{_f(r['alerts_per_s'], '.0f')}/s, {_f(r['heartbeats_per_s'], '.0f')}/s",
                    "one Mosquitto: "
                    + (
                        f"{_f(other['alerts_per_s'], '.0f')}/s, "
                        f"{_f(other['heartbeats_per_s'], '.0f')}/s"
                        if other
                        else "-"
                    ),
                    f"×{_f(_ratio(r['alerts_per_s'], base), '.2f')} alerts",
                )
            )
    return rows


def rows_failover(d: dict[str, Any]) -> list[Row]:
    runs = {r["mode"]: r for r in d["runs"]}
    rescue, none = runs.get("rescue"), runs.get("none")
    if rescue is None:
        return []

    def worst(r: dict[str, Any] | None) -> Any:
        return None if r is None else r["press_to_stored"]["max_ms"]

    def fig(r: dict[str, Any] | None) -> str:
        if r is None:
            return "-"
        x = r["press_to_stored"]
        return (
            f"p50 {_f(x['p50_ms'], '.0f')} ms, p95 {_f(x['p95_ms'], '.0f')} ms, "
            f"max {_f(x['max_ms'], '.0f')} ms, {_f(x['over_2s'], '.0f')} over 2 s"
        )

    return [
        (
            f"failover: 3 servers on $share, one SIGKILLed ({rescue['devices']} devices, "
            f"{rescue['alerts_after_kill']} alerts after the kill): press → stored, session rescue",
            fig(rescue),
            "no rescue (device re-sends): " + fig(none),
            f"×{_f(_ratio(worst(none), worst(rescue)), '.1f')} at max",
        )
    ]


BUILDERS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "startup": rows_startup,
    "ingest": rows_ingest,
    "writer": rows_writer,
    "geo": rows_geo,
    "load": rows_load,
    "dispatch": rows_dispatch,
    "memory": rows_memory,
    "abuse": rows_abuse,
    "cluster": rows_cluster,
    "failover": rows_failover,
}


def summary_rows(parts: list[Part]) -> list[Row]:
    rows: list[Row] = []
    for p in parts:
        if p.data is None:
            rows.append((p.name, "**failed**", "-", p.error or "?"))
            continue
        try:
            rows.extend(BUILDERS[p.name](p.data))
        except Exception as exc:
            rows.append((p.name, "**no figures**", "-", f"{type(exc).__name__}: {exc}"))
    return rows


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render(
    parts: list[Part],
    info: dict[str, Any],
    argv: list[str],
    quick: bool,
    total_s: float,
    out: Path,
) -> str:
    mach = (
        f'`nproc` = {info["nproc"]}, CPU "{info["cpu"]}", {info["ram_gib"]} GiB RAM, '
        f"Python {info['python']}, Linux {info['kernel']}, "
        f"Mosquitto {info['mosquitto'] or 'not installed'}"
    )
    if info.get("postgresql"):
        mach += f", PostgreSQL {info['postgresql']} (dispatch)"
    load_avg = ", ".join(f"{x:.2f}" for x in info["loadavg"])
    lines = [
        f"## Benchmark run {info['date_utc']}{' (quick smoke check)' if quick else ''}",
        "",
        f"Machine: {mach}. Load average at the start: {load_avg}.",
        "",
        f"Command: `{shlex.join(['./benchmarks/run', *argv])}` — {total_s / 60:.1f} min in all. "
        f"JSON and logs: `{out}`.",
        "",
        "| benchmark | Vigie | baseline | ratio / notes |",
        "|---|---|---|---|",
    ]
    for r in summary_rows(parts):
        lines.append("| " + " | ".join(_md(x) for x in r) + " |")
    lines += ["", "Parts (elapsed, command):", ""]
    for p in parts:
        state = "" if p.error is None else f" — **failed: {p.error}**"
        took = "-" if p.elapsed_s is None else f"{p.elapsed_s:.0f} s"
        lines.append(f"- {p.name}: {took}, `{p.shown()}`{state}")
        for note in p.notes:
            lines.append(f"  ({note})")
    return "\n".join(lines) + "\n"


def append_results(results: Path, section: str) -> None:
    text = results.read_text(encoding="utf-8") if results.exists() else "# Benchmark results\n"
    if not text.endswith("\n"):
        text += "\n"
    results.write_text(text + "\n\n" + section, encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(
        prog="benchmarks/run", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, short durations")
    ap.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts among {', '.join(PARTS)} (default: all)",
    )
    ap.add_argument(
        "--append",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="append a section to RESULTS.md (default: yes for a full run, no with --quick)",
    )
    ap.add_argument("--out", type=Path, default=None, help="folder for JSON and logs")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    argv = sys.argv[1:]
    args = ap.parse_args(argv)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in only if x not in PARTS]
    if unknown or not only:
        ap.error(f"--only: unknown part(s) {', '.join(unknown)}; choose among {', '.join(PARTS)}")
    args.only = [p for p in PARTS if p in only]  # always in the documented order
    append = args.append if args.append is not None else not args.quick

    if not os.environ.get("VIGIE_GEO_DIR"):
        default_geo = REPO.parent / "shared" / "geo"
        if default_geo.is_dir():
            os.environ["VIGIE_GEO_DIR"] = str(default_geo)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    name = f"vigie-benchmarks-{stamp}{'-quick' if args.quick else ''}"
    out = args.out or Path(tempfile.gettempdir()) / name
    out.mkdir(parents=True, exist_ok=True)

    info = machine_info()
    pg = False
    if "dispatch" in args.only and not args.quick:
        version = postgres_version(PG_ADMIN_DSN)
        if version:
            pg = True
            info["postgresql"] = version
    parts = plan_parts(args, out, pg)
    print(
        f"# Vigie benchmarks{' (quick)' if args.quick else ''}: {', '.join(args.only)}\n"
        f"# {info['date_utc']}, {info['nproc']} CPU {info['cpu']}, {info['ram_gib']} GiB, "
        f"Python {info['python']}, Linux {info['kernel']}, Mosquitto {info['mosquitto']}"
        + (f", PostgreSQL {info['postgresql']}" if info.get("postgresql") else "")
        + f"\n# VIGIE_GEO_DIR={os.environ.get('VIGIE_GEO_DIR', '(unset)')}; output in {out}; "
        f"RESULTS.md: {'append' if append else 'not touched'}",
        flush=True,
    )
    t0 = time.monotonic()
    for part in parts:
        run_part(part, out / f"{part.name}.log")
    total = time.monotonic() - t0

    section = render(parts, info, argv, args.quick, total, out)
    (out / "summary.md").write_text(section, encoding="utf-8")
    (out / "summary.json").write_text(
        json.dumps(
            {
                "machine": info,
                "argv": argv,
                "quick": args.quick,
                "total_s": total,
                "parts": [
                    {
                        "name": p.name,
                        "command": p.shown(),
                        "elapsed_s": p.elapsed_s,
                        "error": p.error,
                        "json": str(p.json_path),
                    }
                    for p in parts
                ],
                "rows": summary_rows(parts),
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    print("\n" + section)
    print("Elapsed: " + ", ".join(f"{p.name} {_f(p.elapsed_s, '.0f')} s" for p in parts), end="")
    print(f"; total {total:.0f} s")
    if append:
        append_results(args.results, section)
        print(f"Appended to {args.results}")
    else:
        print(f"{args.results} not changed (summary in {out / 'summary.md'})")
    return 0 if all(p.error is None for p in parts) else 1


if __name__ == "__main__":
    sys.exit(main())
