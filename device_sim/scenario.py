"""Scenarios: YAML files of devices and a timeline of actions and expectations.

```yaml
name: sos
description: Une infirmière appuie sur le bouton.
devices:
  - id: nurse-1            # local name; the real device_id is <prefix><id>
    role: nurse            # nurse | pharmacist | other
    home: Aubagne          # commune (name, "Laval (53)" or INSEE code): a round from there
timeline:
  - {at: 1s, device: nurse-1, do: press, kind: sos, as: a1}
  - {expect: alert.received, device: nurse-1, alert: a1, within: 2s}
  - {expect: stored, alert: a1, count: 1, within: 2s}
  - {do: ack, alert: a1, needs: [dispatch, responder]}
  - {expect: alert.acknowledged, device: nurse-1, alert: a1, within: 10s, needs: dispatch}
```

Timing: ``at`` is an offset from the start of the timeline (all devices connected); ``after``
a delay after the previous step; neither means right after the previous step. ``within`` is
how long an expectation may take; ``for`` makes a negative expectation hold for that long.

A step may ``need`` capabilities. Server features (``cancel``, ``dispatch``, ``sessions``,
``locate``) are declared by whoever runs the scenario; hooks add theirs (``store``,
``observer``, ``broker_control``, ``responder``). A step whose needs are missing is reported
as skipped, never as passed: this is how expectations on server parts still being built are
written now and enabled later.

Actions (``do``): connect, disconnect, drop, press, fall, cancel_fall, cancel, session_start,
session_extend, session_checkin, session_end, position, heartbeat, move, broker.stop,
broker.start, ack, wait.

Expectations (``expect``, prefix ``no `` to negate the device ones): alert.received,
alert.acknowledged, alert.cancelled, alert.resolved, alert.raised, cancel.rejected,
session.accepted, session.rejected, session.warning, locate (commands the device received);
<suffix>.sent (the device published on alert/cancel/session/pos/hb); ui.silent (nothing
shown for that alert); ui.same (two alerts looked the same on screen); stored (the server's
store: count, state, duress, kind); status.online / status.offline (seen on the broker, e.g.
the last will).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from device_sim.device import BrokerTarget, DeviceConfig, Role, SessionReaction, SimDevice
from device_sim.geo import CommuneIndex, FixedSite, Mobility, NurseRound, Pinned
from device_sim.hooks import AlertStore, BrokerControl, Responder, StatusObserver, is_duress
from device_sim.provision import DeviceSpec, Provisioner
from device_sim.reactor import Reactor

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
SERVER_FEATURES = ("cancel", "dispatch", "sessions", "locate")
COMMAND_TYPES = (
    "alert.received",
    "cancel.rejected",
    "alert.raised",
    "session.accepted",
    "session.rejected",
    "alert.acknowledged",
    "alert.cancelled",
    "alert.resolved",
    "session.warning",
    "locate",
)
ACTIONS = (
    "connect", "disconnect", "drop", "press", "fall", "cancel_fall", "cancel",
    "session_start", "session_extend", "session_checkin", "session_end", "position",
    "heartbeat", "move", "broker.stop", "broker.start", "ack", "wait",
)  # fmt: skip
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")


def parse_duration(value: object) -> float:
    """``2s``, ``500ms``, ``1.5``, ``2m``, ``1h`` → seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            n = float(m.group(1))
            return n * {"ms": 0.001, "s": 1, None: 1, "m": 60, "min": 60, "h": 3600}[m.group(2)]
    raise ValueError(f"durée illisible : {value!r} (ex. 2s, 500ms, 1m)")


Duration = float


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PointDecl(_Model):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    acc_m: float = Field(default=10.0, ge=0)
    src: Literal["gps", "wifi", "cell", "fixed", "manual"] = "gps"


class SiteDecl(_Model):
    commune: str | None = None
    lat: float | None = None
    lon: float | None = None
    label: str = ""

    @model_validator(mode="after")
    def _where(self) -> SiteDecl:
        if self.commune is None and (self.lat is None or self.lon is None):
            raise ValueError("site: donnez commune, ou lat et lon")
        return self


class DeviceDecl(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")
    role: Role = "nurse"
    worker: str | None = None
    phone: str = "+33612345678"
    pin: str = "2468"
    duress_pin: str = "1357"
    home: str | None = None  # commune of a nurse's round
    stops: int = Field(default=5, ge=0, le=20)
    site: SiteDecl | None = None  # a pharmacy's fixed button
    report_position: bool = True  # a fixed site reports ``src: fixed``, or nothing
    at: PointDecl | None = None  # pinned at a point
    hb_interval: Duration = 30.0
    fall_window: Duration = 30.0
    on_session_warning: SessionReaction = "ignore"

    _dur = field_validator("hb_interval", "fall_window", mode="before")(parse_duration)


class StepDecl(_Model):
    at: Duration | None = None
    after: Duration | None = None
    device: str | None = None  # a device id, or "all" for connect/disconnect
    do: str | None = None
    expect: str | None = None
    kind: str | None = None  # press: sos (default) | sos_silent | …; stored: filter
    label: str | None = Field(default=None, alias="as")
    alert: str | None = None
    alerts: list[str] = Field(default_factory=list)
    pin: str = "pin"  # pin | duress | wrong | the digits
    within: Duration = 5.0
    hold: Duration | None = Field(default=None, alias="for")
    count: int | None = None
    window: Duration | None = None
    duration: Duration | None = None
    by: Duration | None = None
    memo: str | None = None
    to: str | PointDecl | None = None
    state: str | None = None
    duress: bool | None = None
    needs: list[str] = Field(default_factory=list)
    note: str | None = None

    _dur = field_validator(
        "at", "after", "within", "hold", "window", "duration", "by", mode="before"
    )(lambda v: None if v is None else parse_duration(v))

    @field_validator("needs", mode="before")
    @classmethod
    def _needs(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_thing(self) -> StepDecl:
        if (self.do is None) == (self.expect is None):
            raise ValueError("chaque étape a soit « do », soit « expect »")
        if self.do is not None and self.do not in ACTIONS:
            raise ValueError(f"action inconnue : {self.do!r} ({', '.join(ACTIONS)})")
        if self.expect is not None:
            name = self.expect.removeprefix("no ").strip()
            known = (
                name in COMMAND_TYPES
                or name.endswith(".sent")
                or name in ("ui.silent", "ui.same", "stored", "status.online", "status.offline")
            )
            if not known:
                raise ValueError(f"attente inconnue : {self.expect!r}")
        return self

    def describe(self) -> str:
        expect = self.expect or ""
        negated = expect.startswith("no ")
        what = self.do or (f"absence de {expect[3:]}" if negated else f"attendre {expect}")
        parts = [what]
        if self.device:
            parts.append(self.device)
        if self.kind:
            parts.append(self.kind)
        if self.alert:
            parts.append(self.alert)
        if self.alerts:
            parts.append("/".join(self.alerts))
        if self.label:
            parts.append(f"→ {self.label}")
        if self.expect and self.expect.startswith("no "):
            if self.hold:
                parts.append(f"pendant {self.hold:g} s")
        elif self.expect and self.expect in (*COMMAND_TYPES, "stored"):
            parts.append(f"≤ {self.within:g} s")
        return " ".join(parts)


class Scenario(_Model):
    name: str
    description: str = ""
    seed: int = 1
    devices: list[DeviceDecl]
    timeline: list[StepDecl]

    @model_validator(mode="after")
    def _refs(self) -> Scenario:
        ids = {d.id for d in self.devices}
        if len(ids) != len(self.devices):
            raise ValueError("identifiants de boîtiers en double")
        for i, step in enumerate(self.timeline, 1):
            if step.device not in (None, "all") and step.device not in ids:
                raise ValueError(f"étape {i} : boîtier inconnu {step.device!r}")
        return self

    @classmethod
    def load(cls, ref: str | Path) -> Scenario:
        """A scenario by name (``sos``) from ``device_sim/scenarios``, or by path."""
        path = Path(ref)
        if not path.suffix:
            path = SCENARIO_DIR / f"{ref}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{ref}: scénario introuvable (voir « vigie sim list »)")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        try:
            return cls.model_validate(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {str(exc).splitlines()[0]}: {exc}") from exc


def list_scenarios() -> list[tuple[str, str]]:
    """``(name, first line of the description)`` of every bundled scenario."""
    out = []
    for p in sorted(SCENARIO_DIR.glob("*.yaml")):
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        lines = str(data.get("description") or "").strip().splitlines()
        out.append((p.stem, lines[0] if lines else ""))
    return out


# ==========================================================================================
# Running
# ==========================================================================================
Status = Literal["ok", "failed", "skipped"]


@dataclass
class StepResult:
    index: int
    description: str
    status: Status
    detail: str = ""
    started_s: float = 0.0
    duration_s: float = 0.0


@dataclass
class ScenarioReport:
    name: str
    seed: int
    steps: list[StepResult] = field(default_factory=list)
    devices: dict[str, str] = field(default_factory=dict)  # local name → device_id
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(s.status != "failed" for s in self.steps)

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "failed": 0, "skipped": 0}
        for s in self.steps:
            out[s.status] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "passed": self.passed,
            "error": self.error,
            "devices": self.devices,
            "counts": self.counts(),
            "steps": [s.__dict__ for s in self.steps],
        }


@dataclass
class RunEnv:
    """Everything a scenario runs against."""

    broker: BrokerTarget
    provisioner: Provisioner
    features: set[str] = field(default_factory=lambda: set(SERVER_FEATURES))
    store: AlertStore | None = None
    observer_url: str | None = None  # the server account, to watch status/will messages
    broker_control: BrokerControl | None = None
    responder: Responder | None = None
    prefix: str = ""
    index: CommuneIndex | None = None
    connect_timeout_s: float = 20.0
    out: Callable[[str], None] | None = None

    def capabilities(self) -> set[str]:
        caps = set(self.features)
        if not self.provisioner.registers_workers:
            caps.discard("cancel")  # the server cannot check PINs of devices it does not know
        for name, hook in (
            ("store", self.store),
            ("observer", self.observer_url),
            ("broker_control", self.broker_control),
            ("responder", self.responder),
        ):
            if hook is not None:
                caps.add(name)
        return caps


class _Fail(Exception):
    pass


class _Skip(Exception):
    pass


def _wait_for(pred: Callable[[], bool], timeout_s: float, poll_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


class ScenarioRunner:
    def __init__(self, scenario: Scenario, env: RunEnv, seed: int | None = None) -> None:
        self.scenario = scenario
        self.env = env
        self.seed = scenario.seed if seed is None else seed
        self.caps = env.capabilities()
        self.devices: dict[str, SimDevice] = {}
        self.labels: dict[str, tuple[str, str]] = {}  # label → (device name, alert_id)
        self.sessions: dict[str, str] = {}
        self.reactor = Reactor(1)
        self.observer: StatusObserver | None = None
        self.report = ScenarioReport(scenario.name, self.seed)
        self._t0 = 0.0

    # -- setup -----------------------------------------------------------------------------
    def _mobility(self, decl: DeviceDecl, rng: random.Random) -> Mobility | None:
        if decl.at is not None:
            return Pinned(decl.at.lat, decl.at.lon, decl.at.acc_m, decl.at.src)
        if decl.site is not None:
            lat, lon = decl.site.lat, decl.site.lon
            if lat is None or lon is None:
                assert decl.site.commune is not None
                c = self._index().find(decl.site.commune)
                lat, lon = c.lat, c.lon
            return FixedSite(lat, lon, decl.site.label, report_position=decl.report_position)
        if decl.home is not None:
            home = self._index().find(decl.home)
            return NurseRound(self._index(), home, rng, datetime.now(UTC), stops=decl.stops)
        return None

    def _index(self) -> CommuneIndex:
        if self.env.index is None:
            self.env.index = CommuneIndex.load()
        return self.env.index

    def _setup(self) -> None:
        self.reactor.start()
        for decl in self.scenario.devices:
            device_id = f"{self.env.prefix}{decl.id}"
            rng = random.Random(f"{self.seed}:{decl.id}")
            mobility = self._mobility(decl, rng)
            site = mobility if isinstance(mobility, FixedSite) else None
            spec = DeviceSpec(
                device_id=device_id,
                role=decl.role,
                worker=decl.worker or f"Travailleur {decl.id}",
                phone=decl.phone,
                pin=decl.pin,
                duress_pin=decl.duress_pin,
                site_lat=site.lat if site else None,
                site_lon=site.lon if site else None,
                site_label=(site.label or None) if site else None,
            )
            password = self.env.provisioner.provision(spec)
            config = DeviceConfig(
                hb_interval_s=decl.hb_interval,
                fall_cancel_window_s=decl.fall_window,
                on_session_warning=decl.on_session_warning,
            )
            self.devices[decl.id] = SimDevice(
                device_id,
                password,
                role=decl.role,
                mobility=mobility,
                shard=self.reactor.pick(),
                broker=self.env.broker,
                config=config,
                rng=rng,
                pin=decl.pin,
                duress_pin=decl.duress_pin,
            )
            self.report.devices[decl.id] = device_id
        if self.env.observer_url is not None:
            self.observer = StatusObserver(self.env.observer_url, self.env.broker.protocol).start()
        for dev in self.devices.values():
            dev.start()
        for name, dev in self.devices.items():
            if not dev.ready.wait(self.env.connect_timeout_s):
                raise RuntimeError(
                    f"{name} ({dev.device_id}) ne s'est pas connecté au broker "
                    f"{self.env.broker.host}:{self.env.broker.port}: {dev.last_connect_error}"
                )

    def _teardown(self) -> None:
        for dev in self.devices.values():
            dev.stop()
        # Let the DISCONNECTs leave before the shard stops.
        _wait_for(lambda: all(not d.connected.is_set() for d in self.devices.values()), 3.0)
        self.reactor.stop()
        if self.observer is not None:
            self.observer.stop()

    # -- run -------------------------------------------------------------------------------
    def run(self) -> ScenarioReport:
        try:
            self._setup()
        except Exception as exc:
            self.report.error = f"préparation : {exc}"
            self._teardown()
            return self.report
        self._t0 = time.monotonic()
        prev_end = self._t0
        try:
            for i, step in enumerate(self.scenario.timeline, 1):
                if step.at is not None:
                    self._sleep_until(self._t0 + step.at)
                elif step.after is not None:
                    self._sleep_until(prev_end + step.after)
                result = self._run_step(i, step)
                self.report.steps.append(result)
                if self.env.out is not None:
                    self.env.out(format_step(result))
                prev_end = time.monotonic()
        finally:
            self._teardown()
        return self.report

    @staticmethod
    def _sleep_until(t: float) -> None:
        delay = t - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _run_step(self, index: int, step: StepDecl) -> StepResult:
        started = time.monotonic()
        result = StepResult(index, step.describe(), "ok", started_s=started - self._t0)
        missing = [n for n in step.needs if n not in self.caps]
        try:
            if missing:
                raise _Skip(f"nécessite {', '.join(missing)}")
            if step.do is not None:
                result.detail = self._act(step) or ""
            else:
                result.detail = self._expect(step) or ""
        except _Skip as exc:
            result.status, result.detail = "skipped", str(exc)
            if step.label:
                self.labels.pop(step.label, None)
        except _Fail as exc:
            result.status, result.detail = "failed", str(exc)
        except Exception as exc:
            result.status, result.detail = "failed", f"{type(exc).__name__}: {exc}"
        result.duration_s = time.monotonic() - started
        return result

    def _device(self, step: StepDecl) -> SimDevice:
        if step.device is None or step.device == "all":
            if step.alert and step.alert in self.labels:
                return self.devices[self.labels[step.alert][0]]
            raise _Fail("quel boîtier ? (device:)")
        return self.devices[step.device]

    def _alert_id(self, label: str | None) -> str:
        if label is None:
            raise _Fail("quelle alerte ? (alert:)")
        if label not in self.labels:
            raise _Skip(f"alerte {label!r} indisponible (étape précédente ignorée)")
        return self.labels[label][1]

    def _targets(self, step: StepDecl) -> list[SimDevice]:
        if step.device in (None, "all"):
            return list(self.devices.values())
        return [self.devices[str(step.device)]]

    # -- actions ---------------------------------------------------------------------------
    def _act(self, step: StepDecl) -> str | None:
        name = step.do
        if name == "wait":
            return None
        if name == "broker.stop":
            if self.env.broker_control is None:
                raise _Skip("nécessite broker_control")
            self.env.broker_control.stop()
            return "broker arrêté (SIGKILL)"
        if name == "broker.start":
            if self.env.broker_control is None:
                raise _Skip("nécessite broker_control")
            self.env.broker_control.start()
            return "broker redémarré"
        if name == "ack":
            if self.env.responder is None:
                raise _Skip("nécessite responder")
            self.env.responder.ack(self._alert_id(step.alert))
            return None
        if name == "connect":
            for dev in self._targets(step):
                dev.start()
            for dev in self._targets(step):
                if not dev.ready.wait(step.within):
                    raise _Fail(f"{dev.device_id} non connecté : {dev.last_connect_error}")
            return None
        if name == "disconnect":
            for dev in self._targets(step):
                dev.stop()
            return None
        if name == "drop":
            for dev in self._targets(step):
                dev.drop()
            return "coupure sans DISCONNECT"
        dev = self._device(step)
        device_name = step.device or self.labels[str(step.alert)][0]
        if name == "press":
            alert_id = dev.press(step.kind or "sos")
            if step.label:
                self.labels[step.label] = (device_name, alert_id)
            return alert_id
        if name == "fall":
            alert_id = dev.fall(step.window)
            if step.label:
                self.labels[step.label] = (device_name, alert_id)
            return alert_id
        if name == "cancel_fall":
            if not dev.cancel_fall(self._alert_id(step.alert)):
                raise _Fail("trop tard : la pré-alarme était déjà partie")
            return "annulée sur le boîtier"
        if name == "cancel":
            pin = dev.pin_for(step.pin) if step.pin in ("pin", "duress", "wrong") else step.pin
            dev.cancel(self._alert_id(step.alert), pin)
            return f"code {step.pin}"
        if name == "session_start":
            session_id = dev.session_start(step.duration or 900.0, step.memo)
            if step.label:
                self.sessions[step.label] = session_id
            return session_id
        if name == "session_extend":
            dev.session_extend(step.by or 900.0)
            return None
        if name == "session_checkin":
            dev.session_checkin()
            return None
        if name == "session_end":
            dev.session_end()
            return None
        if name == "position":
            dev.send_position()
            return None
        if name == "heartbeat":
            dev.send_heartbeat()
            return None
        if name == "move":
            if isinstance(step.to, PointDecl):
                dev.mobility = Pinned(step.to.lat, step.to.lon, step.to.acc_m, step.to.src)
            elif isinstance(step.to, str):
                c = self._index().find(step.to)
                dev.mobility = Pinned(c.lat, c.lon, 15.0)
            else:
                raise _Fail("move : donnez « to »")
            return dev.mobility.describe()
        raise _Fail(f"action non gérée : {name}")

    # -- expectations ----------------------------------------------------------------------
    def _expect(self, step: StepDecl) -> str | None:
        assert step.expect is not None
        negate = step.expect.startswith("no ")
        name = step.expect.removeprefix("no ").strip()
        if name in COMMAND_TYPES:
            dev = self._device(step)
            alert_id = self._alert_id(step.alert) if step.alert else None
            want = step.count or 1

            def got() -> int:
                return len(dev.commands(name, alert_id))

            return self._check(got, want, negate, step, f"{name} reçu")
        if name.endswith(".sent"):
            suffix = name.removesuffix(".sent")
            dev = self._device(step)
            alert_id = self._alert_id(step.alert) if step.alert else None

            def sent() -> int:
                return sum(
                    1
                    for m in dev.sent(suffix)
                    if alert_id is None or m.body.get("alert_id") == alert_id
                )

            return self._check(sent, step.count or 1, negate, step, f"{suffix} publié")
        if name == "ui.silent":
            alert_id = self._alert_id(step.alert)
            dev = self._device(step)
            shown = dev.ui(alert_id)
            if shown:
                raise _Fail(f"le boîtier a montré {shown} pour une alerte discrète")
            return "rien affiché"
        if name == "ui.same":
            if len(step.alerts) < 2:
                raise _Fail("ui.same : donnez au moins deux alertes (alerts: [a1, a2])")
            screens = [
                self.devices[self.labels[label][0]].ui(self._alert_id(label))
                for label in step.alerts
            ]
            if any(s != screens[0] for s in screens):
                raise _Fail(f"écrans différents : {screens}")
            return " | ".join(screens[0])
        if name == "stored":
            return self._expect_stored(step, negate)
        if name in ("status.online", "status.offline"):
            if self.observer is None:
                raise _Skip("nécessite observer")
            dev = self._device(step)
            wanted = name.split(".")[1]
            obs = self.observer
            return self._check(
                lambda: obs.states(dev.device_id)[-1:].count(wanted),
                1,
                negate,
                step,
                f"statut {wanted}",
            )
        raise _Fail(f"attente non gérée : {name}")

    def _check(
        self, measure: Callable[[], int], want: int, negate: bool, step: StepDecl, what: str
    ) -> str:
        if negate:
            hold = step.hold or 0.0
            deadline = time.monotonic() + hold
            while True:
                n = measure()
                if n:
                    raise _Fail(f"{what} alors qu'il ne devait pas l'être ({n})")
                if time.monotonic() >= deadline:
                    return f"aucun {what}" + (f" pendant {hold:g} s" if hold else "")
                time.sleep(0.02)
        t0 = time.monotonic()
        if not _wait_for(lambda: measure() >= want, step.within):
            raise _Fail(f"{what} : {measure()}/{want} après {step.within:g} s")
        return f"{what} en {(time.monotonic() - t0) * 1000:.0f} ms"

    def _expect_stored(self, step: StepDecl, negate: bool) -> str:
        store = self.env.store
        if store is None:
            raise _Skip("nécessite store")
        alert_id = self._alert_id(step.alert) if step.alert else None
        device_id = (
            self.devices[step.device].device_id if step.device not in (None, "all") else None
        )

        def matching() -> list[dict[str, Any]]:
            rows = store.alerts(alert_id=alert_id, device_id=None if alert_id else device_id)
            out = []
            for a in rows:
                if step.kind is not None and a.get("kind") != step.kind:
                    continue
                if step.state is not None and a.get("state") != step.state:
                    continue
                if step.duress is not None and is_duress(a) != step.duress:
                    continue
                out.append(a)
            return out

        want = 1 if step.count is None else step.count
        if negate:
            return self._check(lambda: len(matching()), 1, True, step, "alerte stockée")
        last: list[dict[str, Any]] = []

        def ok() -> bool:
            nonlocal last
            last = matching()
            return len(last) == want

        if not _wait_for(ok, step.within, poll_s=0.1):
            seen = store.alerts(alert_id=alert_id, device_id=None if alert_id else device_id)
            brief = [
                {k: a.get(k) for k in ("alert_id", "kind", "state", "duress", "flags")}
                for a in seen
            ]
            seen_json = json.dumps(brief, default=str)
            raise _Fail(f"{len(last)} alerte(s) conforme(s) au lieu de {want} ; vues : {seen_json}")
        return f"{want} alerte(s) stockée(s)" + (f", état {step.state}" if step.state else "")


_MARK = {"ok": "OK     ", "failed": "ÉCHEC  ", "skipped": "IGNORÉ "}


def format_step(r: StepResult) -> str:
    line = f"{_MARK[r.status]} {r.started_s:6.2f}s  {r.index:2d}. {r.description}"
    if r.detail:
        line += f"  — {r.detail}"
    return line


def format_report(report: ScenarioReport) -> str:
    lines = [f"Scénario {report.name} (graine {report.seed})"]
    if report.error:
        lines.append(f"ERREUR : {report.error}")
    lines += [format_step(s) for s in report.steps]
    c = report.counts()
    verdict = "RÉUSSI" if report.passed else "ÉCHOUÉ"
    lines.append(f"{verdict} : {c['ok']} ok, {c['failed']} en échec, {c['skipped']} ignorée(s)")
    return "\n".join(lines)


def run_scenario(
    scenario: Scenario | str | Path, env: RunEnv, seed: int | None = None
) -> ScenarioReport:
    sc = scenario if isinstance(scenario, Scenario) else Scenario.load(scenario)
    return ScenarioRunner(sc, env, seed).run()
