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


from pydantic import Field, SecretStr, field_validator, model_validator
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

    # Object storage: an explicit backend, never guessed from which credentials happen to be set
    # (with IAM roles no key and no endpoint is set, and a guess would pick the pod's own disk).
    storage_backend: Literal["local", "s3"] = Field(
        default="local",
        description="`local`: objects are files under storage_root, tenants' paths under tenants/<tenant id>/; "
        "`s3`: objects are `s3://bucket/key` (credentials from the settings below or the default AWS chain).",
    )
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
    # The sweeper: a queued row due for longer than this lost its message (broker flushed): publish again.
    republish_after_s: float = 300
    # Fallback for running rows without a lease (claimed before leases existed); keep it above
    # the hard task time limit. Rows with a lease return when the lease expires.
    stuck_after_s: float = 960
    # A claim's lease: the worker refreshes it every lease_s/3 while the round runs, so a dead
    # worker's rows return after at most lease_s + sweep_interval_s.
    lease_s: float = 30.0
    sweep_interval_s: float = 15.0
    # The shared retry policy for transient faults (fleet/retry.py): backoff base and cap, and how
    # long work may keep failing before it is dead-lettered (`retry_window_exhausted`).
    retry_base_s: float = 2.0
    retry_cap_s: float = 300.0
    retry_max_age_s: float = 3600.0
    delivery_retry_max_age_s: float = 21600.0
    # Worker liveness: pool children beat every worker_heartbeat_s (a file under heartbeat_dir and
    # a database row); a child is unhealthy when its last beat is older than worker_stale_after_s,
    # it failed to load its model, or it is still loading after worker_load_timeout_s.
    worker_heartbeat_s: float = 10.0
    worker_stale_after_s: float = 30.0
    worker_load_timeout_s: float = 600.0
    # Celery kills a pool child that has not signalled "up" within this time (its default is 4 s).
    worker_proc_alive_timeout_s: float = 60.0
    heartbeat_dir: Path = Field(default=Path(""), description="Heartbeat files; empty = var_dir/heartbeats.")
    deliver_poll_interval_s: float = 10.0
    discover_interval_s: float = 300.0
    score_batch_size: int = 8
    # Cut Qwen2-Audio's 30 s encoder window to the longest clip of each scoring call: the same scores
    # up to float rounding (measured: max 1.1e-6 on expected values, no argmax change), several times
    # less encoder work for short clips. Off by default until checked with the real weights on GPU.
    trim_audio_window: bool = False

    # Callbacks go only to https URLs on the tenant's registered origin, never to private addresses;
    # this lets the embedded mode and tests post to http://127.0.0.1 (loopback only, nothing else).
    callback_allow_loopback_http: bool = False

    gateway_host: str = Field(default="127.0.0.1", description="Interface the gateway binds.")
    gateway_port: int = Field(default=8000, description="Port the gateway binds.")
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="How clients (and the demo) reach the gateway; unset = from host and port.",
    )

    @model_validator(mode="after")
    def _default_public_base_url(self) -> Settings:
        # Changing only APA_GATEWAY_PORT must not leave the demo and `run` knocking on port 8000.
        if "public_base_url" not in self.model_fields_set:
            host = "127.0.0.1" if self.gateway_host in ("0.0.0.0", "::", "") else self.gateway_host
            host = f"[{host}]" if ":" in host else host
            self.public_base_url = f"http://{host}:{self.gateway_port}"
        return self

    # LTI 1.3 tool (api_gateway/lti, workers/lti_passback.py)
    lti_leeway_s: int = 60  # clock skew allowed on id_token exp/iat
    lti_state_ttl_s: int = 600  # an OIDC login must come back within this
    lti_launch_ttl_s: int = 7200  # how long a launch's recording page stays usable
    lti_jwks_cache_s: int = 300  # platform key sets are cached this long (refetched on an unknown kid)
    lti_max_grade_attempts: int = 8

    # Signed links (training reports openable in a browser without the API key header)
    signed_link_secret: SecretStr | None = None  # unset: a random secret per gateway process
    signed_link_ttl_s: int = Field(default=900, ge=1)

    # Intake at the floor (issue 10; README "Gateway capacity").
    gateway_workers: int = Field(default=1, ge=1, description="uvicorn worker processes of `apa-fleet gateway`.")
    gateway_max_inflight: int = Field(
        default=32, ge=1, description="Requests in progress per gateway process; beyond it a 503 with Retry-After."
    )
    db_pool_size: int = Field(default=10, ge=1, description="Pooled database connections per process.")
    db_max_overflow: int = Field(default=5, ge=0)
    db_pool_timeout_s: float = Field(default=2.0, gt=0, description="Wait for a pooled connection, then 503.")
    auth_cache_ttl_s: float = Field(
        default=5.0, ge=0, description="API keys and tenants are cached this long: a revocation takes effect within it."
    )
    intake_head_check: bool = Field(
        default=True,
        description="HEAD the audio object at intake: an immediate 422 for a missing or oversized object, "
        "at the cost of one S3 round trip per submission (off: the worker reports it as a failed submission).",
    )

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

    @model_validator(mode="after")
    def _check_retry_timing(self) -> Settings:
        # A countdown message waits unacknowledged in Redis; past the visibility timeout Redis
        # hands it out again, so every retry wait must stay below it (DESIGN.md, Celery rules).
        if self.retry_cap_s >= self.redis_visibility_timeout_s:
            raise ValueError(f"APA_RETRY_CAP_S ({self.retry_cap_s}) must be below APA_REDIS_VISIBILITY_TIMEOUT_S "
                             f"({self.redis_visibility_timeout_s})")
        if self.lease_s <= 0 or self.worker_heartbeat_s >= self.worker_stale_after_s:
            raise ValueError("APA_LEASE_S must be positive and APA_WORKER_HEARTBEAT_S below APA_WORKER_STALE_AFTER_S")
        return self

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'apa-fleet.db').resolve()}"

    @property
    def effective_storage_root(self) -> Path:
        return (Path(self.storage_root) if str(self.storage_root) not in ("", ".") else self.var_dir / "objects").resolve()

    @property
    def effective_heartbeat_dir(self) -> Path:
        return (Path(self.heartbeat_dir) if str(self.heartbeat_dir) not in ("", ".") else self.var_dir / "heartbeats").resolve()

    def retry_policy(self, *, delivery: bool = False):
        """The shared retry policy with this configuration (delivery has a longer window: an LMS
        can be down for hours and still wants its results)."""
        from fleet.retry import RetryPolicy

        return RetryPolicy(base_s=self.retry_base_s, cap_s=self.retry_cap_s,
                           max_age_s=self.delivery_retry_max_age_s if delivery else self.retry_max_age_s)

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

    def registry_key(self, engine: str | None = None) -> str:
        """The registry key (`adapters.base_model`) of an engine's model versions: `gop` for gop heads,
        the base model for LoRA adapters (they only fit the model they were trained on)."""
        engine = engine or self.effective_engine
        return "gop" if engine == "gop" else self.registry_base_model

    @property
    def registry_base_model(self) -> str:
        """The adapter registry's key for the base model (adapters only fit the model they were trained on)."""
        return self.effective_model_path if not self.uses_tiny_model else "tiny-qwen2-audio"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build `Settings(...)` directly instead."""
    return Settings()
