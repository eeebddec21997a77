"""Run an engine over a labelled folder (annotation-batch layout: scores.json + audio named by
utterance id) and turn its Assessments into speechocean762-format predictions (expected values
as floats), so `corpus_metrics` can compare them with the experts'.

Engine-agnostic: it only calls `Engine.assess` with the folder's reference words and phones.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pronunciation.assess import AssessmentRequest
from pronunciation.schema import Assessment, Granularity

PROSODY_KEY = {"accuracy": "accuracy", "fluency": "fluency", "prosody": "prosodic",
               "completeness": "completeness", "total": "total"}


def corpus_entry(a: Assessment) -> dict:
    """A full-granularity Assessment as a scores.json entry: phones back on 0..2."""
    entry: dict = {}
    if a.sentence is not None:
        for aspect, key in PROSODY_KEY.items():
            s = getattr(a.sentence, aspect)
            if s is not None:
                entry[key] = s.expected
    entry["words"] = [
        {"text": w.text, "accuracy": w.accuracy.expected if w.accuracy else None,
         "stress": w.stress.expected if w.stress else None, "total": w.total.expected if w.total else None,
         "phones": [p.phone for p in w.phones], "phones-accuracy": [p.accuracy.expected / 5 for p in w.phones]}
        for w in a.words
    ]
    return entry


def predict_folder(
    engine, folder: Path, *, on_item: Callable[[str], None] | None = None, limit: int | None = None,
) -> tuple[dict, dict, dict[str, str]]:
    """(gold scores.json entries, predictions, failures utt -> error code) for the folder."""
    from pronunciation.audio import load_audio
    from pronunciation.errors import PronunciationInputError
    from pronunciation.gop.dataset import read_folder

    items = read_folder(folder)[:limit]
    gold, pred, failed = {}, {}, {}
    for u in items:
        gold[u.utt_id] = u.labels
        try:
            audio = load_audio(u.audio_path.read_bytes(), max_seconds=600, min_seconds=0.0)
            [r] = engine.assess([AssessmentRequest(audio, u.reference, Granularity.FULL)])
            pred[u.utt_id] = corpus_entry(r.assessment)
        except PronunciationInputError as exc:
            failed[u.utt_id] = exc.code
        if on_item:
            on_item(u.utt_id)
    return gold, pred, failed
