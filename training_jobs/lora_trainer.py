"""The `qwen2-audio` trainer: LoRA SFT (-> SimPO) on Qwen2-Audio, resumable from checkpoints.

    model + stages -> checkpoints (uploaded as they are written) -> adapter folder
    -> candidate and baseline adapter evaluated on the held-out set through the serving runtime

torch, transformers and peft are imported inside the methods (the job module stays light).
"""

from __future__ import annotations

import resource
import shutil
import time
from pathlib import Path
from typing import Any

from fleet.settings import Settings
from fleet.storage import ObjectStore
from training_jobs.trainers import Baseline, TrainContext, Trained


class LoraTrainer:
    engine = "qwen2-audio"

    def registry_key(self, settings: Settings) -> str:
        return settings.registry_key(self.engine)

    def default_baseline_label(self, settings: Settings) -> str:
        return "base"

    def train(self, ctx: TrainContext) -> Trained:
        import torch

        from pronunciation.runtime import resolve_device
        from pronunciation.tiny_model import ensure_model_files
        from training_jobs import loop, sft, simpo
        from training_jobs.report import STAGE_LABELS

        params, defaults, settings, store, rec = ctx.params, ctx.defaults, ctx.settings, ctx.store, ctx.rec
        device = resolve_device(settings.device)
        if device.type == "cpu" and defaults.cpu_threads:
            torch.set_num_threads(defaults.cpu_threads)
        torch.manual_seed(params.seed)  # LoRA init: the same job starts from the same weights
        rec.log(f"training on {device.type}")

        model_path = ensure_model_files(settings.effective_model_path, tiny=settings.uses_tiny_model)
        model, processor = sft.load_trainable_model(model_path, device)
        encoder = sft.ExampleEncoder(processor, params.granularity, defaults.encode_cache_items)
        stages = [sft.sft_stage(model, encoder, ctx.split.train, device, epochs=params.epochs, lr=params.lr,
                                grad_accum=params.grad_accum, warmup_ratio=params.warmup_ratio)]
        if params.simpo:
            stages.append(simpo.simpo_stage(
                model, encoder, ctx.split.train, device, epochs=params.simpo_epochs, lr=params.simpo_lr,
                grad_accum=params.grad_accum, warmup_ratio=params.warmup_ratio, beta=params.simpo_beta,
                gamma=params.simpo_gamma, lam=params.simpo_lambda, seed=params.seed,
            ))

        # resume from the last checkpoint when there is one
        resume_dir = None
        if ctx.checkpoint_uri:
            name = ctx.checkpoint_uri.rstrip("/").rsplit("/", 1)[-1]
            resume_dir = ctx.workdir / "resume" / name
            shutil.rmtree(resume_dir, ignore_errors=True)
            store.download_folder(ctx.checkpoint_uri, resume_dir)

        def on_checkpoint(folder: Path, state: loop.TrainState) -> None:
            uri = f"{ctx.prefix}/checkpoints/{folder.name}"
            store.upload_folder(folder, uri)
            last = state.losses[-1][2] if state.losses else None
            rec.update(f"checkpoint at step {state.global_step}/{state.total_steps}: {uri}", checkpoint_uri=uri,
                       step=state.global_step, total_steps=state.total_steps, latest_loss=last)

        first = 1
        for st in stages:  # say which optimizer steps belong to which stage (SimPO is its own stage)
            rec.log(f"stage {STAGE_LABELS.get(st.name, st.name)}: steps {first}-{first + st.total_steps - 1} "
                    f"({st.epochs} epoch(s) of {st.n_items} items)")
            first += st.total_steps

        trainer = loop.Trainer(
            model, stages, seed=params.seed, checkpoint_every=params.checkpoint_every,
            checkpoint_dir=ctx.workdir / "checkpoints", keep_checkpoints=defaults.keep_checkpoints,
            max_grad_norm=params.max_grad_norm, weight_decay=params.weight_decay,
            on_checkpoint=on_checkpoint, progress=ctx.on_progress,
        )
        rec.update(total_steps=trainer.total_steps)
        t_train = time.monotonic()
        state = trainer.run(resume_dir)
        train_s = time.monotonic() - t_train
        steps_run = state.global_step - (state.resumed_from or 0)
        if state.resumed_from is not None:
            rec.log(f"resumed from checkpoint at step {state.resumed_from}/{state.total_steps}; "
                    f"ran {steps_run} remaining steps")
        adapter_dir = ctx.workdir / "adapter"
        shutil.rmtree(adapter_dir, ignore_errors=True)
        model.save_pretrained(str(adapter_dir))
        del trainer, stages, encoder  # optimizer state and cached examples: not needed to evaluate
        if device.type == "cuda":
            torch.cuda.empty_cache()
        training = {
            "steps": state.global_step, "steps_this_attempt": steps_run, "resumed_from_step": state.resumed_from,
            "train_seconds": round(train_s, 2), "steps_per_s": round(steps_run / train_s, 3) if train_s > 0 else None,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "final_loss": state.losses[-1][2] if state.losses else None, "device": device.type,
        }
        if device.type == "cuda":
            training["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        rec.update(f"training done: {state.global_step} steps, {training['steps_per_s']} steps/s",
                   step=state.global_step, total_steps=state.total_steps, latest_loss=training["final_loss"])
        return Trained(adapter_dir, training, list(state.losses), state.global_step, state.total_steps,
                       state=(model, processor, model_path))

    def evaluate(self, ctx: TrainContext, trained: Trained, baseline: Baseline) -> dict[str, dict]:
        from training_jobs import evaluate

        model, processor, model_path = trained.state
        base_model = model.unload()  # the LoRA layers out, the base weights stay in memory
        results = evaluate.evaluate_adapters(
            base_model, processor, model_path=model_path, examples=ctx.split.heldout,
            granularity=ctx.params.granularity, adapters={"candidate": trained.folder, baseline.label: baseline.folder},
            batch_size=ctx.params.eval_batch_size,
        )
        return {"candidate": results["candidate"], "baseline": results[baseline.label]}

    def extra_metrics(self, ctx: TrainContext, trained: Trained) -> dict[str, Any]:
        from pronunciation.tiny_model import is_tiny_model

        return {"model_is_tiny": is_tiny_model(trained.state[2])}

    def save(self, store: ObjectStore, settings: Settings, folder: Path, version: str, metrics: dict[str, Any]) -> str:
        from training_jobs.registry import save_adapter

        return save_adapter(store, settings, folder, version, metrics)
