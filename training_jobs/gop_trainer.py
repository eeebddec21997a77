"""The `gop` trainer: the GOP engine's head (boosting stack + GOPT-style transformers) retrained on
annotation batches, with the same code that built the shipped head (`pronunciation.gop.training`).

    features of every utterance (cached, training_jobs.gop_features)
    -> fit_head on the split's train part -> the head folder (head.pkl.xz + head.json)
    -> candidate and baseline head scored on the held-out part -> the same metrics and gate as LoRA

A model version is the head folder plus metrics.json under `<adapter_prefix><version>/`, with a
registry row whose key (`adapters.base_model`) is `gop`; score workers running the gop engine load
the active one (workers.model_pool). With no active version the baseline is the head the workers
score with then: `APA_GOP_HEAD_DIR`, else the shipped one.

Utterances the aligner cannot handle are left out of training and of both evaluations alike (the
job's metrics count them). No checkpoints: the head trains in minutes, and a resumed job finds the
features it had already extracted in the cache.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

from fleet.settings import Settings
from fleet.storage import ObjectStore
from training_jobs.annotations import UtteranceAnnotation
from training_jobs.config import JobParams
from training_jobs.dataset import Example
from training_jobs.trainers import Baseline, TrainContext, Trained

HEAD_FILES = ("head.pkl.xz", "head.json")


def corpus_labels(a: UtteranceAnnotation) -> dict[str, Any]:
    """An annotation as the speechocean762 entry `pronunciation.gop.targets` reads."""
    s = a.sentence
    return {
        "accuracy": s["accuracy"], "fluency": s["fluency"], "prosodic": s["prosody"],
        "completeness": s["completeness"], "total": s["total"],
        "words": [{"text": w.text, "accuracy": w.accuracy, "stress": w.stress, "total": w.total,
                   "phones": list(w.phones), "phones-accuracy": list(w.phone_scores)} for w in a.words],
    }


def head_settings(params: JobParams, workers: int):
    """The job's params as `HeadSettings`: the named recipe, with any knob the params set."""
    from pronunciation.gop.training import recipe_settings

    return recipe_settings(
        params.gop_recipe, seeds=params.gop_seeds, first_seed=params.seed, epochs=params.gop_epochs,
        phone_iterations=params.gop_iterations, upper_iterations=params.gop_iterations,
        min_samples_leaf=params.gop_min_samples_leaf, use_boosting=params.gop_boosting, parallel=workers > 1,
    )


def configured_head(settings: Settings):
    """The head gop workers score with when no version is active."""
    from pronunciation.gop.head import shipped_head

    return shipped_head(settings.gop_head_dir or None)


class GopTrainer:
    engine = "gop"

    def registry_key(self, settings: Settings) -> str:
        return settings.registry_key(self.engine)

    def default_baseline_label(self, settings: Settings) -> str:
        return f"{'configured' if settings.gop_head_dir else 'shipped'}:{configured_head(settings).version}"

    @staticmethod
    def _workers(ctx: TrainContext) -> int:
        """Processes for extraction and fitting: APA_TRAIN_CPU_THREADS, else every core; one inside a
        daemonic process (a Celery prefork child), which may not start children of its own."""
        import multiprocessing

        if multiprocessing.current_process().daemon:
            return 1
        return ctx.defaults.cpu_threads or os.cpu_count() or 1

    def train(self, ctx: TrainContext) -> Trained:
        from pronunciation.gop.dataset import LabelledUtterance
        from pronunciation.gop.training import fit_head
        from training_jobs.gop_features import FeatureCache, job_features

        workers = self._workers(ctx)
        settings = head_settings(ctx.params, workers)
        if not settings.use_boosting and not settings.transformer_seeds:
            from training_jobs.job import TrainingError

            raise TrainingError("gop_boosting is off and gop_seeds is 0: the head would have no model")
        folder = Path(ctx.defaults.gop_feature_cache) if ctx.defaults.gop_feature_cache else (
            ctx.settings.var_dir / "cache" / "gop-features")
        examples = [*ctx.split.train, *ctx.split.heldout]
        t0 = time.monotonic()
        ctx.rec.log(f"GOP features for {len(examples)} utterances ({workers} process(es), cache {folder.resolve()})")
        feats, failed = job_features(examples, FeatureCache(folder.resolve()), workers=workers,
                                     progress=lambda done, total: ctx.on_progress(done, total, 0.0, float("nan")))
        feature_s = time.monotonic() - t0
        if failed:
            ctx.rec.log(f"{len(failed)} utterance(s) without features, left out: "
                        + "; ".join(f"{u}: {why}" for u, why in sorted(failed.items())[:5]))
        train = [LabelledUtterance(e.utt_id, Path(e.utt_id), e.reference, corpus_labels(e.annotation), e.speaker)
                 for e in ctx.split.train if e.utt_id in feats]
        if not train:
            from training_jobs.job import TrainingError

            raise TrainingError("no training utterance could be aligned")
        ctx.rec.log(f"training the gop head on {len(train)} utterances: {settings}")
        t1 = time.monotonic()
        head = fit_head(train, feats, settings, log=ctx.rec.log)
        train_s = time.monotonic() - t1
        head.metadata.update({"engine": "gop", "training_job_id": str(ctx.job_id)})
        out = ctx.workdir / "head"
        shutil.rmtree(out, ignore_errors=True)
        head.save(out)
        training = {
            "feature_seconds": round(feature_s, 2), "train_seconds": round(train_s, 2),
            "utterances_without_features": len(failed), "train_utterances": len(train), "workers": workers,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "device": "cpu",
            "steps": 1, "steps_per_s": None,
        }
        ctx.rec.update(f"head trained in {train_s:.1f} s (features {feature_s:.1f} s)")
        return Trained(out, training, [], 1, 1, state=(head, feats))

    def evaluate(self, ctx: TrainContext, trained: Trained, baseline: Baseline) -> dict[str, dict]:
        from pronunciation.gop.head import GopHead
        from training_jobs.evaluate import compute_metrics

        head, feats = trained.state
        base = GopHead.load(baseline.folder) if baseline.folder is not None else configured_head(ctx.settings)
        heldout = [e for e in ctx.split.heldout if e.utt_id in feats]
        trained.training["heldout_scored"] = len(heldout)
        return {"candidate": _metrics(head, heldout, feats, ctx.params, compute_metrics),
                "baseline": _metrics(base, heldout, feats, ctx.params, compute_metrics)}

    def extra_metrics(self, ctx: TrainContext, trained: Trained) -> dict[str, Any]:
        return {"model_is_tiny": False}

    def save(self, store: ObjectStore, settings: Settings, folder: Path, version: str, metrics: dict[str, Any]) -> str:
        """Upload the head folder, its head.json naming the registry version (the engine reports it)."""
        from training_jobs.registry import METRICS_FILE, RegistryError, adapter_uri

        for needed in HEAD_FILES:
            if not (folder / needed).is_file():
                raise RegistryError(f"{folder} is not a gop head folder: {needed} is missing")
        meta = json.loads((folder / "head.json").read_text())
        meta["version"] = version
        (folder / "head.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        uri = adapter_uri(store, settings, version)
        store.put(f"{uri}/{METRICS_FILE}", json.dumps(metrics, indent=2, sort_keys=True).encode(),
                  content_type="application/json")
        for name in HEAD_FILES:
            store.put(f"{uri}/{name}", (folder / name).read_bytes())
        return uri


def _metrics(head, examples: list[Example], feats: dict, params: JobParams, compute_metrics) -> dict:
    from pronunciation.gop.head import slot_values

    preds = [slot_values(head.predict(feats[e.utt_id]), e.reference, params.granularity) for e in examples]
    return compute_metrics(preds, examples, params.granularity)
