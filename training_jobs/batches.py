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

Registration only writes the row (`registered`; the gateway does that through `db.training`).
`validate_registered` does the work on the train queue: it decodes the utterances in sorted id
order, a chunk at a time, and commits each chunk's counts and problems with a fence on the
progress counter, so a killed validation resumes after its last committed chunk, a second
delivery of the task cannot count an utterance twice, and ops watch `n_checked` of `n_items` grow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from db.engine import session_scope
from db.models import AnnotationBatch, BatchStatus
from db.training import add_batch_row, batch_key
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
    return batch_key(uri)


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


def _read_scores(store: ObjectStore, prefix: str) -> tuple[dict[str, str], dict, Problem | None]:
    """(objects under the prefix, scores.json content, a batch-level problem or None)."""
    objects = store.list_relative(prefix)
    if SCORES_FILE not in objects:
        return objects, {}, Problem(None, MISSING_SCORES, f"no {SCORES_FILE} under {prefix}")
    try:
        raw = store.get(objects[SCORES_FILE], max_bytes=MAX_SCORES_BYTES)
    except ObjectTooLarge as exc:
        return objects, {}, Problem(None, BAD_JSON, str(exc))
    except ObjectNotFound:
        return objects, {}, Problem(None, MISSING_SCORES, f"no {SCORES_FILE} under {prefix}")
    try:
        scores = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return objects, {}, Problem(None, BAD_JSON, f"{SCORES_FILE} is not valid JSON: {exc}")
    if not isinstance(scores, dict):
        return objects, {}, Problem(None, BAD_JSON,
                                    f"{SCORES_FILE} must map utterance ids to entries, got a {type(scores).__name__}")
    if not scores:
        return objects, {}, Problem(None, EMPTY_BATCH, f"{SCORES_FILE} has no utterances")
    return objects, {str(k): v for k, v in scores.items()}, None


def _check_utterance(store: ObjectStore, utt_id: str, entry: object, objects: dict[str, str],
                     cfg: TrainingDefaults, keep_audio: bool) -> tuple[BatchItem | None, list[Problem]]:
    """One utterance: its annotation, then its audio decoded as the scoring path would."""
    utt, problems = check_item(utt_id, entry)
    if utt is None:
        return None, problems
    audio_uri, missing = _find_audio(utt, objects)
    if missing is not None:
        return None, [*problems, missing]
    try:
        samples = load_audio(
            store.get(audio_uri, max_bytes=cfg.max_audio_bytes),
            max_seconds=cfg.max_audio_seconds, min_seconds=cfg.min_audio_seconds,
        )
    except PronunciationInputError as exc:
        return None, [*problems, Problem(utt.utt_id, exc.code, exc.message)]
    except ObjectTooLarge as exc:
        return None, [*problems, Problem(utt.utt_id, "audio_too_large", str(exc))]
    except ObjectNotFound:
        return None, [*problems, Problem(utt.utt_id, MISSING_AUDIO, f"{audio_uri} disappeared during validation")]
    if problems:
        return None, problems
    return BatchItem(utt, audio_uri, samples if keep_audio else None), []


def validate_batch(
    store: ObjectStore,
    prefix_uri: str,
    settings: TrainingDefaults | None = None,
    *,
    keep_audio: bool = False,
) -> BatchValidation:
    """Check everything in the batch at once, in memory (the training data loader uses it);
    never raises for bad content (only for storage outages)."""
    cfg = settings or TrainingDefaults()
    prefix = normalize_prefix(prefix_uri)
    result = BatchValidation(uri=prefix)
    objects, scores, fatal = _read_scores(store, prefix)
    if fatal is not None:
        result.problems.append(fatal.as_dict())
        result.fatal = True
        return result
    result.n_items = len(scores)
    for utt_id in sorted(scores):
        item, problems = _check_utterance(store, utt_id, scores[utt_id], objects, cfg, keep_audio)
        if item is not None:
            result.items_ok.append(item)
        result.problems.extend(p.as_dict() for p in problems)
    return result


ChunkFn = Callable[[int, int], None]


def add_batch(session: Session, uri: str, name: str | None = None) -> tuple[AnnotationBatch, bool]:
    """The `registered` row for a batch prefix (checked URI), or the existing one: (row, created)."""
    return add_batch_row(session, normalize_prefix(uri), name)


def _final_status(row: AnnotationBatch, policy: str) -> BatchStatus:
    if row.n_accepted == 0:
        return BatchStatus.rejected
    if not row.problems:
        return BatchStatus.accepted
    return BatchStatus.rejected if policy == "reject" else BatchStatus.partial


def _commit_chunk(sessions: sessionmaker[Session], batch_id, checked: int, new_checked: int, n_items: int,
                  n_ok: int, problems: list[Problem]) -> bool:
    """Add one chunk's results if the progress is still `checked` (the fence); False when it moved on."""
    with session_scope(sessions) as s:
        moved = s.execute(
            update(AnnotationBatch)
            .where(AnnotationBatch.id == batch_id, AnnotationBatch.status == BatchStatus.registered,
                   AnnotationBatch.n_checked == checked)
            .values(n_checked=new_checked, n_items=n_items, n_accepted=AnnotationBatch.n_accepted + n_ok,
                    progress_at=datetime.now(timezone.utc))
        ).rowcount
        if moved != 1:
            return False
        if problems:  # the fenced UPDATE above holds the row lock: nobody appends in between
            row = s.get(AnnotationBatch, batch_id)
            row.problems = [*(row.problems or []), *(p.as_dict() for p in problems)]
    return True


def _finish(sessions: sessionmaker[Session], batch_id, n_items: int, policy: str,
            fatal: Problem | None = None) -> AnnotationBatch | None:
    with session_scope(sessions) as s:
        row = s.get(AnnotationBatch, batch_id, with_for_update=True, populate_existing=True)
        if row is None or row.status != BatchStatus.registered or (fatal is None and row.n_checked != n_items):
            return None
        if fatal is not None:
            row.problems, row.n_items, row.n_accepted = [fatal.as_dict()], 0, 0
        row.status = _final_status(row, policy)
        row.n_quarantined = len({p.get("utt_id") for p in row.problems or [] if p.get("utt_id") is not None})
        if row.status == BatchStatus.rejected:
            row.n_accepted = 0
        row.validated_at = row.progress_at = datetime.now(timezone.utc)
    log.info("batch %s: %s (%d items, %d accepted, %d quarantined)", row.uri, row.status.value,
             row.n_items, row.n_accepted, row.n_quarantined)
    return row


def validate_registered(sessions: sessionmaker[Session], store: ObjectStore, batch_id,
                        settings: TrainingDefaults | None = None, *,
                        on_chunk: ChunkFn | None = None) -> AnnotationBatch | None:
    """Validate a `registered` batch, committing per chunk; resumes after the last committed chunk.

    Returns the finished row, or None when there was nothing to do here (already validated, or
    another run moved the progress on: that run finishes it). Raises StorageUnavailable on an
    outage (the committed chunks stay). `on_chunk(checked, total)` runs after each commit.
    """
    cfg = settings or TrainingDefaults()
    with sessions() as s:
        row = s.get(AnnotationBatch, batch_id)
        if row is None:
            raise LookupError(f"no annotation batch {batch_id}")
        if row.status != BatchStatus.registered:
            return None
        prefix, checked = row.uri, row.n_checked
    objects, scores, fatal = _read_scores(store, prefix)
    if fatal is not None:
        return _finish(sessions, batch_id, 0, cfg.batch_policy, fatal)
    ids = sorted(scores)
    total = len(ids)
    while checked < total:
        chunk = ids[checked: checked + cfg.validate_chunk_items]
        n_ok, problems = 0, []
        for utt_id in chunk:
            item, found = _check_utterance(store, utt_id, scores[utt_id], objects, cfg, keep_audio=False)
            n_ok += item is not None
            problems.extend(found)
        if not _commit_chunk(sessions, batch_id, checked, checked + len(chunk), total, n_ok, problems):
            log.info("batch %s: another validation moved on; leaving it to that one", prefix)
            return None
        checked += len(chunk)
        if on_chunk is not None:
            on_chunk(checked, total)
    return _finish(sessions, batch_id, total, cfg.batch_policy)


def _reset(row: AnnotationBatch) -> None:
    row.status = BatchStatus.registered
    row.n_items = row.n_checked = row.n_accepted = row.n_quarantined = 0
    row.problems = []
    row.validated_at = None
    row.progress_at = datetime.now(timezone.utc)


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
    """Create (or find) the batch row and validate it here, in the foreground (CLI, tests).

    Commits `session` (validation commits per chunk on its own sessions). Idempotent: a batch
    already validated is returned as is unless `revalidate`.
    """
    row, _created = add_batch(session, uri, name)
    if revalidate and row.status != BatchStatus.registered:
        _reset(row)
    session.commit()
    if validate and row.status == BatchStatus.registered:
        validate_registered(sessionmaker(bind=session.get_bind(), expire_on_commit=False), store, row.id, settings)
        session.refresh(row)
    return row


def discover_batches(session: Session, store: ObjectStore, root_prefix: str) -> list[AnnotationBatch]:
    """Register (without validating) every prefix under `root_prefix` that carries `_COMPLETE` and
    is not known yet; returns the new rows. The caller commits, then publishes their validation.

    A batch is only picked up once its uploader wrote the marker, so a half-uploaded batch is
    never validated (and rejected) by accident. Listing only: no audio is read here.
    """
    known = {u for (u,) in session.execute(select(AnnotationBatch.uri))}
    found: list[AnnotationBatch] = []
    for rel, _uri in sorted(store.list_relative(root_prefix).items()):
        if rel != COMPLETE_MARKER and not rel.endswith("/" + COMPLETE_MARKER):
            continue
        prefix = normalize_prefix(normalize_prefix(root_prefix) + rel[: -len(COMPLETE_MARKER)])
        if prefix in known:
            continue
        row, created = add_batch(session, prefix)
        if created:
            found.append(row)
        known.add(prefix)
    return found


def stalled_validations(session: Session, settings: TrainingDefaults | None = None) -> list:
    """Ids of `registered` batches without progress for `revalidate_after_s`: their task was lost
    or their worker died; the beat publishes their validation again (a live one is fenced)."""
    cfg = settings or TrainingDefaults()
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=cfg.revalidate_after_s)
    return list(session.scalars(select(AnnotationBatch.id).where(
        AnnotationBatch.status == BatchStatus.registered,
        or_(AnnotationBatch.progress_at.is_(None), AnnotationBatch.progress_at < cutoff),
    )))


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
    "AUDIO_EXTENSIONS", "COMPLETE_MARKER", "SCORES_FILE", "BatchItem", "BatchValidation", "add_batch", "batch_items",
    "discover_batches", "normalize_prefix", "register_batch", "stalled_validations", "validate_batch",
    "validate_registered",
]
