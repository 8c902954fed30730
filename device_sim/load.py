"""Load mode: N simulated devices (10 to 10,000 in one process), heartbeats, random alerts.

Devices are nurses on rounds and pharmacies at fixed sites, spread over real communes. They
connect at a bounded rate (a connect storm would only measure the broker's accept queue),
send heartbeats every ``hb_interval_s`` and, fleet-wide, alerts at ``alert_rate`` per second
(a Poisson process over connected devices). At the end the run drains (waits for every
outstanding ``alert.received``) and reports:

- press → ``alert.received`` latency (p50/p90/p99/max), measured on the device;
- press → first notification at the telephony side, when a source of those times is given
  (``FirstNotificationSource``: a callable or ``hooks.http_first_notifications(url)``);
- alerts lost (pressed, never confirmed: must be 0) and duplicate receipts (``alert.received``
  for one alert beyond the number of times the device sent it); with an ``AlertStore``, also
  alerts missing from the store and stored more than once;
- the simulator's own timer lateness, so a slow simulator is not mistaken for a slow server.
"""

from __future__ import annotations

import json
import math
import random
import resource
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from device_sim.device import BrokerTarget, DeviceConfig, SimDevice
from device_sim.geo import CommuneIndex, FixedSite, NurseRound
from device_sim.hooks import AlertStore, FirstNotificationSource
from device_sim.reactor import Reactor
from vigie.timeutil import as_utc


@dataclass
class LoadConfig:
    devices: int = 100
    hb_interval_s: float = 30.0
    alert_rate: float = 1.0  # alerts per second, whole fleet
    duration_s: float = 30.0
    drain_s: float = 30.0  # after the run, wait up to this long for outstanding receipts
    shards: int = 0  # 0: one per 2,500 devices, at most 4
    connect_rate: float = 1000.0  # new connections per second
    max_connecting: int = 500  # connections awaiting CONNACK at any time
    connect_timeout_s: float = 120.0
    pharmacy_share: float = 0.2
    silent_share: float = 0.1
    departements: list[str] = field(default_factory=list)  # empty: all of metropolitan France
    id_prefix: str = "load-"
    seed: int = 1
    time_scale: float = 1.0
    keepalive_s: int = 60
    hb_qos: int = 0
    progress_interval_s: float = 1.0


def device_ids(cfg: LoadConfig) -> list[str]:
    width = max(5, len(str(cfg.devices)))
    return [f"{cfg.id_prefix}{i:0{width}d}" for i in range(cfg.devices)]


def load_passwords(cfg: LoadConfig) -> dict[str, str]:
    """One password per device, derived from the seed (test credentials, not secrets)."""
    rng = random.Random(f"passwords:{cfg.seed}")
    return {d: f"{rng.getrandbits(96):024x}" for d in device_ids(cfg)}


def percentile(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


def _dist(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "count": len(values),
        "p50_ms": percentile(values, 50),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values) if values else None,
    }


@dataclass
class LoadReport:
    config: dict[str, Any]
    started_at: str
    devices: int
    connected_peak: int
    connect_s: float | None  # time until every device was connected
    connect_failures: int
    reconnects: int
    heartbeats: int
    alerts_pressed: int
    alerts_received: int
    alerts_lost: int
    duplicate_receipts: int
    resends: int
    press_to_received: dict[str, float | None]
    press_to_first_notification: dict[str, Any] | None
    store_check: dict[str, int] | None
    simulator_lag: dict[str, float]
    run_s: float
    cpu_s: float
    max_rss_mib: float
    lost_alert_ids: list[str] = field(default_factory=list)
    # Wall-clock [start, end] (epoch seconds) of each phase: connect, load, drain (to read the
    # server's own figures, e.g. its log lines, over the same periods).
    phases: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        def ms(v: float | None) -> str:
            return "—" if v is None else f"{v:.1f}"

        r = self.press_to_received
        lines = [
            f"Boîtiers : {self.devices} (connectés au plus : {self.connected_peak}, "
            f"tous connectés en {self.connect_s:.1f} s)"
            if self.connect_s is not None
            else f"Boîtiers : {self.devices} (connectés au plus : {self.connected_peak})",
            f"Battements de cœur : {self.heartbeats}   reconnexions : {self.reconnects}",
            f"Alertes : {self.alerts_pressed} envoyées, {self.alerts_received} confirmées, "
            f"{self.alerts_lost} perdues, {self.duplicate_receipts} accusés en double, "
            f"{self.resends} renvois",
            f"Appui → alert.received : p50 {ms(r['p50_ms'])} ms, p90 {ms(r['p90_ms'])} ms, "
            f"p99 {ms(r['p99_ms'])} ms, max {ms(r['max_ms'])} ms",
        ]
        n = self.press_to_first_notification
        if n is not None:
            lines.append(
                f"Appui → première notification : p50 {ms(n['p50_ms'])} ms, "
                f"p99 {ms(n['p99_ms'])} ms, max {ms(n['max_ms'])} ms "
                f"({n['count']} alertes, {n.get('missing', 0)} sans notification)"
            )
        if self.store_check is not None:
            s = self.store_check
            lines.append(
                f"Stockage : {s['stored']} alertes, {s['missing']} manquantes, "
                f"{s['duplicates']} en double"
            )
        lag = self.simulator_lag
        lines.append(
            f"Retard du simulateur : p50 {lag['p50_ms']:.1f} ms, p99 {lag['p99_ms']:.1f} ms, "
            f"max {lag['max_ms']:.1f} ms   CPU {self.cpu_s:.1f} s, "
            f"mémoire {self.max_rss_mib:.0f} Mio"
        )
        return "\n".join(lines)


class Progress:
    """One line rewritten in place on a terminal; plain periodic lines otherwise."""

    def __init__(self, stream: TextIO | None = None, plain_every_s: float = 5.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.plain_every_s = plain_every_s
        self._last_plain = 0.0

    def update(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
            return
        now = time.monotonic()
        if now - self._last_plain >= self.plain_every_s:
            self._last_plain = now
            self.stream.write(text + "\n")
            self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class LoadRun:
    def __init__(
        self,
        cfg: LoadConfig,
        broker: BrokerTarget,
        passwords: dict[str, str],
        *,
        index: CommuneIndex | None = None,
        first_notifications: FirstNotificationSource | None = None,
        store: AlertStore | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.cfg = cfg
        self.broker = broker
        self.passwords = passwords
        self.index = index or CommuneIndex.load()
        self.first_notifications = first_notifications
        self.store = store
        self.progress = progress
        shards = cfg.shards or max(1, min(4, math.ceil(cfg.devices / 2500)))
        self.reactor = Reactor(shards)
        self.rng = random.Random(cfg.seed)
        self.devices: list[SimDevice] = []
        self.connected_peak = 0
        self.connect_s: float | None = None
        self._stop = threading.Event()
        self._pressed: list[tuple[SimDevice, str]] = []

    # -- build -----------------------------------------------------------------------------
    def _build(self) -> None:
        start = datetime.now(UTC)
        config = DeviceConfig(
            hb_interval_s=self.cfg.hb_interval_s,
            hb_qos=self.cfg.hb_qos,
            keepalive_s=self.cfg.keepalive_s,
            time_scale=self.cfg.time_scale,
            keep_sent_log=False,
        )
        for device_id in device_ids(self.cfg):
            rng = random.Random(f"{self.cfg.seed}:{device_id}")
            home = self.index.random_commune(rng, self.cfg.departements or None)
            pharmacy = rng.random() < self.cfg.pharmacy_share
            mobility = (
                FixedSite(home.lat, home.lon, f"Pharmacie de {home.nom}")
                if pharmacy
                else NurseRound(self.index, home, rng, start, stops=rng.randint(3, 7))
            )
            self.devices.append(
                SimDevice(
                    device_id,
                    self.passwords[device_id],
                    role="pharmacist" if pharmacy else "nurse",
                    mobility=mobility,
                    shard=self.reactor.pick(),
                    broker=self.broker,
                    config=config,
                    rng=rng,
                )
            )

    def _connect_all(self) -> None:
        """Start devices at ``connect_rate``/s with at most ``max_connecting`` in flight."""
        t0 = time.monotonic()
        interval = 1.0 / self.cfg.connect_rate if self.cfg.connect_rate > 0 else 0.0
        started = 0
        next_at = t0
        connected, counted_at, shown_at = 0, 0.0, 0.0
        while started < len(self.devices) and not self._stop.is_set():
            now = time.monotonic()
            if now - counted_at >= 0.05:  # counting 10,000 devices at every start is O(n²)
                connected, counted_at = self.connected_count(), now
            if now - shown_at >= self.cfg.progress_interval_s:
                self._show("connexion", t0)
                shown_at = now
            if started - connected >= self.cfg.max_connecting:
                time.sleep(0.005)
                continue
            if now < next_at:
                time.sleep(min(0.01, next_at - now))
                continue
            self.devices[started].start()
            started += 1
            next_at = max(next_at + interval, now - 0.1)
        deadline = time.monotonic() + self.cfg.connect_timeout_s
        while self.connected_count() < len(self.devices) and time.monotonic() < deadline:
            self._show("connexion", t0)
            time.sleep(0.1)
        if self.connected_count() == len(self.devices):
            self.connect_s = time.monotonic() - t0

    def connected_count(self) -> int:
        n = sum(1 for d in self.devices if d.ready.is_set())
        self.connected_peak = max(self.connected_peak, n)
        return n

    # -- run -------------------------------------------------------------------------------
    def _show(self, phase: str, t0: float) -> None:
        if self.progress is None:
            return
        received = [r for _, r in self._records() if r.received_mono is not None]
        lat = [r.latency_s * 1000 for r in received if r.latency_s is not None]
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        hb = sum(d.sent_counts.get("hb", 0) for d in self.devices)
        self.progress.update(
            f"[{phase} {time.monotonic() - t0:5.0f} s] connectés {self.connected_count()}/"
            f"{len(self.devices)}  battements {hb}  alertes {len(self._pressed)} "
            f"(confirmées {len(received)}, en attente {len(self._pressed) - len(received)})"
            + (
                f"  p50 {p50:.1f} ms p99 {p99:.1f} ms"
                if p50 is not None and p99 is not None
                else ""
            )
        )

    def _records(self) -> list[tuple[SimDevice, Any]]:
        return [(d, d.alerts[aid]) for d, aid in list(self._pressed)]

    def _press_loop(self, t_end: float, t0: float) -> None:
        next_show = time.monotonic()
        next_press = time.monotonic() + (
            self.rng.expovariate(self.cfg.alert_rate) if self.cfg.alert_rate > 0 else math.inf
        )
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= t_end:
                return
            if now >= next_press:
                candidates = [d for d in self.devices if d.ready.is_set()]
                if candidates:
                    dev = self.rng.choice(candidates)
                    kind = "sos_silent" if self.rng.random() < self.cfg.silent_share else "sos"
                    self._pressed.append((dev, dev.press(kind)))
                next_press += self.rng.expovariate(self.cfg.alert_rate)
                continue
            if now >= next_show:
                self._show("charge", t0)
                next_show = now + self.cfg.progress_interval_s
            time.sleep(max(0.0, min(next_press, next_show, t_end) - time.monotonic()))

    def run(self) -> LoadReport:
        started_at = datetime.now(UTC)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t_start = time.monotonic()
        self._build()
        self.reactor.start()
        phases: dict[str, list[float]] = {}
        try:
            phases["connect"] = [time.time()]
            self._connect_all()
            phases["connect"].append(time.time())
            # The simulator's lateness is reported for the measured phase, not the ramp-up.
            self.reactor.reset_lag()
            t0 = time.monotonic()
            phases["load"] = [time.time()]
            self._press_loop(t0 + self.cfg.duration_s, t0)
            phases["load"].append(time.time())
            phases["drain"] = [time.time()]
            # Drain: stop pressing, wait for every outstanding receipt (bounded).
            drain_end = time.monotonic() + self.cfg.drain_s
            while time.monotonic() < drain_end:
                if all(r.received_mono is not None for _, r in self._records()):
                    break
                self._show("vidange", t0)
                time.sleep(0.05)
            phases["drain"].append(time.time())
            self._show("fin", t0)
            if self.progress is not None:
                self.progress.done()
            report = self._report(started_at, t_start, cpu0)
            report.phases = phases
        finally:
            for d in self.devices:
                d.stop(announce_offline=False)
            time.sleep(0.5)  # let the DISCONNECT packets leave
            self.reactor.stop()
        return report

    def stop(self) -> None:
        self._stop.set()

    # -- report ----------------------------------------------------------------------------
    def _report(
        self, started_at: datetime, t_start: float, cpu0: resource.struct_rusage
    ) -> LoadReport:
        records = self._records()
        received = [r for _, r in records if r.received_mono is not None]
        lost = [r.alert_id for _, r in records if r.received_mono is None]
        latencies = [r.latency_s * 1000 for r in received if r.latency_s is not None]
        duplicates = sum(max(0, r.receipts - r.sends) for _, r in records)
        resends = sum(max(0, r.sends - 1) for _, r in records)
        notif: dict[str, Any] | None = None
        if self.first_notifications is not None and records:
            times = self.first_notifications([r.alert_id for _, r in records])
            deltas = []
            missing = 0
            for _, r in records:
                t = times.get(r.alert_id)
                if t is None:
                    missing += 1
                else:
                    # Naive times (SQLite) are UTC, as everywhere in Vigie.
                    deltas.append((as_utc(t).timestamp() - r.pressed_wall) * 1000)
            notif = {**_dist(deltas), "missing": missing}
        store_check: dict[str, int] | None = None
        if self.store is not None:
            counts = {r.alert_id: len(self.store.alerts(alert_id=r.alert_id)) for _, r in records}
            store_check = {
                "stored": sum(1 for c in counts.values() if c),
                "missing": sum(1 for c in counts.values() if c == 0),
                "duplicates": sum(c - 1 for c in counts.values() if c > 1),
            }
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cfg = asdict(self.cfg)
        cfg["shards"] = len(self.reactor.shards)
        return LoadReport(
            config=cfg,
            started_at=started_at.isoformat(),
            devices=len(self.devices),
            connected_peak=self.connected_peak,
            connect_s=self.connect_s,
            connect_failures=sum(1 for d in self.devices if d.connect_count == 0),
            reconnects=sum(max(0, d.connect_count - 1) for d in self.devices),
            heartbeats=sum(d.sent_counts.get("hb", 0) for d in self.devices),
            alerts_pressed=len(records),
            alerts_received=len(received),
            alerts_lost=len(lost),
            duplicate_receipts=duplicates,
            resends=resends,
            press_to_received=_dist(latencies),
            press_to_first_notification=notif,
            store_check=store_check,
            simulator_lag=self.reactor.lag_summary(),
            run_s=time.monotonic() - t_start,
            cpu_s=(cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
            max_rss_mib=cpu1.ru_maxrss / 1024,
            lost_alert_ids=lost[:100],
        )


def run_load(
    cfg: LoadConfig,
    broker: BrokerTarget,
    passwords: dict[str, str],
    **kwargs: Any,
) -> LoadReport:
    return LoadRun(cfg, broker, passwords, **kwargs).run()


def write_json(report: LoadReport, path: Path) -> None:
    path.write_text(
        json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
