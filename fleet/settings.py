"""One typed configuration for every process, from `APA_*` environment variables and `.env`.

The defaults are the embedded mode: a SQLite file, a local folder as object store and Celery's
filesystem broker under `./var`, so `apa-fleet run` works on a laptop with no service at all.
Production points the same settings at Postgres, Redis and S3.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BROKER_SCHEMES = {"redis", "rediss", "amqp", "amqps", "pyamqp", "filesystem", "memory", "sqla+sqlite"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APA_", env_file=".env", extra="ignore")

    # Where embedded-mode state lives (SQLite file, objects, broker folders, tiny model).
    var_dir: Path = Path("var")

    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means a SQLite file under var_dir.",
    )
    broker_url: str = Field(
        default="filesystem://",
        description="Celery broker: redis://, amqp:// or filesystem:// (embedded, no server).",
    )
    redis_visibility_timeout_s: int = 3600

    # Object storage: `s3://bucket/key` URIs go to boto3, everything else to the local folder.
    storage_root: Path = Field(default=Path(""), description="Local object-store folder; empty = var_dir/objects.")
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    bucket: str = Field(default="apa-fleet", description="Bucket for the service's own objects (adapters, reports).")
    s3_connect_timeout_s: float = 5.0
    s3_max_attempts: int = 3

    engine: Literal["gop", "qwen2-audio"] | None = Field(
        default=None,
        description="Scoring engine: gop (CPU, trained GOP head) or qwen2-audio (model_path, GPU); "
                    "unset = qwen2-audio when model_path is set, else gop.")
    gop_head_dir: str = Field(default="", description="Folder of a gop head (head.pkl.xz + head.json); empty = the shipped one.")
    model_path: str = Field(default="", description="Local path or hub id of Qwen2-Audio; empty = tiny model under var_dir.")
    adapter_prefix: str = "adapters/"
    device: str = "auto"

    api_key_header: str = "X-API-Key"
    webhook_tolerance_s: int = 300

    max_audio_bytes: int = 20 * 1024 * 1024
    max_audio_seconds: float = 30.0
    min_audio_seconds: float = 0.3
    max_reference_words: int = 60
    max_attempts: int = 5
    # The sweeper: a queued row older than this lost its message (broker flushed): publish again.
    republish_after_s: float = 300
    # A running row older than this lost its worker; keep it above the hard task time limit.
    stuck_after_s: float = 960
    sweep_interval_s: float = 30.0
    deliver_poll_interval_s: float = 10.0
    discover_interval_s: float = 300.0
    score_batch_size: int = 8

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    public_base_url: str = "http://127.0.0.1:8000"

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if value and "://" not in value:
            raise ValueError(f"not a SQLAlchemy URL (expected e.g. postgresql+psycopg://host/db): {value!r}")
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in BROKER_SCHEMES:
            raise ValueError(f"unsupported broker scheme {scheme!r}; use one of {sorted(BROKER_SCHEMES)}")
        return value

    @field_validator("s3_endpoint_url", "public_base_url")
    @classmethod
    def _check_http_url(cls, value: str | None) -> str | None:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"not an http(s) URL: {value!r}")
        return value

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'apa-fleet.db').resolve()}"

    @property
    def effective_storage_root(self) -> Path:
        return (Path(self.storage_root) if str(self.storage_root) not in ("", ".") else self.var_dir / "objects").resolve()

    @property
    def effective_model_path(self) -> str:
        return self.model_path or str((self.var_dir / "models" / "tiny-qwen2-audio").resolve())

    @property
    def uses_tiny_model(self) -> bool:
        return not self.model_path

    @property
    def effective_engine(self) -> str:
        """The engine that scores: the configured one, else qwen2-audio for configured weights, else gop."""
        return self.engine or ("qwen2-audio" if self.model_path else "gop")

    @property
    def scores_are_tiny(self) -> bool:
        """True when served scores come from the tiny random Qwen2-Audio (never with the gop engine)."""
        return self.effective_engine == "qwen2-audio" and self.uses_tiny_model

    @property
    def registry_base_model(self) -> str:
        """The adapter registry's key for the base model (adapters only fit the model they were trained on)."""
        return self.effective_model_path if not self.uses_tiny_model else "tiny-qwen2-audio"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build `Settings(...)` directly instead."""
    return Settings()
