"""The shipped head: small enough to ship, and it reproduces the metrics recorded beside it."""

from __future__ import annotations

import math

from pronunciation.gop.head import HEAD_FILE, META_FILE, WEIGHTS_DIR
from tests.unit.gop.conftest import SAMPLE, needs_sample


def test_head_ships_in_the_package_with_its_record() -> None:
    assert (WEIGHTS_DIR / HEAD_FILE).stat().st_size < 8_000_000
    import json

    meta = json.loads((WEIGHTS_DIR / META_FILE).read_text())
    assert meta["engine"] == "gop" and meta["version"].startswith("gop-")
    assert meta["train_utterances"] == 2500 and meta["test_metrics"]["sentence total"]["n"] == 2000
    assert "CC BY 4.0" in meta["data"]["license"]


@needs_sample
def test_shipped_head_reproduces_its_recorded_check_metrics(gop_engine) -> None:
    """Re-extract features for the check clips and re-measure: within 0.01 of the record."""
    from pronunciation.gop.dataset import extract_folder, read_folder
    from pronunciation.gop.training import measure

    head = gop_engine.head
    check = head.metadata["check"]
    items = read_folder(SAMPLE)[: check["first_utterances"]]
    got = measure(head, items, extract_folder(SAMPLE, utterances=items))
    for label, want in check["metrics"].items():
        for k in ("pcc", "scc", "rmse"):
            if math.isnan(want[k]):
                assert math.isnan(got[label][k]), label
            else:
                assert abs(got[label][k] - want[k]) <= 0.01, (label, k, got[label][k], want[k])


class _ThreadProbe:
    """Wraps one of the stack's real models and records the OpenMP thread count sklearn sees
    when that model predicts."""

    def __init__(self, model) -> None:
        self.model, self.threads = model, []

    def predict(self, x):
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

        self.threads.append(_openmp_effective_n_threads())
        return self.model.predict(x)


@needs_sample
def test_boosting_predicts_on_one_openmp_thread_and_restores_the_setting(gop_engine, sample_items) -> None:
    """Each tree is an OpenMP region over a few rows: with 2 threads on a busy machine every
    region waits for the scheduler (an `apa-fleet evaluate` of 6 clips ran past 120 s in the
    suite). Prediction runs on one thread; the caller's setting (a torch engine's) comes back."""
    from dataclasses import replace

    from threadpoolctl import threadpool_info, threadpool_limits

    from pronunciation.audio import load_audio

    stack = gop_engine.head.boosting
    probe = _ThreadProbe(stack.sentence["total"])
    probed = replace(stack, sentence={**stack.sentence, "total": probe})
    u = next(iter(sample_items.values()))
    feats = gop_engine.extractor.extract(load_audio(u.audio_path.read_bytes(), max_seconds=600, min_seconds=0.0),
                                         u.reference)
    with threadpool_limits(limits=2, user_api="openmp"):  # as on any multi-core machine
        _, _, want = stack.predict(feats)
        _, _, got = probed.predict(feats)
        after = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"}
    assert probe.threads == [1]
    assert list(got) == list(want)
    assert after == {2}


@needs_sample
def test_fitting_is_deterministic_in_sequence_and_in_parallel(sample_items) -> None:
    """The rebuild script's promise ("the same data and settings give the same head") and the
    parallel fit's ("folds in a pool give the same models as in sequence"): two fits, one in
    worker processes and one in this process, have the same parameter digest; a different
    transformer seed does not (so the digest is not blind to the parameters)."""
    from dataclasses import replace

    from pronunciation.gop.boosting import BoostingSettings
    from pronunciation.gop.dataset import extract_folder
    from pronunciation.gop.training import HeadSettings, fit_head, head_digest
    from pronunciation.gop.transformer_train import TransformerSettings

    by_speaker: dict[str, list] = {}
    for u in sample_items.values():
        by_speaker.setdefault(u.speaker, []).append(u)
    items = [u for speaker in sorted(by_speaker)[:6] for u in by_speaker[speaker][:4]]  # 6 speakers for 5 folds
    feats = extract_folder(SAMPLE, utterances=items)
    small = HeadSettings(boosting=BoostingSettings(phone_iterations=15, upper_iterations=10, min_samples_leaf=5),
                         transformer=TransformerSettings(epochs=2), transformer_seeds=(0,))
    quiet = lambda *_: None  # noqa: E731
    in_pool = fit_head(items, feats, replace(small, parallel=True), log=quiet)
    in_process = fit_head(items, feats, replace(small, parallel=False), log=quiet)
    other_seed = fit_head(items, feats, replace(small, parallel=False, transformer_seeds=(1,)), log=quiet)
    assert head_digest(in_pool) == head_digest(in_process)
    assert head_digest(other_seed) != head_digest(in_process)
