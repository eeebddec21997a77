"""Training defaults (env `APA_TRAIN_*`) and the per-job parameters that override them.

`TrainingDefaults` is the operator's configuration of the training queue; a job's `params` (from
the API, the CLI or the threshold trigger) override a subset of it. `resolve_params` merges the
two into `JobParams` and refuses unknown keys, so a typo such as `"epoch": 5` fails when the job is
created instead of silently training with the default.

The defaults are the paper's (section 3.2): LoRA rank 8, lr 1e-4, cosine schedule with 10 %
warm-up, batch 1 x 8 gradient-accumulation steps, 3 epochs; SimPO beta 0.1, gamma 0.5, lambda 0.1.

Torch-free and shared: the gateway validates job params with it without importing `training_jobs`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pronunciation.schema import Granularity

ASPECT_KEYS: tuple[str, ...] = (
    "sentence.accuracy",
    "sentence.fluency",
    "sentence.prosody",
    "sentence.completeness",
    "sentence.total",
    "word.accuracy",
    "word.stress",
    "word.total",
    "phone.accuracy",
)
"""Every aspect the evaluation can report, as `<granularity>.<aspect>`."""

DEFAULT_HEADLINE: tuple[str, ...] = (
    "sentence.total",
    "sentence.accuracy",
    "sentence.fluency",
    "sentence.prosody",
    "word.total",
)


def _check_aspects(value: list[str]) -> list[str]:
    bad = [a for a in value if a not in ASPECT_KEYS]
    if bad:
        raise ValueError(f"unknown aspects {bad}; known: {list(ASPECT_KEYS)}")
    if not value:
        raise ValueError("at least one headline aspect is needed")
    return value


class _Tunable(BaseModel):
    """The knobs a job may override (shared by TrainingDefaults and JobParams)."""

    epochs: int = Field(default=3, ge=1, le=1000)
    lr: float = Field(default=1e-4, gt=0, le=1.0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    grad_accum: int = Field(default=8, ge=1, le=1024)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    checkpoint_every: int = Field(default=50, ge=1, description="Optimizer steps between checkpoints.")
    simpo: bool = False
    simpo_epochs: int = Field(default=1, ge=1)
    simpo_lr: float = Field(default=1e-4, gt=0, le=1.0)
    simpo_beta: float = Field(default=0.1, gt=0)
    simpo_gamma: float = Field(default=0.5, ge=0)
    simpo_lambda: float = Field(default=0.1, ge=0)
    heldout_fraction: float = Field(default=0.2, gt=0, lt=1)
    min_heldout: int = Field(
        default=10, ge=1,
        description="Held-out utterances needed for an evaluation to decide a promotion; below it the job "
        "says so and leaves the adapter a candidate.",
    )
    headline_aspects: list[str] = Field(default_factory=lambda: list(DEFAULT_HEADLINE))
    promote_metric: Literal["scc", "pcc"] = "scc"
    auto_promote: bool = True
    granularity: Granularity = Granularity.FULL
    max_items: int | None = Field(default=None, ge=2)
    seed: int = 0
    eval_batch_size: int = Field(default=8, ge=1)
    # the gop engine's head: a named recipe (pronunciation.gop.training.RECIPES), each knob overridable
    gop_recipe: Literal["fast", "full"] = Field(
        default="fast", description="gop: 'fast' (1 transformer seed, 200/150 boosting rounds: the queue's default, "
        "same dev-carve quality) or 'full' (the shipped head's: 3 seeds, 400/300 rounds, ~5x the CPU).")
    gop_seeds: int | None = Field(default=None, ge=0, le=16,
                                  description="gop: transformer seeds averaged (0 = boosting only; default: the recipe's).")
    gop_epochs: int | None = Field(default=None, ge=1, le=1000, description="gop: transformer epochs (default: the recipe's).")
    gop_boosting: bool = Field(default=True, description="gop: train the gradient-boosting stack.")
    gop_iterations: int | None = Field(default=None, ge=1, le=5000,
                                       description="gop: boosting rounds per model (default: the recipe's).")
    gop_min_samples_leaf: int = Field(default=40, ge=1, description="gop: boosting's least samples per leaf.")

    @field_validator("headline_aspects")
    @classmethod
    def _known_aspects(cls, value: list[str]) -> list[str]:
        return _check_aspects(value)


class TrainingDefaults(_Tunable, BaseSettings):
    """Operator configuration of the training queue, from `APA_TRAIN_*` variables."""

    model_config = SettingsConfigDict(env_prefix="APA_TRAIN_", env_file=".env", extra="ignore")

    batch_policy: Literal["reject", "quarantine"] = Field(
        default="quarantine",
        description="reject: any bad item rejects the whole batch; quarantine: bad items are excluded.",
    )
    min_audio_seconds: float = 0.3
    max_audio_seconds: float = 30.0  # Qwen2-Audio's encoder window
    max_audio_bytes: int = 20 * 1024 * 1024
    trigger_threshold: int = Field(default=500, ge=1, description="Unused accepted utterances that start a job.")
    discover_root: str = Field(default="", description="Prefix scanned for new batches; empty = <bucket>/annotation-batches/.")
    max_job_attempts: int = Field(default=3, ge=1, description="Runs of one job (crash, kill) before it fails for good.")
    stuck_queued_after_s: float = 900.0
    task_time_limit_s: int = 7 * 24 * 3600
    cpu_threads: int = Field(default=0, ge=0, description="torch threads on CPU; 0 = torch's default.")
    progress_interval_s: float = Field(default=2.0, ge=0, description="Least time between progress writes to the job row.")
    keep_checkpoints: int = Field(default=2, ge=1)
    validate_chunk_items: int = Field(default=50, ge=1, description="Utterances validated per committed chunk.")
    revalidate_after_s: float = Field(default=900.0, gt=0, description="A `registered` batch without progress "
                                      "for this long gets its validation task published again by the beat.")
    encode_cache_items: int = Field(default=512, ge=0, description="Tokenized training examples kept in memory.")
    gop_feature_cache: str = Field(default="", description="Folder of cached GOP features (one file per audio + "
                                   "reference); empty = <var_dir>/cache/gop-features.")


class JobParams(_Tunable):
    """A job's effective settings: TrainingDefaults overridden by the job's params."""

    model_config = ConfigDict(extra="forbid")

    batch_ids: list[str] | None = Field(default=None, description="Train on these batches only (default: all accepted).")


TUNABLE_KEYS: frozenset[str] = frozenset(_Tunable.model_fields) | {"batch_ids"}


class ParamsError(ValueError):
    """Job params that cannot be used; the message names the key."""


def resolve_params(defaults: TrainingDefaults, params: dict[str, Any] | None) -> JobParams:
    """Job params over the defaults; raises ParamsError on unknown keys or bad values."""
    params = dict(params or {})
    unknown = sorted(set(params) - TUNABLE_KEYS)
    if unknown:
        raise ParamsError(f"unknown training params {unknown}; allowed: {sorted(TUNABLE_KEYS)}")
    base = {k: getattr(defaults, k) for k in _Tunable.model_fields}
    try:
        return JobParams(**{**base, **params})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "params"
        raise ParamsError(f"training param {where}: {err['msg']}") from None
