"""The engine -> trainer table and the gop trainer's translations (params -> head settings,
annotation -> the corpus labels the head's targets read). No training here: the job itself is
exercised in tests/integration/test_gop_retraining.py and test_training_job.py."""

from __future__ import annotations

import pytest

from fleet.settings import Settings
from training_jobs.config import ParamsError, TrainingDefaults, resolve_params


def test_each_engine_has_its_trainer_and_registry_key(tmp_path) -> None:
    from training_jobs.job import TrainingError
    from training_jobs.trainers import TRAINERS, trainer_for

    assert set(TRAINERS) == {"gop", "qwen2-audio"}
    settings = Settings(var_dir=tmp_path)
    assert trainer_for("gop").engine == "gop" and trainer_for("gop").registry_key(settings) == "gop"
    assert trainer_for("qwen2-audio").registry_key(settings) == "tiny-qwen2-audio"
    with pytest.raises(TrainingError, match="no trainer for engine 'nope'"):
        trainer_for("nope")


def test_gop_params_become_head_settings() -> None:
    from training_jobs.gop_trainer import head_settings

    default = head_settings(resolve_params(TrainingDefaults(), {}), workers=1)
    assert default.transformer_seeds == (0,) and default.transformer.epochs == 30 and default.use_boosting
    assert (default.boosting.phone_iterations, default.boosting.upper_iterations) == (200, 150)  # the fast recipe
    full = head_settings(resolve_params(TrainingDefaults(), {"gop_recipe": "full", "seed": 2}), workers=2)
    assert full.transformer_seeds == (2, 3, 4) and full.transformer.epochs == 60 and full.parallel
    assert (full.boosting.phone_iterations, full.boosting.upper_iterations, full.boosting.learning_rate) == (400, 300, 0.05)
    with pytest.raises(ParamsError):
        resolve_params(TrainingDefaults(), {"gop_recipe": "fastest"})
    assert not default.parallel
    p = resolve_params(TrainingDefaults(), {"gop_seeds": 1, "seed": 4, "gop_iterations": 50, "gop_epochs": 5,
                                            "gop_min_samples_leaf": 7, "gop_boosting": False})
    s = head_settings(p, workers=2)
    assert s.transformer_seeds == (4,) and s.transformer.epochs == 5 and not s.use_boosting and s.parallel
    assert (s.boosting.phone_iterations, s.boosting.upper_iterations, s.boosting.min_samples_leaf) == (50, 50, 7)


def test_annotation_becomes_the_corpus_labels_the_head_trains_on() -> None:
    import numpy as np

    from pronunciation.gop.targets import phone_targets, sentence_targets, word_targets
    from training_jobs.annotations import check_item
    from training_jobs.gop_trainer import corpus_labels

    entry = {"text": "WE CALL", "accuracy": 8, "fluency": 9, "prosodic": 7, "completeness": 10.0, "total": 8,
             "words": [{"text": "WE", "accuracy": 10, "stress": 10, "total": 9, "phones": "W IY0",
                        "phones-accuracy": [2.0, 1.5]},
                       {"text": "CALL", "accuracy": 6, "stress": 5, "total": 6, "phones": ["K", "AO0", "L"],
                        "phones-accuracy": [2.0, 1.0, 0.5]}]}
    annotation = check_item("000010011", entry)[0]
    labels = corpus_labels(annotation)
    assert np.allclose(phone_targets(labels), [2.0, 1.5, 2.0, 1.0, 0.5])
    assert np.allclose(word_targets(labels), [[10, 10, 9], [6, 5, 6]])
    assert np.allclose(sentence_targets(labels), [8, 9, 7, 10, 8])


def _workers_in_pool_child(_: int) -> int:
    from types import SimpleNamespace

    from training_jobs.gop_trainer import GopTrainer

    return GopTrainer._workers(SimpleNamespace(defaults=TrainingDefaults(cpu_threads=2)))


def test_gop_training_stays_in_process_inside_a_prefork_pool_child() -> None:
    """Celery's prefork children are daemonic: a process pool there fails ("daemonic processes are
    not allowed to have children"), so the gop trainer extracts and fits in-process."""
    import billiard

    with billiard.Pool(1) as pool:
        assert pool.map(_workers_in_pool_child, [0]) == [1]
    assert _workers_in_pool_child(0) == 2
