"""Training examples from accepted annotations, and the speaker-disjoint held-out split.

An example's target is the `Assessment` the model should write for it: the expert scores on the
output format's integer scale (phones 0..2 -> 0..10 with `phone_score_to_10`; sentence and word
scores rounded half up; stress 5 or 10), restricted to the scores the job's granularity mode has.
The prompt, the template and the tokenization come from the same pronunciation functions inference
uses (`build_prompt`, `build_template`, then `encode_training_example` in sft.py), so training and
serving cannot disagree on layout.

`gold` keeps the UNROUNDED expert values for evaluation: rounding would add ties and error the
model is not responsible for.

Split: a speaker is held out when a hash of its id falls below the fraction. The side of a speaker
depends only on its id (and the salt), not on the rest of the data, so it stays the same as batches
are added: a speaker whose recordings trained adapter v1 never lands in v2's held-out set, and the
comparison of v2 with the active v1 is not contaminated. When all speakers fall on one side (small
data), the speaker nearest the threshold moves over, so neither side is empty with >= 2 speakers.

No torch here.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import AnnotationBatch, BatchStatus
from fleet.storage import ObjectStore
from pronunciation.lexicon import Reference
from pronunciation.output_format import phone_score_to_10, phone_slot, sentence_slot, slot_values, word_slot
from pronunciation.template import SlotName
from pronunciation.schema import (
    MODE_FIELDS,
    Assessment,
    Granularity,
    PhoneScore,
    Score,
    SentenceScores,
    WordScores,
)
from training_jobs.annotations import UtteranceAnnotation
from training_jobs.batches import batch_items
from training_jobs.config import TrainingDefaults

log = logging.getLogger(__name__)

SPLIT_SALT = "apa-fleet-heldout-v1"


def round_half_up(x: float) -> int:
    """0.5 -> 1, 7.5 -> 8 (Python's round() sends halves to the even neighbour); clipped to 0..10."""
    return int(min(10, max(0, math.floor(x + 0.5 + 1e-9))))


@dataclass(frozen=True, eq=False)
class Example:
    """One annotated utterance ready for training or evaluation."""

    utt_id: str
    batch_id: str
    speaker: str
    audio: np.ndarray  # 16 kHz mono float32
    annotation: UtteranceAnnotation

    @property
    def reference(self) -> Reference:
        return self.annotation.reference


def target_assessment(annotation: UtteranceAnnotation, granularity: Granularity) -> Assessment:
    """What the model should answer for this utterance in `granularity` mode (integer scores)."""
    fields = MODE_FIELDS[Granularity(granularity)]
    sentence = None
    if fields.sentence:
        sentence = SentenceScores(
            **{a: Score.exact(round_half_up(annotation.sentence[a])) for a in fields.sentence}
        )
    words = []
    if fields.word:
        for w in annotation.words:
            raw = {"accuracy": w.accuracy, "stress": w.stress, "total": w.total}
            phones = (
                [PhoneScore(phone=p, accuracy=Score.exact(phone_score_to_10(s)))
                 for p, s in zip(w.phones, w.phone_scores, strict=True)]
                if fields.phones else []
            )
            # stress is validated to be exactly 5 or 10; the other word scores are rounded
            scores = {a: Score.exact(int(raw[a]) if a == "stress" else round_half_up(raw[a])) for a in fields.word}
            words.append(WordScores(text=w.text, phones=phones, **scores))
    return Assessment(granularity=Granularity(granularity), sentence=sentence, words=words)


def target_values(annotation: UtteranceAnnotation, granularity: Granularity) -> dict[str, int]:
    """The target as slot values (slot name -> int), the form encode_training_example takes."""
    return slot_values(target_assessment(annotation, granularity))


def gold_values(annotation: UtteranceAnnotation, granularity: Granularity) -> dict[SlotName, float]:
    """Unrounded expert scores by slot name (phones on the 0..2 annotation scale)."""
    fields = MODE_FIELDS[Granularity(granularity)]
    out: dict[SlotName, float] = {}
    for a in fields.sentence:
        out[sentence_slot(a)] = annotation.sentence[a]
    if fields.word:
        for i, w in enumerate(annotation.words):
            raw = {"accuracy": w.accuracy, "stress": w.stress, "total": w.total}
            for a in fields.word:
                out[word_slot(i, a)] = raw[a]
            if fields.phones:
                for j, s in enumerate(w.phone_scores):
                    out[phone_slot(i, j)] = s
    return out


def speaker_hash(speaker: str, salt: str = SPLIT_SALT) -> float:
    """A stable number in [0, 1) for a speaker id."""
    digest = hashlib.sha256(f"{salt}:{speaker}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Split:
    train: list[Example]
    heldout: list[Example]

    @property
    def heldout_speakers(self) -> set[str]:
        return {e.speaker for e in self.heldout}


def split_by_speaker(examples: list[Example], fraction: float = 0.2, *, salt: str = SPLIT_SALT) -> Split:
    """Speaker-disjoint, deterministic split (see module docstring)."""
    if not 0 < fraction < 1:
        raise ValueError(f"held-out fraction must lie in (0, 1), got {fraction}")
    speakers = sorted({e.speaker for e in examples})
    h = {s: speaker_hash(s, salt) for s in speakers}
    held = {s for s in speakers if h[s] < fraction}
    if len(speakers) >= 2:
        if not held:  # everyone trains: hold out the speaker closest above the threshold
            held = {min(speakers, key=lambda s: h[s])}
        elif len(held) == len(speakers):  # everyone held out: train on the one closest below it
            held.discard(max(speakers, key=lambda s: h[s]))
    train = [e for e in examples if e.speaker not in held]
    heldout = [e for e in examples if e.speaker in held]
    return Split(train=train, heldout=heldout)


def cap_items(examples: list[Example], max_items: int | None, seed: int = 0) -> list[Example]:
    """At most `max_items` examples, chosen by a seeded hash of the utterance id (stable, spread over speakers)."""
    if max_items is None or len(examples) <= max_items:
        return examples
    ranked = sorted(examples, key=lambda e: hashlib.sha256(f"{seed}:{e.batch_id}:{e.utt_id}".encode()).digest())
    keep = {id(e) for e in ranked[:max_items]}
    return [e for e in examples if id(e) in keep]


def usable_batches(session: Session, batch_ids: list[str] | None = None) -> list[AnnotationBatch]:
    """Accepted and partial batches (optionally only the given ids or URIs), oldest first."""
    stmt = select(AnnotationBatch).where(
        AnnotationBatch.status.in_([BatchStatus.accepted, BatchStatus.partial])
    ).order_by(AnnotationBatch.created_at, AnnotationBatch.uri)
    rows = list(session.scalars(stmt))
    if batch_ids:
        wanted = set(batch_ids)
        rows = [r for r in rows if str(r.id) in wanted or r.uri in wanted or r.uri.rstrip("/") in wanted]
    return rows


def load_examples(
    store: ObjectStore, batches: list[AnnotationBatch], settings: TrainingDefaults | None = None
) -> list[Example]:
    """Every accepted utterance of the given batches, audio decoded. Duplicate utterance ids
    across batches: the later batch wins (a re-annotation supersedes the earlier one)."""
    by_id: dict[str, Example] = {}
    for row in batches:
        for item in batch_items(store, row, settings):
            a = item.annotation
            by_id[a.utt_id] = Example(
                utt_id=a.utt_id, batch_id=str(row.id), speaker=a.speaker, audio=item.audio, annotation=a
            )
    return sorted(by_id.values(), key=lambda e: e.utt_id)
