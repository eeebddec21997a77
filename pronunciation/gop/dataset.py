"""Labelled folders (speechocean762 layout: scores.json + audio named by utterance id) -> cached
GOP features, extracted in parallel worker processes.

Training, evaluation and the tests all read features through `extract_folder`, so a cache built
once is reused, and a cache from another feature version is never mixed in.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pronunciation.gop.features import (
    FEATURE_VERSION,
    FeatureExtractor,
    UtteranceFeatures,
)
from pronunciation.gop.processes import process_pool
from pronunciation.lexicon import Reference, build_reference

AUDIO_SUFFIXES = (".ogg", ".flac", ".wav", ".mp3")


@dataclass(frozen=True)
class LabelledUtterance:
    utt_id: str
    audio_path: Path
    reference: Reference
    labels: dict  # the scores.json entry (speechocean762 format)
    speaker: str


def read_folder(folder: Path) -> list[LabelledUtterance]:
    """Every scored utterance of a folder whose audio is present, in scores.json order."""
    scores = json.loads((folder / "scores.json").read_text())
    speakers = {}
    manifest = folder / "manifest.jsonl"
    if manifest.exists():
        for line in manifest.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                speakers[row["utt_id"]] = str(row.get("speaker", ""))
    audio = {}
    for p in folder.rglob("*"):
        if p.suffix.lower() in AUDIO_SUFFIXES:
            audio.setdefault(p.stem, p)
    out = []
    for utt, lab in scores.items():
        if utt not in audio:
            continue
        ref = build_reference(" ".join(w["text"] for w in lab["words"]), [w["phones"] for w in lab["words"]],
                              max_words=10_000)
        # speechocean762 ids are SSSSUUUUU: the first 4 digits name the speaker
        out.append(LabelledUtterance(utt, audio[utt], ref, lab, speakers.get(utt) or utt[:4]))
    return out


_extractor: FeatureExtractor | None = None


def _extract_one(item: tuple[str, Path, Reference]) -> tuple[str, dict | None, str | None]:
    from pronunciation.audio import load_audio
    from pronunciation.errors import PronunciationInputError

    global _extractor
    if _extractor is None:
        _extractor = FeatureExtractor()
    utt, path, ref = item
    try:
        audio = load_audio(path.read_bytes(), max_seconds=600, min_seconds=0.0)
        return utt, _extractor.extract(audio, ref).to_arrays(), None
    except PronunciationInputError as exc:
        return utt, None, str(exc)


def _progress(total: int, label: str):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    p = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return p


def _run(items: list, workers: int) -> Iterator[tuple[str, dict | None, str | None]]:
    if workers <= 1:
        yield from map(_extract_one, items)
        return
    with process_pool(workers) as pool:
        yield from pool.map(_extract_one, items, chunksize=8)


def extract_folder(
    folder: Path, *, cache: Path | None = None, workers: int = 1, progress: bool = False,
    utterances: list[LabelledUtterance] | None = None,
) -> dict[str, UtteranceFeatures]:
    """Features of every utterance of `folder` (from `cache` when it holds them)."""
    items = utterances if utterances is not None else read_folder(folder)
    have: dict[str, dict] = {}
    if cache is not None and cache.exists():
        blob = pickle.loads(cache.read_bytes())
        if blob.get("version") == FEATURE_VERSION:
            have = blob["features"]
    todo = [(u.utt_id, u.audio_path, u.reference) for u in items if u.utt_id not in have]
    failed: dict[str, str] = {}
    if todo:
        bar = _progress(len(todo), f"GOP features {folder.name}") if progress else None
        task = bar.add_task("extract", total=len(todo)) if bar else None
        if bar:
            bar.start()
        try:
            for utt, arrays, err in _run(todo, workers):
                if arrays is None:
                    failed[utt] = err or "failed"
                else:
                    have[utt] = arrays
                if bar:
                    bar.advance(task)
        finally:
            if bar:
                bar.stop()
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(pickle.dumps({"version": FEATURE_VERSION, "features": have}))
    if failed and progress:
        print(f"{len(failed)} utterances could not be aligned: {sorted(failed)[:5]}")
    return {u.utt_id: UtteranceFeatures.from_arrays(have[u.utt_id]) for u in items if u.utt_id in have}
