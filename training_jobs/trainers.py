"""One trainer per scoring engine, behind one small interface the job pipeline calls.

The job (`training_jobs.job`) owns what every engine shares: the pinned batches, the
speaker-disjoint split, the promotion gate, the registry row, promotion, the report and the row's
status. A `Trainer` owns what differs: how a candidate is trained from the split's train part,
how candidate and baseline are scored on its held-out part (into the same metrics that
`training_jobs.evaluate.compute_metrics` produces, so one gate decides for both), and which files
make a model version in object storage.

    qwen2-audio -> training_jobs.lora_trainer.LoraTrainer (LoRA SFT [+ SimPO] on Qwen2-Audio)
    gop         -> training_jobs.gop_trainer.GopTrainer   (the boosting + transformer head)

`trainer_for(engine)` picks one from the TRAINERS table; nothing else branches on the engine.
Trainer modules import their heavy libraries (torch, pocketsphinx's model) inside their methods.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from fleet.settings import Settings
from fleet.storage import ObjectStore
from training_jobs.config import JobParams, TrainingDefaults
from training_jobs.dataset import Split
from training_jobs.recorder import JobRecorder

ProgressFn = Callable[[int, int, float, float], None]


@dataclass
class TrainContext:
    """Everything a trainer may need from the job that runs it."""

    job_id: uuid.UUID
    settings: Settings
    sessions: sessionmaker[Session]
    store: ObjectStore
    params: JobParams
    defaults: TrainingDefaults
    split: Split
    workdir: Path
    prefix: str  # the job's folder in object storage (checkpoints, report)
    checkpoint_uri: str | None  # the last checkpoint of an earlier attempt, if any
    rec: JobRecorder
    progress: ProgressFn | None = None

    def on_progress(self, step: int, total: int, epoch: float, loss: float) -> None:
        """Progress to the job row and to the caller's bar (the CLI's)."""
        self.rec.progress(step, total, epoch, loss)
        if self.progress is not None:
            self.progress(step, total, epoch, loss)


@dataclass
class Trained:
    """A trained candidate, saved in `folder`, with what its training measured."""

    folder: Path
    training: dict[str, Any]
    losses: list[tuple[int, str, float]] = field(default_factory=list)
    step: int = 0
    total_steps: int = 0
    state: Any = None  # whatever the trainer's evaluate needs from training (e.g. the model in memory)


@dataclass(frozen=True)
class Baseline:
    """What the candidate must beat: the registry's active version (label `active:<v>`), or the
    engine's own default when none is active (`version` None)."""

    label: str
    version: str | None
    folder: Path | None


class Trainer(Protocol):
    """What the job pipeline asks of an engine's trainer."""

    engine: str

    def registry_key(self, settings: Settings) -> str:
        """The registry's key (`adapters.base_model`) of this engine's model versions."""
        ...

    def default_baseline_label(self, settings: Settings) -> str:
        """The baseline's label when no version is active (the base model, the shipped head)."""
        ...

    def train(self, ctx: TrainContext) -> Trained: ...

    def evaluate(self, ctx: TrainContext, trained: Trained, baseline: Baseline) -> dict[str, dict]:
        """{"candidate": metrics, "baseline": metrics} on ctx.split.heldout (compute_metrics' form)."""
        ...

    def extra_metrics(self, ctx: TrainContext, trained: Trained) -> dict[str, Any]:
        """Engine-specific facts for the job's metrics."""
        ...

    def save(self, store: ObjectStore, settings: Settings, folder: Path, version: str, metrics: dict[str, Any]) -> str:
        """Upload a model version (folder + metrics.json) and return its URI."""
        ...


TRAINERS: dict[str, str] = {
    "qwen2-audio": "training_jobs.lora_trainer:LoraTrainer",
    "gop": "training_jobs.gop_trainer:GopTrainer",
}


def trainer_for(engine: str) -> Trainer:
    """The engine's trainer; an engine without one is a TrainingError of the job."""
    from training_jobs.job import TrainingError

    spec = TRAINERS.get(engine)
    if spec is None:
        raise TrainingError(f"no trainer for engine {engine!r}; trainable: {', '.join(sorted(TRAINERS))}")
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)()
