"""GOP features of a job's utterances, through an on-disk cache keyed by content.

Feature extraction (the acoustic model, ~0.2 s per utterance per core) is most of a `gop` job's
cost; the head trains in a fraction of it. The cache holds one file per (feature version, audio,
reference phones), so:
- a job that is killed and resumed, or the next job on the same batches plus a new one, only
  extracts what it has not seen;
- a re-annotated utterance with new phones, or another feature version, never reuses stale features.

Files are written atomically (temporary name, then rename), so concurrent jobs and a kill mid-write
cannot leave a torn entry. Extraction runs in worker processes when `workers` > 1.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from pronunciation.gop.features import (
    FEATURE_VERSION,
    FeatureExtractor,
    UtteranceFeatures,
)
from pronunciation.gop.processes import process_pool
from pronunciation.lexicon import Reference
from training_jobs.dataset import Example


def feature_key(audio: np.ndarray, reference: Reference) -> str:
    """Content hash of what the features depend on: feature version, samples, words and phones."""
    h = hashlib.sha256(FEATURE_VERSION.encode())
    h.update(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
    h.update(repr([(w.text, tuple(w.phones)) for w in reference.words]).encode())
    return h.hexdigest()


class FeatureCache:
    """utterance content -> `UtteranceFeatures` files under one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder) / FEATURE_VERSION

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.pkl"

    def get(self, key: str) -> UtteranceFeatures | None:
        try:
            return UtteranceFeatures.from_arrays(pickle.loads(self._path(key).read_bytes()))
        except (FileNotFoundError, EOFError, pickle.UnpicklingError, KeyError):
            return None

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps(arrays, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(tmp, path)


_extractor: FeatureExtractor | None = None


def _extract(item: tuple[str, np.ndarray, Reference]) -> tuple[str, dict | None, str | None]:
    """One utterance in a worker process (the acoustic model loaded once per process)."""
    from pronunciation.errors import PronunciationInputError

    global _extractor
    if _extractor is None:
        _extractor = FeatureExtractor()
    key, audio, reference = item
    try:
        return key, _extractor.extract(audio, reference).to_arrays(), None
    except PronunciationInputError as exc:
        return key, None, str(exc)


def _run(items: list, workers: int) -> Iterator[tuple[str, dict | None, str | None]]:
    # a daemonic process (some pool workers) may not start children: extract in-process there
    if workers <= 1 or multiprocessing.current_process().daemon:
        yield from map(_extract, items)
        return
    with process_pool(workers) as pool:
        yield from pool.map(_extract, items, chunksize=4)


def job_features(
    examples: Sequence[Example], cache: FeatureCache, *, workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, UtteranceFeatures], dict[str, str]]:
    """(utt_id -> features, utt_id -> why it has none) for `examples`; extracts what the cache lacks."""
    keys = {e.utt_id: feature_key(e.audio, e.reference) for e in examples}
    feats: dict[str, UtteranceFeatures] = {}
    for e in examples:
        hit = cache.get(keys[e.utt_id])
        if hit is not None:
            feats[e.utt_id] = hit
    utt_of: dict[str, list[str]] = {}  # identical content under two ids: extracted once
    todo = []
    for e in examples:
        if e.utt_id not in feats:
            if keys[e.utt_id] not in utt_of:
                todo.append((keys[e.utt_id], e.audio, e.reference))
            utt_of.setdefault(keys[e.utt_id], []).append(e.utt_id)
    failed: dict[str, str] = {}
    done = len(feats)
    if progress:
        progress(done, len(examples))
    for key, arrays, err in _run(todo, workers):
        if arrays is not None:
            cache.put(key, arrays)
        for utt in utt_of[key]:
            if arrays is None:
                failed[utt] = err or "feature extraction failed"
            else:
                feats[utt] = UtteranceFeatures.from_arrays(arrays)
            done += 1
        if progress:
            progress(done, len(examples))
    return feats, failed
