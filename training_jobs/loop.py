"""The training loop: stages of micro-batch losses, gradient accumulation, cosine schedule, and
checkpoints that resume EXACTLY.

Kept small and explicit (nanoGPT style) rather than wrapped in `transformers.Trainer`, because two
things here do not fit a stock trainer: Qwen2-Audio's audio inputs in a preference (SimPO) loss,
and a resume that must replay the very same optimizer steps after a worker was SIGKILLed.

Exact resume rests on three facts:
- the order of micro-batches is a pure function of (seed, stage, epoch): a seeded permutation per
  epoch, so step s always consumes the same items, whatever happened before;
- a checkpoint holds everything that changes across steps: LoRA weights, AdamW moments, the
  scheduler position, the step counters, the loss history and the torch RNG state (LoRA dropout);
- checkpoints are taken only on optimizer-step boundaries, so no half-accumulated gradient is lost.

A run is a list of `Stage`s (SFT, then optionally SimPO); each stage gets a fresh AdamW and its own
cosine schedule with warm-up. `global_step` counts optimizer steps over all stages.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, float, float], None]  # (step, total_steps, epoch, loss)
CheckpointFn = Callable[[Path, "TrainState"], None]

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"


@dataclass
class Stage:
    """One training stage: `loss_fn(i)` is the loss of micro-batch i (of `n_items` per epoch)."""

    name: str
    n_items: int
    epochs: int
    lr: float
    grad_accum: int
    warmup_ratio: float
    loss_fn: Callable[[int], torch.Tensor]

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n_items / self.grad_accum)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        return math.ceil(self.warmup_ratio * self.total_steps)


@dataclass
class TrainState:
    stage: int = 0  # index of the stage in progress (len(stages) when done)
    stage_step: int = 0  # optimizer steps done in that stage
    global_step: int = 0
    total_steps: int = 0
    losses: list[tuple[int, str, float]] = field(default_factory=list)  # (global step, stage, loss)
    resumed_from: int | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> TrainState:
        data = dict(data)
        data["losses"] = [tuple(x) for x in data.get("losses", [])]
        return cls(**data)


class Trainer:
    """Runs `stages` on the trainable parameters of `model` (the LoRA weights of a PeftModel)."""

    def __init__(
        self,
        model,
        stages: list[Stage],
        *,
        seed: int = 0,
        checkpoint_every: int = 50,
        checkpoint_dir: Path,
        keep_checkpoints: int = 2,
        max_grad_norm: float = 1.0,
        weight_decay: float = 0.0,
        on_checkpoint: CheckpointFn | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        if not stages:
            raise ValueError("nothing to train: no stages")
        for s in stages:
            if s.n_items < 1:
                raise ValueError(f"stage {s.name}: no training items")
        self.model = model
        self.stages = stages
        self.seed = seed
        self.checkpoint_every = checkpoint_every
        self.checkpoint_dir = Path(checkpoint_dir)
        self.keep_checkpoints = keep_checkpoints
        self.max_grad_norm = max_grad_norm
        self.weight_decay = weight_decay
        self.on_checkpoint = on_checkpoint
        self.progress = progress
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters")

    @property
    def total_steps(self) -> int:
        return sum(s.total_steps for s in self.stages)

    # -- optimisation ------------------------------------------------------------------------

    def _optimizer(self, stage: Stage):
        from transformers import get_cosine_schedule_with_warmup

        opt = torch.optim.AdamW(self.params, lr=stage.lr, weight_decay=self.weight_decay)
        sched = get_cosine_schedule_with_warmup(opt, stage.warmup_steps, stage.total_steps)
        return opt, sched

    def micro_batches(self, k: int, stage_step: int) -> list[int]:
        """The items optimizer step `stage_step` of stage k consumes (a pure function: exact resume)."""
        stage = self.stages[k]
        epoch, pos = divmod(stage_step, stage.steps_per_epoch)
        order = np.random.default_rng([self.seed, k, epoch]).permutation(stage.n_items)
        return [int(i) for i in order[pos * stage.grad_accum : (pos + 1) * stage.grad_accum]]

    def _step(self, k: int, stage_step: int, opt, sched) -> float:
        stage = self.stages[k]
        items = self.micro_batches(k, stage_step)
        self.model.train()
        total = 0.0
        for i in items:
            loss = stage.loss_fn(i) / len(items)  # mean over the micro-batches of this step
            loss.backward()
            total += float(loss.detach())
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return total

    # -- the loop ----------------------------------------------------------------------------

    def run(self, resume_from: Path | None = None) -> TrainState:
        state = TrainState(total_steps=self.total_steps)
        opt = sched = None
        if resume_from is not None:
            state, opt, sched = self._load(Path(resume_from))
            log.info("resumed from %s at step %d/%d", resume_from, state.global_step, state.total_steps)
        while state.stage < len(self.stages):
            k = state.stage
            stage = self.stages[k]
            if opt is None:
                opt, sched = self._optimizer(stage)
            while state.stage_step < stage.total_steps:
                loss = self._step(k, state.stage_step, opt, sched)
                state.stage_step += 1
                state.global_step += 1
                state.losses.append((state.global_step, stage.name, loss))
                if self.progress is not None:
                    self.progress(state.global_step, state.total_steps, state.stage_step / stage.steps_per_epoch, loss)
                if state.stage_step == stage.total_steps:
                    state.stage, state.stage_step = k + 1, 0  # the next stage starts with a fresh optimizer
                    self._save(state, None, None)
                    break
                if state.global_step % self.checkpoint_every == 0:
                    self._save(state, opt, sched)
            opt = sched = None
        self.model.eval()
        return state

    # -- checkpoints -------------------------------------------------------------------------

    def _save(self, state: TrainState, opt, sched) -> Path:
        """Write a checkpoint folder atomically (temp folder, then rename), then hand it on."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        final = self.checkpoint_dir / f"step-{state.global_step:07d}"
        tmp = self.checkpoint_dir / f".{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        self.model.save_pretrained(str(tmp))  # adapter_config.json + adapter_model.safetensors
        if opt is not None:
            torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp / OPTIMIZER_FILE)
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, tmp / RNG_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(state.to_json()))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(self.checkpoint_dir.glob("step-*"))[: -self.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint at step %d: %s", state.global_step, final)
        if self.on_checkpoint is not None:
            self.on_checkpoint(final, state)
        return final

    def _load(self, folder: Path):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = TrainState.from_json(json.loads((folder / STATE_FILE).read_text()))
        if state.total_steps != self.total_steps:
            raise ValueError(
                f"checkpoint {folder} was made for {state.total_steps} steps, this run has {self.total_steps} "
                "(data or parameters changed): cannot resume exactly"
            )
        weights = load_file(str(folder / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(self.model, weights)
        missing = [k for k in getattr(result, "unexpected_keys", []) or []]
        if missing:
            raise ValueError(f"checkpoint {folder} has weights this model lacks: {missing[:5]}")
        opt = sched = None
        if (folder / OPTIMIZER_FILE).exists():
            opt, sched = self._optimizer(self.stages[state.stage])
            saved = torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
            opt.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
        rng = torch.load(folder / RNG_FILE, map_location="cpu", weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        state.resumed_from = state.global_step
        return state, opt, sched
