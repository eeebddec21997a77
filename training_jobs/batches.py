"""Annotation batches: an object-storage prefix with audio and `scores.json`, validated before use.

    s3://bucket/annotation-batches/2025-03-school-a/
        scores.json            speechocean762 format (see training_jobs.annotations)
        000010011.wav ...      audio, found by `audio` or as <utt_id>.wav|.flac|.ogg anywhere below
        _COMPLETE              written LAST by the uploader: the batch is complete

Everything is checked before anything trains on it, and each problem names its utterance:
missing or malformed scores.json (batch-level, utt_id None), fields and score ranges, words that
do not match the text, unknown phones, phone-score counts, and the audio itself, decoded with the
same `load_audio` the scoring path uses (so training never sees audio that serving would refuse).

Policy: `quarantine` (default) excludes the bad utterances and marks the batch `partial`;
`reject` refuses the whole batch when any utterance is bad. A transient storage fault
(StorageUnavailable) is raised, never recorded as a bad batch.

No torch here: the gateway registers batches.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import AnnotationBatch, BatchStatus
from fleet.storage import ObjectNotFound, ObjectStore, ObjectTooLarge, parse_uri
from pronunciation.audio import load_audio
from pronunciation.errors import PronunciationInputError
from training_jobs.annotations import Problem, UtteranceAnnotation, check_item
from training_jobs.config import TrainingDefaults

log = logging.getLogger(__name__)

SCORES_FILE = "scores.json"
COMPLETE_MARKER = "_COMPLETE"
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg")
MAX_SCORES_BYTES = 64 * 1024 * 1024

# Batch-level and audio-lookup problem codes (the rest are in annotations.py / pronunciation.audio).
MISSING_SCORES = "missing_scores"
BAD_JSON = "bad_json"
EMPTY_BATCH = "empty_batch"
MISSING_AUDIO = "missing_audio"
AMBIGUOUS_AUDIO = "ambiguous_audio"


@dataclass
class BatchItem:
    """A usable utterance: its annotation, where its audio is, and (optionally) the decoded audio."""

    annotation: UtteranceAnnotation
    audio_uri: str
    audio: np.ndarray | None = None  # 16 kHz mono float32 when validated with keep_audio=True


@dataclass
class BatchValidation:
    uri: str
    items_ok: list[BatchItem] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)
    n_items: int = 0
    fatal: bool = False  # a batch-level problem: nothing in it is usable

    @property
    def bad_utt_ids(self) -> set[str]:
        return {p["utt_id"] for p in self.problems if p["utt_id"] is not None}

    def status(self, policy: str) -> BatchStatus:
        if self.fatal or not self.items_ok:
            return BatchStatus.rejected
        if not self.problems:
            return BatchStatus.accepted
        return BatchStatus.rejected if policy == "reject" else BatchStatus.partial


def normalize_prefix(uri: str) -> str:
    """One spelling per batch: always ends with "/" (the registry's unique key)."""
    parse_uri(uri)  # raises InvalidObjectURI early
    return uri.rstrip("/") + "/"


def _find_audio(utt: UtteranceAnnotation, objects: dict[str, str]) -> tuple[str | None, Problem | None]:
    if utt.audio_name is not None:
        uri = objects.get(utt.audio_name)
        if uri is None:
            return None, Problem(utt.utt_id, MISSING_AUDIO, f"audio file {utt.audio_name!r} is not under the batch prefix")
        return uri, None
    names = {utt.utt_id + ext for ext in AUDIO_EXTENSIONS}
    hits = sorted(rel for rel in objects if rel in names) or sorted(
        rel for rel in objects if rel.rsplit("/", 1)[-1] in names
    )
    if not hits:
        return None, Problem(
            utt.utt_id, MISSING_AUDIO,
            f"no audio file {utt.utt_id}.wav/.flac/.ogg under the batch prefix (or name it in 'audio')",
        )
    if len(hits) > 1:
        return None, Problem(utt.utt_id, AMBIGUOUS_AUDIO, f"several audio files match: {hits}; name one in 'audio'")
    return objects[hits[0]], None


def validate_batch(
    store: ObjectStore,
    prefix_uri: str,
    settings: TrainingDefaults | None = None,
    *,
    keep_audio: bool = False,
) -> BatchValidation:
    """Check everything in the batch; never raises for bad content (only for storage outages)."""
    cfg = settings or TrainingDefaults()
    prefix = normalize_prefix(prefix_uri)
    result = BatchValidation(uri=prefix)

    def fatal(code: str, message: str) -> BatchValidation:
        result.problems.append(Problem(None, code, message).as_dict())
        result.fatal = True
        return result

    objects = store.list_relative(prefix)
    if SCORES_FILE not in objects:
        return fatal(MISSING_SCORES, f"no {SCORES_FILE} under {prefix}")
    try:
        raw = store.get(objects[SCORES_FILE], max_bytes=MAX_SCORES_BYTES)
    except ObjectTooLarge as exc:
        return fatal(BAD_JSON, str(exc))
    except ObjectNotFound:
        return fatal(MISSING_SCORES, f"no {SCORES_FILE} under {prefix}")
    try:
        scores = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return fatal(BAD_JSON, f"{SCORES_FILE} is not valid JSON: {exc}")
    if not isinstance(scores, dict):
        return fatal(BAD_JSON, f"{SCORES_FILE} must map utterance ids to entries, got a {type(scores).__name__}")
    if not scores:
        return fatal(EMPTY_BATCH, f"{SCORES_FILE} has no utterances")

    result.n_items = len(scores)
    for utt_id in sorted(scores):
        utt, problems = check_item(str(utt_id), scores[utt_id])
        if utt is not None:
            audio_uri, missing = _find_audio(utt, objects)
            if missing is not None:
                problems.append(missing)
            else:
                try:
                    samples = load_audio(
                        store.get(audio_uri, max_bytes=cfg.max_audio_bytes),
                        max_seconds=cfg.max_audio_seconds, min_seconds=cfg.min_audio_seconds,
                    )
                except PronunciationInputError as exc:
                    problems.append(Problem(utt.utt_id, exc.code, exc.message))
                except ObjectTooLarge as exc:
                    problems.append(Problem(utt.utt_id, "audio_too_large", str(exc)))
                except ObjectNotFound:
                    problems.append(Problem(utt.utt_id, MISSING_AUDIO, f"{audio_uri} disappeared during validation"))
                else:
                    result.items_ok.append(BatchItem(utt, audio_uri, samples if keep_audio else None))
        result.problems.extend(p.as_dict() for p in problems)
    return result


def _apply(row: AnnotationBatch, v: BatchValidation, policy: str) -> None:
    status = v.status(policy)
    row.status = status
    row.n_items = v.n_items
    row.n_accepted = len(v.items_ok) if status in (BatchStatus.accepted, BatchStatus.partial) else 0
    row.n_quarantined = len(v.bad_utt_ids)
    row.problems = v.problems
    row.validated_at = datetime.now(timezone.utc)


def register_batch(
    session: Session,
    store: ObjectStore,
    uri: str,
    settings: TrainingDefaults | None = None,
    *,
    name: str | None = None,
    validate: bool = True,
    revalidate: bool = False,
) -> AnnotationBatch:
    """Create (or find) the batch row and validate the batch; the caller commits.

    Idempotent: a batch already validated is returned as is unless `revalidate`. With
    `validate=False` the row stays `registered` and the next discovery scan validates it (for
    callers that must answer fast, e.g. the gateway, with large batches).
    """
    cfg = settings or TrainingDefaults()
    prefix = normalize_prefix(uri)
    row = session.scalar(select(AnnotationBatch).where(AnnotationBatch.uri == prefix))
    if row is None:
        row = AnnotationBatch(uri=prefix, name=name or prefix.rstrip("/").rsplit("/", 1)[-1][:200])
        session.add(row)
        session.flush()
    elif row.status != BatchStatus.registered and not revalidate:
        return row
    if validate:
        v = validate_batch(store, prefix, cfg)
        _apply(row, v, cfg.batch_policy)
        session.flush()
        log.info("batch %s: %s (%d items, %d accepted, %d quarantined)", prefix, row.status.value,
                 row.n_items, row.n_accepted, row.n_quarantined)
    return row


def discover_batches(
    session: Session, store: ObjectStore, root_prefix: str, settings: TrainingDefaults | None = None
) -> list[AnnotationBatch]:
    """Register every prefix under `root_prefix` that carries `_COMPLETE` and is not known yet.

    Also validates rows left `registered` (registered without validation). Returns the rows it
    validated. A batch is only picked up once its uploader wrote the marker, so a half-uploaded
    batch is never validated (and rejected) by accident.
    """
    known = {u for (u,) in session.execute(select(AnnotationBatch.uri))}
    found: list[AnnotationBatch] = []
    for rel, _uri in sorted(store.list_relative(root_prefix).items()):
        if rel != COMPLETE_MARKER and not rel.endswith("/" + COMPLETE_MARKER):
            continue
        prefix = normalize_prefix(normalize_prefix(root_prefix) + rel[: -len(COMPLETE_MARKER)])
        if prefix in known:
            continue
        found.append(register_batch(session, store, prefix, settings))
        known.add(prefix)
    pending = session.scalars(select(AnnotationBatch).where(AnnotationBatch.status == BatchStatus.registered)).all()
    for row in pending:
        found.append(register_batch(session, store, row.uri, settings))
    return found


def batch_items(store: ObjectStore, row: AnnotationBatch, settings: TrainingDefaults | None = None) -> list[BatchItem]:
    """The usable utterances of an accepted/partial batch, with decoded audio.

    Re-validates (the audio is needed anyway) and keeps only items that were accepted at
    registration and are still fine now; an object changed since registration is logged and
    left out rather than trained on unchecked.
    """
    if row.status not in (BatchStatus.accepted, BatchStatus.partial):
        return []
    v = validate_batch(store, row.uri, settings, keep_audio=True)
    quarantined = {p.get("utt_id") for p in (row.problems or [])}
    items = [it for it in v.items_ok if it.annotation.utt_id not in quarantined]
    changed = len(items) != row.n_accepted
    if changed:
        log.warning("batch %s: %d usable items now, %d at registration (objects changed?)", row.uri,
                    len(items), row.n_accepted)
    return items


__all__ = [
    "AUDIO_EXTENSIONS", "COMPLETE_MARKER", "SCORES_FILE", "BatchItem", "BatchValidation", "batch_items",
    "discover_batches", "normalize_prefix", "register_batch", "validate_batch",
]
