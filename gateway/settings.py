"""Process settings from GATEHOUSE_* environment variables: secrets, URLs, where things are."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr, field_validator
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
    log_level: str = "INFO"
    otlp_endpoint: str | None = None  # export traces over OTLP/HTTP when set

    @field_validator("jwt_secret")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        if secret.lower() in _PLACEHOLDERS or len(secret) < 32:
            raise ValueError("GATEHOUSE_JWT_SECRET must be a real secret of 32+ characters")
        return value
