"""One `Settings` object, read from the environment (prefix ``VIGIE_``) or a TOML file.

The names and meanings of the variables are the contract of ``spec/operations.md``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIE_", extra="forbid")

    database_url: str = "sqlite:///./vigie.db"
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_shared_group: str = ""
    # MQTT protocol of the server's own connection: "5" (default) or "3.1.1" (brokers without v5).
    mqtt_protocol: str = "5"
    # Client id of this server's MQTT session. Must be unique per server process so that each
    # keeps its own persistent session on the broker.
    mqtt_client_id: str = "vigie-server"
    # How long the broker keeps this server's session (and the alerts queued in it) while the
    # server is away. One day covers any restart or maintenance window.
    mqtt_session_expiry_s: int = 86_400
    # With VIGIE_MQTT_SHARED_GROUP: a survivor takes over and drains the session of a server of
    # the group that died (its last will), instead of leaving the broker to park one message in
    # N there until the device re-sends it (mosquitto#2662; alert_server/ingest/rescue.py).
    mqtt_session_rescue: bool = True
    # --- Scale-out on a clustered broker (operations.md 1.1; alert_server/ingest/amqp.py) ---
    # "mqtt" (default): the server subscribes on the broker. "amqp": devices still speak MQTT
    # (RabbitMQ's MQTT plugin) and every server consumes one quorum queue.
    ingest: str = "mqtt"
    # amqp://user:password@host:5672/%2F; several nodes comma-separated (tried in turn).
    amqp_url: str = ""
    amqp_queue: str = "vigie.uplink"
    # RabbitMQ management API (http://user:password@host:15672): `vigie devices add/revoke`
    # writes device accounts and topic permissions there instead of Mosquitto's files.
    rabbitmq_api_url: str | None = None
    referents_file: Path | None = None
    geo_dir: Path | None = None
    # Wi-Fi/cell positioning (optional): an offline CSV of known access points and cells
    # (columns type,key,lat,lon,acc_m) and/or an HTTP geolocation service speaking the common
    # wifiAccessPoints/cellTowers request shape.
    geo_radio_table: Path | None = None
    geo_provider_url: str | None = None
    geo_provider_timeout_s: float = Field(default=2.0, gt=0, le=10)
    broker_passwd_file: Path | None = None
    broker_acl_file: Path | None = None
    # PID file of the Mosquitto process to signal (SIGHUP) after the password/ACL files change.
    broker_pid_file: Path | None = None
    # "twilio" (the default: real SMS and calls; the three Twilio settings are then required)
    # or "simulated" (nothing is sent: for the demo and tests, with a red banner in the
    # console). Checked by ``alert_server.safety``: never a silent fall-back.
    telephony: str = "twilio"
    # Set by `vigie demo` only: the console then says "démonstration" discreetly instead of
    # the red simulated-telephony banner (which no setting can hide).
    demo: bool = False
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_api_base: str = "https://api.twilio.com"
    public_url: str = "http://127.0.0.1:8000"
    # The broker's MQTT-over-WebSocket URL as phones reach it (wss://… in production); handed
    # to the worker's app at enrolment. Empty: no phone can be enrolled.
    mqtt_ws_url: str = ""
    # A notification claimed by a server that dies is taken over by another (or by the same
    # one restarted) after this long. Longer than the provider's 10 s time-out plus a commit,
    # so that a slow but alive server is never overtaken.
    dispatch_lease_s: float = Field(default=30.0, ge=12, le=600)
    # Send workers for the lower classes (repeat passes, "taken by", stand-down SMS), apart
    # from the urgent ones (first pass of a chain, duress, verification calls: 8, fixed), so
    # that a flood of them never occupies a worker an alert needs (docs/decisions/0005). At
    # least 1 (else they would never go out), at most the urgent pool's 8: they never hold more
    # provider requests and database connections at once than the alerts may.
    dispatch_low_send_workers: int = Field(default=4, ge=1, le=8)
    # SMS acknowledgement codes (docs/decisions/0006): after this many wrong codes from one
    # number within the window, that number's code replies are refused until the window has
    # passed (the call and the console still work). The codes have 3 digits: never looser than
    # 20 wrong codes an hour per number (5 in 15 minutes), checked by alert_server.safety.
    sms_ack_max_wrong: int = Field(default=5, ge=1, le=20)
    sms_ack_lock_window_s: float = Field(default=900.0, ge=60, le=86_400)
    # Simulated telephony only: acknowledge every alert this many seconds after its first
    # notification (used by `vigie demo`; never with Twilio).
    simulated_auto_ack_s: float | None = None
    # Presence (heartbeats, status) is written to the database in batches at this interval
    # rather than once per message.
    presence_flush_s: float = Field(default=2.0, gt=0)
    # Secret used to sign dashboard sessions and API tokens: long and random, the same on every
    # server. Unset (empty), a placeholder or a short one is refused (alert_server.safety).
    secret_key: SecretStr = SecretStr("")

    # --- Abuse and floods (alert_server/ingest) ----------------------------------------------
    # A new alert of the same kind from the same device within this long of its previous
    # press, while that alert is still open or acknowledged, joins it as one incident (stored,
    # receipted, counted, never escalated again). A press after a silence this long is a new alert.
    flood_window_s: float = Field(default=120.0, ge=0, le=3600)
    # Cancel PINs: after this many wrong PINs within pin_window_s the device cannot cancel for
    # pin_lockout_s (its alert keeps escalating; the dispatcher sees the errors).
    pin_max_failures: int = Field(default=5, ge=1, le=100)
    pin_window_s: float = Field(default=900.0, gt=0)
    pin_lockout_s: float = Field(default=900.0, gt=0)

    # --- Timed visits (alert_server/sessions) ----------------------------------------------
    # Grace time per worker role between the `session.warning` (at the expected end) and the
    # `session_overdue` alert, in seconds. JSON in the environment, e.g.
    # VIGIE_SESSION_GRACE_S='{"nurse": 300, "pharmacist": 180}'; a role not listed gets 300 s.
    session_grace_s: dict[str, float] = Field(
        default_factory=lambda: {"nurse": 300.0, "pharmacist": 300.0, "other": 300.0}
    )
    # A device whose status turns "offline" during a running session raises an alert after
    # this long if it has not come back.
    session_offline_alert_s: float = Field(default=300.0, gt=0)
    # A check-in ("I am fine") during the grace time moves the next deadline this far ahead
    # (never before the announced end): the visit stays watched.
    session_checkin_extend_s: float = Field(default=900.0, gt=0)
    # A session started without `expected_end` is watched for this long.
    session_default_duration_s: float = Field(default=3600.0, gt=0)
    # How often the session timers, worker notices and worker SMS are advanced.
    session_tick_s: float = Field(default=5.0, gt=0)

    # --- Automatic alarms (dispatch/verification.py) ---------------------------------------
    # fall / no_motion: the worker's own phone is called first ("press 1 if you are fine");
    # the referent chain is notified after this many seconds unless she pressed 1, and at once
    # if the call fails. 0 disables the verification (every alarm goes straight to the chain).
    verify_automatic_s: float = Field(default=30.0, ge=0, le=300)
    verify_kinds: list[str] = Field(default_factory=lambda: ["fall", "no_motion"])

    # --- Worker notices (alert_server/followup/notices.py), by SMS to the worker only -------
    notices_enabled: bool = True
    # Battery at or below this percentage (and not charging): one SMS per episode.
    notice_low_battery_pct: int = Field(default=15, ge=1, le=100)
    # Offline outside a session for this long: one SMS per episode.
    notice_offline_after_s: float = Field(default=900.0, gt=0)
    # An episode ends only after the condition has been clear this long (no SMS storm from a
    # flapping device or a battery hovering around the threshold).
    notice_rearm_s: float = Field(default=1800.0, ge=0)

    # --- Victim support after a genuine incident (alert_server/followup/victim_support.py) --
    victim_support_enabled: bool = True
    # YAML file: local victim-support association and complaint advice per département
    # (see alert_server/followup/victim_support.example.yaml). Without it, the SMS gives the
    # national number 116 006 and the general complaint advice.
    victim_support_file: Path | None = None

    # --- Retention (CNIL; alert_server/retention.py, `vigie purge`) -----------------------
    # Positions outside alerts and sessions (device last position, positions and memos of
    # ended sessions) are erased after this many days.
    retention_position_days: int = Field(default=30, ge=1)
    # Closed alerts are pseudonymised after this many months (statistics fields kept).
    retention_alert_months: int = Field(default=12, ge=1)
    # The audit trail is kept for its own legal period (who read which personal data), then
    # erased; inbound SMS and revoked workers follow the alerts' period.
    retention_audit_months: int = Field(default=12, ge=1)

    # --- Operations (docs/privacy.md, docs/operations) ------------------------------------------
    # Reverse proxies whose X-Forwarded-For/-Proto are believed (comma-separated addresses or
    # networks, as uvicorn's forwarded_allow_ips). Empty: none, the peer address is the client.
    trusted_proxies: str = ""
    # Who may read /metrics, /docs and /openapi.json: "token" (an admin's API bearer token, or
    # VIGIE_METRICS_TOKEN for a scraper), "network" (only from VIGIE_METRICS_NETWORKS) or
    # "open" (demo only).
    internal_access: str = Field(default="token", pattern="^(token|network|open)$")
    metrics_token: SecretStr = SecretStr("")
    metrics_networks: str = "127.0.0.1/32,::1/128"
    # Log lines: "json" (one JSON object per line, for a collector) or "plain" (a person).
    log_format: str = Field(default="json", pattern="^(json|plain)$")

    # --- Existing devices (alert_server/gateways) -------------------------------------------
    # OsmAnd gateway (Traccar Client, Traccar's forwarding): how long a request carrying an
    # alarm waits for its commit before it is answered 503 (the alert stays queued and is
    # stored as soon as the database allows; a retry is then a repeat).
    gateway_commit_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # Positions and heartbeats per identifier: this many per second on average, bursts up to
    # osmand_burst (a client emptying its offline buffer). Alarms are never rate-limited.
    osmand_rate_per_s: float = Field(default=1.0, gt=0)
    osmand_burst: int = Field(default=60, ge=1)
    # MQTT buttons that already exist (Shelly, zigbee2mqtt, Tasmota): YAML, operations.md 1.1.
    buttons_file: Path | None = None
    # Where a press waits (one fsynced file each) until its alert is committed; default: a
    # ".vigie-buttons-journal" folder next to VIGIE_BUTTONS_FILE.
    buttons_journal_dir: Path | None = None
    # The servers' listener ACL (broker_config/servers.acl) that the server rewrites with
    # read access to exactly the configured button topics; unset: not written.
    broker_servers_acl_file: Path | None = None


# pydantic's error types, said in French (the rest keep pydantic's English message).
_WHY: dict[str, str] = {
    "greater_than_equal": "doit valoir au moins {ge}",
    "greater_than": "doit être supérieur à {gt}",
    "less_than_equal": "doit valoir au plus {le}",
    "less_than": "doit être inférieur à {lt}",
    "int_parsing": "doit être un nombre entier",
    "int_from_float": "doit être un nombre entier",
    "int_type": "doit être un nombre entier",
    "float_parsing": "doit être un nombre",
    "float_type": "doit être un nombre",
    "finite_number": "doit être un nombre fini",
    "bool_parsing": "doit être true ou false",
    "bool_type": "doit être true ou false",
    "json_invalid": "JSON illisible",
    "dict_type": "doit être un objet JSON",
    "list_type": "doit être une liste JSON",
    "extra_forbidden": "réglage inconnu",
    "string_type": "doit être un texte",
}
_SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "AUTH")


def setting_errors(exc: Exception) -> list[str]:
    """French lines for settings that cannot be read, each naming the variable and its value
    (``VIGIE_SMS_ACK_MAX_WRONG='0' : doit valoir au moins 1``); secrets are never echoed."""
    if isinstance(exc, ValidationError):
        out = []
        for e in exc.errors():
            loc = [str(part) for part in e.get("loc", ())]
            name = f"VIGIE_{loc[0].upper()}" if loc else "réglages"
            if len(loc) > 1:
                name += "[" + "][".join(loc[1:]) + "]"
            ctx = {
                k: f"{v:g}" if isinstance(v, float) else v for k, v in (e.get("ctx") or {}).items()
            }
            why = _WHY.get(e["type"], "").format(**ctx) or f"valeur refusée ({e['msg']})"
            if e["type"] == "string_pattern_mismatch":
                choices = re.fullmatch(r"\^\(([\w|]+)\)\$", str(ctx.get("pattern", "")))
                why = "valeurs possibles : " + (
                    ", ".join(choices.group(1).split("|")) if choices else str(ctx.get("pattern"))
                )
            if any(word in name for word in _SECRET_WORDS) or e["type"] == "extra_forbidden":
                out.append(f"{name} : {why}")
            else:
                out.append(f"{name}={e.get('input')!r} : {why}")
        return out
    if isinstance(exc, SettingsError):
        # pydantic-settings: a value it could not decode (JSON of a dict or list setting).
        found = re.search(r'field "(\w+)"', str(exc))
        if found:
            return [f"VIGIE_{found.group(1).upper()} : JSON illisible"]
    return [str(exc).splitlines()[0] if str(exc) else type(exc).__name__]


def describe_setting_errors(exc: Exception) -> str:
    """``setting_errors`` on one line (the CLI's error line)."""
    return " ; ".join(setting_errors(exc))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from keyword overrides, then the environment, then the TOML file (``--config``).

    The TOML file uses the field names (``database_url = "…"``) at its top level.
    """
    if config_file is None:
        return Settings(**overrides)
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: fichier de configuration introuvable")

    class _FileSettings(Settings):
        model_config = SettingsConfigDict(
            env_prefix="VIGIE_", extra="forbid", toml_file=config_file
        )

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    return _FileSettings(**overrides)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
