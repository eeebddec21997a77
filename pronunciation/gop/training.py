"""Fit a `GopHead` on labelled utterances (features + expert labels + speakers) and measure it.

One function used by the rebuild script, the dev-carve tuning and the training queue, so the
shipped head and a retrained one are made the same way.
"""

from __future__ import annotations

import hashlib
import pickle
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from pronunciation.corpus_metrics import corpus_metrics
from pronunciation.gop.boosting import FOLDS, BoostingSettings, train_stack
from pronunciation.gop.dataset import LabelledUtterance
from pronunciation.gop.features import FEATURE_VERSION, UtteranceFeatures
from pronunciation.gop.head import GopHead, HeadScores, slot_values
from pronunciation.gop.processes import process_pool
from pronunciation.gop.transformer_train import TransformerSettings, train_transformer


@dataclass(frozen=True)
class HeadSettings:
    boosting: BoostingSettings = field(default_factory=BoostingSettings)
    transformer: TransformerSettings = field(default_factory=TransformerSettings)
    transformer_seeds: tuple[int, ...] = (0, 1, 2)
    use_boosting: bool = True
    parallel: bool = True  # transformer seeds in their own processes, beside the boosting stack


RECIPES: dict[str, HeadSettings] = {
    # the shipped head: the feasibility study's settings, ~650 CPU-seconds on 2,000 utterances
    "full": HeadSettings(),
    # the training queue's default: ~120 CPU-seconds (a fifth), the same quality on the dev carve
    "fast": HeadSettings(
        boosting=BoostingSettings(phone_iterations=200, upper_iterations=150, learning_rate=0.1),
        transformer=TransformerSettings(epochs=30),
        transformer_seeds=(0,),
    ),
}
"""Named recipes, chosen on a speaker-disjoint dev carve of train (`speaker_carve`: 100 speakers fit,
25 dev; `scripts/train_gop_head.py --dev`): every recipe from 94 to 641 CPU-seconds scored within
0.005 mean PCC of the others over the seven required columns (full 0.643, fast 0.642), while the
boosting stack alone lost 0.04. So the ensemble matters and more rounds, epochs or seeds do not;
the queue retrains with `fast`, in minutes on 2 cores. Figures: README, "Scoring engines"."""


def recipe_settings(
    name: str, *, seeds: int | None = None, first_seed: int = 0, epochs: int | None = None,
    phone_iterations: int | None = None, upper_iterations: int | None = None, learning_rate: float | None = None,
    min_samples_leaf: int | None = None, use_boosting: bool = True, parallel: bool = True,
) -> HeadSettings:
    """A named recipe with the knobs a caller sets (None keeps the recipe's): the one way the
    rebuild script's options and a training job's params become settings."""
    recipe = RECIPES[name]
    knobs = {"phone_iterations": phone_iterations, "upper_iterations": upper_iterations,
             "learning_rate": learning_rate, "min_samples_leaf": min_samples_leaf}
    boosting = replace(recipe.boosting, **{k: v for k, v in knobs.items() if v is not None})
    transformer = recipe.transformer if epochs is None else replace(recipe.transformer, epochs=epochs)
    n_seeds = len(recipe.transformer_seeds) if seeds is None else seeds
    return replace(recipe, boosting=boosting, transformer=transformer,
                   transformer_seeds=tuple(range(first_seed, first_seed + n_seeds)),
                   use_boosting=use_boosting, parallel=parallel)


def fit_head(
    items: list[LabelledUtterance], feats: dict[str, UtteranceFeatures], settings: HeadSettings = HeadSettings(),
    log=print,
) -> GopHead:
    """Train on every item that has features; metadata records data and settings (not metrics)."""
    use = [u for u in items if u.utt_id in feats]
    f = [feats[u.utt_id] for u in use]
    labels = [u.labels for u in use]
    speakers = [u.speaker for u in use]
    t0 = time.time()
    from pronunciation.gop.boosting import N_CI
    from pronunciation.gop.head_features import phone_rows, phone_stats

    stats = phone_stats(np.vstack([phone_rows(x) for x in f]), N_CI)  # the same statistics the stack computes
    seeds = settings.transformer_seeds
    pool = process_pool(len(seeds)) if settings.parallel and seeds else None
    fold_pool = process_pool(FOLDS + 1) if settings.parallel else None
    try:
        futures = [pool.submit(train_transformer, f, labels, stats, s, settings.transformer) for s in seeds] if pool else []
        stack = (train_stack(f, labels, speakers, settings.boosting, log=log, pool=fold_pool)
                 if settings.use_boosting else None)
        log(f"boosting trained in {time.time() - t0:.0f} s")
        if pool:
            transformers = [fu.result() for fu in futures]
        else:
            transformers = [train_transformer(f, labels, stats, s, settings.transformer) for s in seeds]
        log(f"{len(seeds)} transformer seeds trained; {time.time() - t0:.0f} s in all")
    finally:
        for p in (pool, fold_pool):
            if p:
                p.shutdown()
    meta = {
        "feature_version": FEATURE_VERSION,
        "train_utterances": len(use),
        "train_speakers": len(set(speakers)),
        "settings": asdict(settings),
    }
    return GopHead(stack, transformers, stats, meta)


def corpus_prediction(scores: HeadScores, reference) -> dict:
    """The head's scores as `apa-fleet evaluate` sees them: through the full Assessment."""
    from pronunciation.corpus_eval import corpus_entry
    from pronunciation.output_format import assessment_from_slots
    from pronunciation.schema import Granularity

    full = Granularity.FULL
    return corpus_entry(assessment_from_slots(reference, full, slot_values(scores, reference, full)))


def predict_items(head: GopHead, items: list[LabelledUtterance], feats: dict[str, UtteranceFeatures]) -> dict:
    """speechocean762-format predictions for every item with features."""
    return {u.utt_id: corpus_prediction(head.predict(feats[u.utt_id]), u.reference) for u in items if u.utt_id in feats}


def measure(head: GopHead, items: list[LabelledUtterance], feats: dict[str, UtteranceFeatures]) -> dict[str, dict]:
    """label -> {pcc, scc, rmse, n} on `items`."""
    pred = predict_items(head, items, feats)
    gold = {u.utt_id: u.labels for u in items}
    return {k: m.model_dump() for k, m in corpus_metrics(gold, pred).metrics.items()}


def head_digest(head: GopHead) -> str:
    """A content hash of the head's parameters: the model version's suffix.

    Each model is hashed on its own, after a pickle round trip: a model fitted in a worker process
    and the same model fitted here have equal parameters but not equal pickle bytes (which objects
    share a reference differs once one has crossed a process boundary, inside a model and between
    models). One model's round trip is byte-stable, so the digest names the parameters, not where
    they were fitted (tests/unit/gop/test_gop_head.py)."""
    b = head.boosting
    parts: list = [head.stats, *head.transformers]
    if b is not None:
        parts += [b.stats, b.phone, *(b.word[k] for k in sorted(b.word)), *(b.sentence[k] for k in sorted(b.sentence))]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(pickle.dumps(pickle.loads(pickle.dumps(part, protocol=5)), protocol=5))
    return digest.hexdigest()[:10]


def speaker_carve(items: list[LabelledUtterance], fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """(train, dev): a speaker-disjoint split, `fraction` of the speakers to dev."""
    speakers = sorted({u.speaker for u in items})
    rs = np.random.RandomState(seed)
    dev = set(rs.choice(speakers, max(1, int(len(speakers) * fraction)), replace=False))
    return [u for u in items if u.speaker not in dev], [u for u in items if u.speaker in dev]
