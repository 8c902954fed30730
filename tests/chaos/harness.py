"""The chaos harness: a whole Vigie (real Mosquitto, real ``vigie server`` processes, a database,
the official ``twilio`` client against the fake Twilio) under a simulated fleet, with faults
injected while alerts are in flight, then an exact account of what was stored and sent.

The account is the point: every alert pressed is stored exactly once, every escalation step is
sent exactly once (one accepted provider request per planned step, none unplanned), every
step due has run. Figures are printed so that a run can be read, not only passed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from alert_server.alerts.models import Alert, AlertEvent
from alert_server.db import make_engine
from device_sim.device import BrokerTarget
from device_sim.geo import CommuneIndex
from device_sim.load import LoadConfig, LoadReport, LoadRun, load_passwords, percentile
from device_sim.provision import wait_credentials_active, write_broker_passwords
from dispatch.models import KIND_ALERT, SENT, Escalation, Notification
from tests.fakes.fake_twilio import FakeTwilio
from tests.support import ServerProcess, server_env, wait_until
from vigie.brokers.mosquitto import LocalMosquitto, free_port, wait_for_port
from vigie.timeutil import as_utc

# Short steps, so that every escalation runs all of them within the test: first SMS at once,
# a call after 3 s, the second contact by SMS after 6 s; no repeat (exhausted after step 3).
DIRECTORY = """\
version: 1
departements:
  "13":
    PN:
      - {name: "Référent santé DDSP 13 (chaos)", phone: "+33465710013"}
      - {name: "CIC Marseille (chaos)", phone: "+33465710113"}
    GN:
      - {name: "Référent santé groupement 13 (chaos)", phone: "+33465710213"}
      - {name: "CORG 13 (chaos)", phone: "+33465710313"}
  "84":
    PN:
      - {name: "Référent santé DDSP 84 (chaos)", phone: "+33465710084"}
      - {name: "CIC Avignon (chaos)", phone: "+33465710184"}
    GN:
      - {name: "Référent santé groupement 84 (chaos)", phone: "+33465710284"}
      - {name: "CORG 84 (chaos)", phone: "+33465710384"}
national_fallback:
  - {name: "Permanence nationale (chaos)", phone: "+33199000000"}
  - {name: "Permanence nationale bis (chaos)", phone: "+33199000001"}
escalation:
  steps:
    - {after_s: 0, contact: 1, channels: [sms]}
    - {after_s: 3, contact: 1, channels: [voice]}
    - {after_s: 6, contact: 2, channels: [sms]}
  repeat: 0
"""
STEPS_PER_CHAIN = 3


def geo_subset(geo_dir: Path, into: Path) -> Path:
    """Only the départements layer (routing needs no more; importing communes takes ~10 s)."""
    into.mkdir(parents=True, exist_ok=True)
    link = into / "departements-avec-outre-mer.geojson"
    if not link.exists():
        link.symlink_to(geo_dir / "departements-avec-outre-mer.geojson")
    return into


# --------------------------------------------------------------------------------------------
# A PostgreSQL of the test's own, so that it can be crashed and restarted.
# --------------------------------------------------------------------------------------------
def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for d in versions:
        if (d / name).exists():
            return str(d / name)
    raise RuntimeError(f"PostgreSQL's {name} not found (apt-get install postgresql)")


@dataclass
class OwnPostgres:
    """``initdb`` + ``postgres`` in a temporary folder on a free port (as the ``postgres``
    account when run as root, which PostgreSQL refuses to run as)."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vigie-chaos-pg-")))
    port: int = 0

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://vigie@127.0.0.1:{self.port}/postgres"

    def _as_owner(self, *cmd: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *cmd]
        return list(cmd)

    def init(self) -> OwnPostgres:
        self.port = self.port or free_port()
        self.root.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            self._as_owner(
                _pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "vigie",
                "-E", "UTF8", "--no-sync", "--locale=C.UTF-8",
            ),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        return self

    def start(self) -> OwnPostgres:
        subprocess.run(
            self._as_owner(
                _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"), "-w",
                "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                "-c max_connections=200 -c fsync=off",
                "start",
            ),
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        wait_for_port(self.port, 30)
        return self

    def stop(self, mode: str = "fast") -> None:
        """``immediate`` is a crash: no checkpoint, recovery at the next start."""
        subprocess.run(
            self._as_owner(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"),
            capture_output=True,
            timeout=60,
        )

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# A small filesystem that can be filled up: SQLite's "disk full".
# --------------------------------------------------------------------------------------------
@dataclass
class SmallDisk:
    mountpoint: Path
    size_mib: int = 64
    _filler: Path | None = None

    def mount(self) -> SmallDisk:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_mib}m", "tmpfs", str(self.mountpoint)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"cannot mount a tmpfs for the disk-full case: {out.stderr}")
        return self

    def fill(self, sqlite_db: Path | None = None) -> int:
        """Write zeros until the filesystem refuses (ENOSPC); returns the bytes written.

        With ``sqlite_db``, its write-ahead log is first checkpointed and truncated: a WAL file
        keeps its size and is rewritten in place, so without this the next commits would not
        need a single new block and the full disk would go unnoticed."""
        if sqlite_db is not None:
            conn = sqlite3.connect(sqlite_db, timeout=10)
            try:
                for _ in range(50):
                    busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                    if not busy:
                        break
                    time.sleep(0.05)
            finally:
                conn.close()
        self._filler = self.mountpoint / "filler"
        chunk = b"\0" * (256 * 1024)
        written = 0
        with self._filler.open("wb", buffering=0) as fh:
            while True:
                try:
                    written += fh.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
            # The last partial blocks, byte by byte is too slow: smaller chunks.
            for size in (4096, 512, 1):
                while True:
                    try:
                        written += fh.write(b"\0" * size)
                    except OSError:
                        break
        return written

    def free(self) -> None:
        if self._filler is not None:
            self._filler.unlink(missing_ok=True)
            self._filler = None

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)


@dataclass
class SqliteLock:
    """Another process's write transaction holding SQLite's lock (a backup tool, a
    ``sqlite3`` shell left open): the server's writers queue on their busy time-out."""

    path: Path
    _conn: sqlite3.Connection | None = None

    def take(self) -> None:
        self._conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        self._conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self._conn is not None:
            self._conn.execute("ROLLBACK")
            self._conn.close()
            self._conn = None


# --------------------------------------------------------------------------------------------
# The stack.
# --------------------------------------------------------------------------------------------
@dataclass
class ChaosStack:
    workdir: Path
    broker: LocalMosquitto
    db_url: str
    twilio: FakeTwilio
    geo_dir: Path
    servers: list[ServerProcess] = field(default_factory=list)

    def server_env(self, index: int, port: int, **extra: str) -> dict[str, str]:
        directory = self.workdir / "referents.yaml"
        if not directory.exists():
            directory.write_text(DIRECTORY, encoding="utf-8")
        env = server_env(
            self.broker,
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
            # A send in flight when a server dies is taken over after 20 s, not 30 s.
            VIGIE_DISPATCH_LEASE_S="20",
        )
        env.update(extra)
        return env

    def start_servers(self, n: int = 1, **extra: str) -> list[ServerProcess]:
        for i in range(n):
            port = free_port()
            env = self.server_env(i, port, **extra)
            server = ServerProcess(env, self.workdir / f"server-{i}.log", port=port)
            self.servers.append(server)
        self.twilio.webhook_base = self.servers[0].url
        # The first applies the migrations and imports the data; the others start together.
        self.servers[0].start()
        for s in self.servers[1:]:
            s.start(wait_healthy=False)
        for s in self.servers[1:]:
            s.wait_healthy()
        return self.servers

    def stop(self) -> None:
        for s in self.servers:
            with contextlib.suppress(Exception):
                s.stop()


@dataclass
class Fault:
    """``action`` runs ``at_s`` seconds after the first alert may be pressed."""

    at_s: float
    name: str
    action: Callable[[], object]


@dataclass
class FaultLog:
    entries: list[tuple[float, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class RunHandle:
    """The load run, for faults that act on the devices themselves."""

    run: LoadRun | None = None

    def press_on_all_devices(self, every: int = 4) -> int:
        """Press on every ``every``-th device, connected or not (a device without its broker
        keeps the alert in its queue and sends it, same ``alert_id``, once back)."""
        assert self.run is not None
        devices = self.run.devices[::every]
        for dev in devices:
            self.run._pressed.append((dev, dev.press("sos")))
        return len(devices)


def run_load_with_faults(
    stack: ChaosStack,
    cfg: LoadConfig,
    faults: list[Fault],
    communes: CommuneIndex,
    handle: RunHandle | None = None,
) -> tuple[LoadReport, list[str], FaultLog]:
    """The simulator's load mode against the stack while ``faults`` fire on schedule.

    Returns the report, the ids of every alert pressed, and what was done when.
    """
    passwords = load_passwords(cfg)
    write_broker_passwords(stack.broker.passwd_file, passwords, reload=stack.broker.reload)
    first = next(iter(passwords))
    assert wait_credentials_active("127.0.0.1", stack.broker.port, first, passwords[first])
    run = LoadRun(cfg, BrokerTarget(port=stack.broker.port), passwords, index=communes)
    if handle is not None:
        handle.run = run
    log = FaultLog()

    def fire() -> None:
        while run.connect_s is None and not run._stop.is_set():
            time.sleep(0.05)
        t0 = time.monotonic()
        for fault in sorted(faults, key=lambda f: f.at_s):
            time.sleep(max(0.0, t0 + fault.at_s - time.monotonic()))
            try:
                fault.action()
                log.entries.append((time.monotonic() - t0, fault.name))
            except Exception as exc:  # reported, and fails the test afterwards
                log.errors.append(f"{fault.name}: {type(exc).__name__}: {exc}")

    chaos = threading.Thread(target=fire, name="chaos", daemon=True)
    chaos.start()
    report = run.run()
    chaos.join(120)
    pressed = [r.alert_id for _, r in run._records()]
    return report, pressed, log


# --------------------------------------------------------------------------------------------
# The account.
# --------------------------------------------------------------------------------------------
@dataclass
class Account:
    pressed: int
    stored: int
    stored_twice: int
    missing: list[str]
    unexpected_alerts: list[str]
    received_events: Counter[str]
    degraded: list[str]
    escalations: int
    not_dispatched: list[str]
    steps_planned: int
    steps_sent: int
    steps_not_sent: list[str]
    provider_accepted: int
    provider_requests: int
    unplanned_sends: list[str]
    sids_sent_twice: list[str]
    attempts_max: int
    retried_steps: int
    lateness_ms: dict[str, float | None]

    def problems(self) -> list[str]:
        out = []
        if self.missing:
            out.append(f"{len(self.missing)} alert(s) pressed but not stored: {self.missing[:5]}")
        if self.unexpected_alerts:
            out.append(f"alerts stored that nobody pressed: {self.unexpected_alerts[:5]}")
        if self.stored_twice:
            out.append(f"{self.stored_twice} alert(s) stored more than once")
        twice = [a for a, n in self.received_events.items() if n != 1]
        if twice:
            out.append(f"'received' events not exactly once for {twice[:5]}")
        if self.degraded:
            out.append(f"alerts stored degraded (ingest_error): {self.degraded[:5]}")
        if self.not_dispatched:
            out.append(f"alerts never escalated: {self.not_dispatched[:5]}")
        if self.steps_not_sent:
            out.append(f"steps due but not sent: {self.steps_not_sent[:5]}")
        if self.unplanned_sends:
            out.append(
                f"provider requests accepted for no planned step: {self.unplanned_sends[:5]}"
            )
        if self.sids_sent_twice:
            out.append(f"steps sent twice: {self.sids_sent_twice[:5]}")
        return out

    def summary(self, title: str, report: LoadReport, faults: FaultLog) -> str:
        r = report.press_to_received
        lat = self.lateness_ms

        def ms(v: float | None) -> str:
            return "—" if v is None else f"{v:.0f}"

        lines = [
            f"== chaos: {title} ==",
            "faults: " + ", ".join(f"{name} at {t:.1f} s" for t, name in faults.entries),
            f"devices {report.devices}, reconnects {report.reconnects}, "
            f"device resends {report.resends}",
            f"alerts: pressed {self.pressed}, stored {self.stored}, lost {len(self.missing)}, "
            f"stored twice {self.stored_twice}, degraded {len(self.degraded)}",
            f"press → alert.received: p50 {ms(r['p50_ms'])} ms, p99 {ms(r['p99_ms'])} ms, "
            f"max {ms(r['max_ms'])} ms (device receipts lost {report.alerts_lost}, "
            f"duplicate receipts {report.duplicate_receipts})",
            f"escalations {self.escalations}; steps planned {self.steps_planned}, "
            f"sent {self.steps_sent}, not sent {len(self.steps_not_sent)}, "
            f"sent twice {len(self.sids_sent_twice)}, unplanned sends {len(self.unplanned_sends)}",
            f"provider: {self.provider_requests} requests, {self.provider_accepted} accepted; "
            f"steps retried {self.retried_steps}, most attempts on one step {self.attempts_max}",
            f"step lateness (sent − due): p50 {ms(lat['p50'])} ms, p99 {ms(lat['p99'])} ms, "
            f"max {ms(lat['max'])} ms",
        ]
        return "\n".join(lines)


def _chunks(ids: list[str], n: int = 400) -> Iterator[list[str]]:
    for i in range(0, len(ids), n):
        yield ids[i : i + n]


def settle(db_url: str, pressed: list[str], timeout_s: float = 120.0) -> None:
    """Wait until every pressed alert is stored and has run all its steps (or the time is up:
    the account then says what is missing)."""
    engine = make_engine(db_url)
    n = Notification.__table__  # type: ignore[attr-defined]
    e = Escalation.__table__  # type: ignore[attr-defined]
    a = Alert.__table__  # type: ignore[attr-defined]

    def done() -> bool:
        try:
            with engine.connect() as conn:
                stored = conn.execute(select(func.count()).select_from(a)).scalar_one()
                # A press that joined its device's running incident is not escalated again.
                merged = conn.execute(
                    select(func.count()).select_from(a).where(a.c.incident_of.is_not(None))
                ).scalar_one()
                escalations = conn.execute(select(func.count()).select_from(e)).scalar_one()
                pending = conn.execute(
                    select(func.count())
                    .select_from(n)
                    .where(n.c.kind == KIND_ALERT, n.c.status != SENT)
                ).scalar_one()
        except Exception:
            return False
        return bool(
            stored >= len(pressed) and escalations + merged >= len(pressed) and pending == 0
        )

    try:
        with contextlib.suppress(AssertionError):
            wait_until(done, timeout_s, "every alert stored and every step sent")
    finally:
        engine.dispose()


def account(db_url: str, twilio: FakeTwilio, pressed: list[str]) -> Account:
    engine = make_engine(db_url)
    a = Alert.__table__  # type: ignore[attr-defined]
    ev = AlertEvent.__table__  # type: ignore[attr-defined]
    n = Notification.__table__  # type: ignore[attr-defined]
    e = Escalation.__table__  # type: ignore[attr-defined]
    try:
        with engine.connect() as conn:
            alerts = conn.execute(select(a.c.alert_id, a.c.flags, a.c.incident_of)).all()
            received = Counter(
                row[0] for row in conn.execute(select(ev.c.alert_id).where(ev.c.type == "received"))
            )
            escalated = {row[0] for row in conn.execute(select(e.c.alert_id))}
            notes = conn.execute(
                select(
                    n.c.id, n.c.alert_id, n.c.kind, n.c.step_no, n.c.status, n.c.provider_sid,
                    n.c.attempts, n.c.due_at, n.c.sent_at,
                )
            ).all()  # fmt: skip
    finally:
        engine.dispose()
    stored_ids = Counter(row[0] for row in alerts)
    flags = {row[0]: (json.loads(row[1]) if isinstance(row[1], str) else row[1]) for row in alerts}
    pressed_set = set(pressed)
    # A press that joined its device's running incident is escalated through that incident.
    incident = {row[0]: row[2] for row in alerts}
    escalated |= {k for k, first in incident.items() if first is not None and first in escalated}
    alert_notes = [x for x in notes if x.kind == KIND_ALERT]
    db_sids = Counter(x.provider_sid for x in notes if x.provider_sid)
    with twilio.lock:
        accepted = [s.sid for s in twilio.sms] + [c.sid for c in twilio.calls]
        requests = len(twilio.requests)
    lateness = [
        (as_utc(x.sent_at) - as_utc(x.due_at)) / timedelta(milliseconds=1)
        for x in alert_notes
        if x.sent_at is not None
    ]
    return Account(
        pressed=len(pressed),
        stored=sum(1 for x in stored_ids if x in pressed_set),
        stored_twice=sum(1 for c in stored_ids.values() if c > 1),
        missing=sorted(pressed_set - set(stored_ids)),
        unexpected_alerts=sorted(set(stored_ids) - pressed_set),
        received_events=Counter({k: received.get(k, 0) for k in pressed_set}),
        degraded=sorted(k for k, f in flags.items() if "ingest_error" in (f or [])),
        escalations=len({k for k in escalated if incident.get(k) is None}),
        not_dispatched=sorted(pressed_set - escalated),
        steps_planned=len(alert_notes),
        steps_sent=sum(1 for x in alert_notes if x.status == SENT),
        steps_not_sent=[
            f"{x.alert_id}#{x.step_no}:{x.status}" for x in alert_notes if x.status != SENT
        ],
        provider_accepted=len(accepted),
        provider_requests=requests,
        unplanned_sends=sorted(set(accepted) - set(db_sids)),
        sids_sent_twice=sorted(
            [sid for sid, c in db_sids.items() if c > 1]
            + [sid for sid, c in Counter(accepted).items() if c > 1]
        ),
        attempts_max=max((x.attempts for x in alert_notes), default=0),
        retried_steps=sum(1 for x in alert_notes if x.attempts > 1),
        lateness_ms={
            "p50": percentile(lateness, 50),
            "p99": percentile(lateness, 99),
            "max": max(lateness) if lateness else None,
        },
    )


def check(title: str, stack: ChaosStack, report: LoadReport, pressed: list[str], log: FaultLog,
          *, settle_s: float = 120.0) -> Account:  # fmt: skip
    """Settle, account, print the figures, and fail on any broken promise."""
    assert not log.errors, log.errors
    settle(stack.db_url, pressed, settle_s)
    acc = account(stack.db_url, stack.twilio, pressed)
    print("\n" + acc.summary(title, report, log))
    problems = acc.problems()
    assert acc.pressed > 0, "no alert was pressed"
    assert report.alerts_lost == 0, f"devices never got alert.received: {report.lost_alert_ids}"
    # Every escalation plans its chain (a press that joined its device's running incident is
    # escalated through that incident, not on its own).
    assert acc.escalations > 0 and acc.steps_planned >= STEPS_PER_CHAIN * acc.escalations
    assert not problems, "\n".join(problems)
    return acc
