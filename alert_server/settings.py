"""One `Settings` object, read from the environment (prefix ``VIGIE_``) or a TOML file.

The names and meanings of the variables are the contract of ``spec/operations.md``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
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
    referents_file: Path | None = None
    geo_dir: Path | None = None
    broker_passwd_file: Path | None = None
    broker_acl_file: Path | None = None
    # PID file of the Mosquitto process to signal (SIGHUP) after the password/ACL files change.
    broker_pid_file: Path | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_api_base: str = "https://api.twilio.com"
    public_url: str = "http://127.0.0.1:8000"
    # Presence (heartbeats, status) is written to the database in batches at this interval
    # rather than once per message.
    presence_flush_s: float = Field(default=2.0, gt=0)
    # Secret used to sign dashboard sessions and API tokens.
    secret_key: SecretStr = SecretStr("change-me-in-production")


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
