"""Process settings from GATEHOUSE_* environment variables: secrets, URLs, where things are."""

from __future__ import annotations

from pathlib import Path

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_PLACEHOLDERS = {"changeme", "change-me", "secret", "password", "test", "example"}


class Settings(BaseSettings):
    """What the process needs besides the TOML file."""

    model_config = SettingsConfigDict(env_prefix="GATEHOUSE_", extra="ignore")

    config: Path = Path("gatehouse.toml")
    database_url: str = "sqlite+aiosqlite:///gatehouse.db"
    jwt_secret: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # `gatehouse serve` processes; unset: one per core on PostgreSQL, one on SQLite (workers.py)
    workers: int | None = Field(default=None, ge=1)
    log_level: str = "INFO"
    otlp_endpoint: str | None = None  # export traces over OTLP/HTTP when set
    # Signed checkpoints of the audit trail's head (checkpoints.py). The key and the
    # directory lie outside the gateway's database: that is what makes them evidence.
    checkpoint_key_file: Path | None = None  # an Ed25519 private key, PEM
    checkpoint_key: SecretStr | None = None  # or the PEM text itself
    checkpoint_dir: Path | None = None  # checkpoints are written when this is set
    checkpoint_url: AnyHttpUrl | None = None  # and/or POSTed here (a receiver that keeps them)
    checkpoint_token: SecretStr | None = None  # the bearer token that receiver expects
    checkpoint_every: float = Field(default=60.0, gt=0)  # seconds between checkpoints

    @field_validator(
        "checkpoint_key_file",
        "checkpoint_key",
        "checkpoint_dir",
        "checkpoint_url",
        "checkpoint_token",
        "workers",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # An empty variable means "not set", not the current directory or an empty key.
        return None if value == "" else value

    @field_validator("jwt_secret")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        if secret.lower() in _PLACEHOLDERS or len(secret) < 32:
            raise ValueError("GATEHOUSE_JWT_SECRET must be a real secret of 32+ characters")
        return value
