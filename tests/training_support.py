"""Helpers and fixtures for the training-queue tests: speechocean762-format batches built from the
real sample clips, the tiny model, a migrated Postgres database, and training settings.

Fixtures are imported by the test modules that use them (`from tests.training_support import ...`).
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SAMPLE_DIR

SR = 16_000


def manifest() -> list[dict]:
    if not (SAMPLE_DIR / "manifest.jsonl").is_file():
        pytest.skip(f"the speechocean762 sample is not at {SAMPLE_DIR}")
    with open(SAMPLE_DIR / "manifest.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def pick_clips(n: int, n_speakers: int, *, max_seconds: float = 6.0) -> list[dict]:
    """n clips, round-robin over the first n_speakers speakers (sorted ids) with enough short clips."""
    by: dict[str, list[dict]] = {}
    for row in manifest():
        if row["duration_s"] <= max_seconds:
            by.setdefault(row["speaker"], []).append(row)
    per = -(-n // n_speakers)
    speakers = [s for s in sorted(by) if len(by[s]) >= per][:n_speakers]
    assert len(speakers) == n_speakers, "not enough speakers in the sample"
    out = []
    for k in range(per):
        for s in speakers:
            if len(out) < n:
                out.append(by[s][k])
    return out


def clip_samples(row: dict) -> np.ndarray:
    from pronunciation.audio import load_audio

    return load_audio((SAMPLE_DIR / row["audio"]).read_bytes())


def wav_bytes(samples: np.ndarray, rate: int = SR) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(samples, dtype=np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def so_entry(row: dict, *, accuracy=8, fluency=8, prosodic=8, completeness=10.0, total=8, word_score=8,
             stress=10, phone_score=2.0, phones_as_string: bool = False, speaker: str | None = None,
             audio: str | None = None) -> dict:
    """A speechocean762 scores.json entry for a manifest row (phones from the corpus lexicon)."""
    words = []
    for w in row["words"]:
        words.append({
            "text": w["text"], "accuracy": word_score, "stress": stress, "total": word_score,
            "phones": " ".join(w["phones"]) if phones_as_string else list(w["phones"]),
            "phones-accuracy": [phone_score] * len(w["phones"]),
        })
    entry = {"text": row["text"], "accuracy": accuracy, "fluency": fluency, "prosodic": prosodic,
             "completeness": completeness, "total": total, "words": words}
    if speaker is not None:
        entry["speaker"] = speaker
    if audio is not None:
        entry["audio"] = audio
    return entry


def write_batch(store, prefix: str, scores: dict | bytes | None, audio: dict[str, bytes], *, complete: bool = True) -> str:
    """Upload a batch: audio files, scores.json (dict -> JSON, bytes as is, None = absent), marker."""
    prefix = prefix.rstrip("/") + "/"
    for name, data in audio.items():
        store.put(prefix + name, data)
    if scores is not None:
        store.put(prefix + "scores.json", scores if isinstance(scores, bytes) else json.dumps(scores).encode())
    if complete:
        store.put(prefix + "_COMPLETE", b"")
    return prefix


def silence_fluency_batch(rows: list[dict], *, max_pause: int = 3) -> tuple[dict, dict[str, bytes]]:
    """The learnable batch: k = i % (max_pause + 1) seconds of silence inserted mid-utterance and
    max_pause - k seconds appended, so every clip grows by the same max_pause seconds and only
    the PAUSE tells fluency apart (fluency = 10 - 2k); every other score is constant."""
    scores, audio = {}, {}
    # balanced pause lengths, shuffled so that no speaker has a single one
    pauses = np.random.default_rng(0).permutation([i % (max_pause + 1) for i in range(len(rows))])
    for i, row in enumerate(rows):
        k = int(pauses[i])
        x = clip_samples(row)
        mid = x.size // 2
        x = np.concatenate([x[:mid], np.zeros(k * SR, np.float32), x[mid:], np.zeros((max_pause - k) * SR, np.float32)])
        scores[row["utt_id"]] = so_entry(row, fluency=10 - 2 * k, phones_as_string=i % 2 == 0)
        audio[f"{row['utt_id']}.wav"] = wav_bytes(x)
    return scores, audio


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """The tiny random Qwen2-Audio, built once per test session (its scores mean nothing)."""
    from pronunciation.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.getbasetemp() / "training-tiny-qwen2-audio")


def make_pg_database(pg_server: str) -> tuple[str, callable]:
    """A fresh migrated Postgres database; returns (url, drop)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from migrations.runner import upgrade

    name = f"apa_train_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    upgrade(url)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    url, drop = make_pg_database(pg_server)
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def pg_sessions(pg_url: str):
    from db.engine import make_engine, make_session_factory

    engine = make_engine(pg_url)
    yield make_session_factory(engine)
    engine.dispose()


def training_defaults(**overrides):
    """TrainingDefaults for tests: one torch thread (2 shared cores), frequent progress writes."""
    from training_jobs.config import TrainingDefaults

    # min_heldout 2: the test batches are tiny on purpose (their held-out sets are a few utterances);
    # the minimum itself is tested in test_training_gate.py.
    base = {"cpu_threads": 1, "progress_interval_s": 0.2, "trigger_threshold": 10, "min_heldout": 2}
    base.update(overrides)
    env_free = {k: v for k, v in os.environ.items() if k.startswith("APA_TRAIN_")}
    assert not env_free, f"APA_TRAIN_* variables would leak into the tests: {sorted(env_free)}"
    return TrainingDefaults(**base)


def settings_for(tmp_path: Path, database_url: str, model_path: Path, **kw):
    from fleet.settings import Settings

    return Settings(var_dir=tmp_path / "var", database_url=database_url, model_path=str(model_path),
                    storage_root=tmp_path / "objects", device="cpu", **kw)
