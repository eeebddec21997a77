"""One scoring round, as DESIGN.md's data flow describes it: claim a batch, fetch and validate each
recording, score the valid ones in one batched model call, store each result in one transaction.

Bad input ends `failed` with its code at once; a transient fault (object store, database) gives the
row back to the queue, due after the shared retry policy's backoff (fleet/retry.py); nothing is
lost and nothing is scored twice. While the round runs, a heartbeat keeps the claims' leases fresh
(workers/lease.py). A round asks for at most ONE follow-up message (`RoundReport.wake_up`), so a
round consumes one message and publishes at most one: the queue cannot grow during an outage.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

from sqlalchemy import select

from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker

from fleet.settings import Settings
from fleet.storage import ObjectStore, StorageError, StorageUnavailable
from pronunciation.assess import AssessmentRequest, assess
from pronunciation.audio import load_audio
from pronunciation.errors import PronunciationInputError
from pronunciation.lexicon import build_reference
from pronunciation.schema import Granularity
from db.models import Submission, SubmissionStatus, utcnow
from fleet.retry import RetryPolicy, as_utc
from workers.claim import Claim, claim_batch
from workers.fetch import prefetch, submit
from workers.lease import LeaseKeeper
from workers.persist import mark_failed, release, save_scores

log = logging.getLogger(__name__)


@dataclass
class RoundReport:
    scored: list[uuid.UUID] = field(default_factory=list)
    failed: dict[uuid.UUID, str] = field(default_factory=dict)
    retry: dict[uuid.UUID, float] = field(default_factory=dict)  # id -> seconds until due again
    deliveries: list[uuid.UUID] = field(default_factory=list)
    model_ms: float = 0.0
    # Where a round's time went besides the model (milliseconds): the named submission's wait from
    # its INSERT at the gateway to the start of the claim (commit, publish, broker, Celery's hand-off
    # to the pool child; wall clocks, so skew between machines shows in it), claiming the batch,
    # fetching and decoding the audio, and storing the results. Logged with the task's result
    # (Celery's "succeeded" line), so the queue's overhead per job can be taken apart from a log.
    wait_ms: float = 0.0
    claim_ms: float = 0.0
    fetch_ms: float = 0.0
    save_ms: float = 0.0
    # The one follow-up message to publish (submission id, countdown), if any: the earliest row
    # given back, or the message's own row when it is queued but not yet due.
    wake_up: tuple[uuid.UUID, float] | None = None


class _BadInput(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _prepare(claim: Claim, settings: Settings, store: ObjectStore, fetched: Future[bytes] | None = None
             ) -> AssessmentRequest:
    """Reference, audio and granularity of one claim; `fetched` is the hinted GET of this very
    object, started before the claim (workers/fetch.py)."""
    try:
        granularity = Granularity(claim.granularity)
    except ValueError:
        raise _BadInput("bad_granularity", f"unknown granularity {claim.granularity!r}") from None
    try:
        reference = build_reference(claim.reference_text, claim.reference_phones,
                                    max_words=settings.max_reference_words)
        if claim.tenant_id is not None:  # local paths: only the tenant's own folder (as the gateway checked)
            store = store.for_tenant(claim.tenant_id)
        data = fetched.result() if fetched is not None else store.get(claim.audio_uri, max_bytes=settings.max_audio_bytes)
        audio = load_audio(data, max_seconds=settings.max_audio_seconds, min_seconds=settings.min_audio_seconds)
    except StorageUnavailable:
        raise
    except StorageError as exc:
        raise _BadInput(exc.code, str(exc)) from None
    except PronunciationInputError as exc:
        raise _BadInput(exc.code, exc.message) from None
    return AssessmentRequest(audio=audio, reference=reference, granularity=granularity)


def score_round(
    first_id: uuid.UUID, *, settings: Settings, sessions: sessionmaker[Session], store: ObjectStore, pool,
    audio_hint: str | None = None, fetcher: Executor | None = None,
) -> RoundReport:
    """`audio_hint` is the URI the message says `first_id` names; with a `fetcher` (a thread pool)
    its GET runs while the batch is claimed, and the batch's recordings are fetched at once."""
    report = RoundReport()
    early = prefetch(fetcher, store, audio_hint, max_bytes=settings.max_audio_bytes)
    t0, started = time.perf_counter(), utcnow()
    with sessions() as s:
        claims = claim_batch(s, first_id, settings.score_batch_size, lease_s=settings.lease_s)
    report.claim_ms = (time.perf_counter() - t0) * 1000
    named = next((c for c in claims if c.id == first_id), None)
    if named is not None and named.created_at is not None:
        report.wait_ms = max(0.0, (started - as_utc(named.created_at)).total_seconds() * 1000)
    if not claims:
        report.wake_up = _not_yet_due(sessions, first_id)
        return report
    with LeaseKeeper(sessions, claims, settings.lease_s):
        hint_holds = early is not None and named is not None and named.audio_uri == audio_hint
        fetched = {first_id: early} if hint_holds else {}
        _score_claims(claims, report, settings=settings, sessions=sessions, store=store, pool=pool,
                      fetcher=fetcher, fetched=fetched)
    if report.retry:
        sub_id = min(report.retry, key=report.retry.__getitem__)
        report.wake_up = (sub_id, report.retry[sub_id])
    return report


def _not_yet_due(sessions: sessionmaker[Session], sub_id: uuid.UUID) -> tuple[uuid.UUID, float] | None:
    """A message for a queued row in backoff: hand the message on to when the row is due (the
    message is conserved, not multiplied)."""
    with sessions() as s:
        row = s.execute(select(Submission.status, Submission.next_attempt_at).where(Submission.id == sub_id)).first()
    if row is None or row.status != SubmissionStatus.queued or row.next_attempt_at is None:
        return None
    wait = (as_utc(row.next_attempt_at) - utcnow()).total_seconds()
    return (sub_id, wait) if wait > 0 else None


def _score_claims(
    claims: list[Claim], report: RoundReport, *, settings: Settings, sessions: sessionmaker[Session],
    store: ObjectStore, pool, fetcher: Executor | None = None, fetched: dict[uuid.UUID, Future[bytes]] | None = None
) -> None:
    policy = settings.retry_policy()
    finished: set[uuid.UUID] = set()
    fetched = fetched or {}
    try:
        ready: list[tuple[Claim, AssessmentRequest]] = []
        t_fetch = time.perf_counter()
        preparing: list[tuple[Claim, Future[AssessmentRequest]]] = []
        for claim in claims:
            if claim.attempt > settings.max_attempts:
                _fail(sessions, claim, "attempts_exhausted", f"gave up after {claim.attempt - 1} attempts", report)
                finished.add(claim.id)
            else:
                preparing.append((claim, submit(fetcher, _prepare, claim, settings, store, fetched.get(claim.id))))
        # The registry's active version (one query, a switch when ops promoted another) is read
        # while the recordings download, not after.
        model = pool.ready_model() if preparing else None
        for claim, preparation in preparing:
            try:
                ready.append((claim, preparation.result()))
            except _BadInput as exc:
                _fail(sessions, claim, exc.code, str(exc), report)
                finished.add(claim.id)
            except StorageUnavailable as exc:
                log.warning("transient storage fault for %s: %s", claim.id, exc)
                _give_back(sessions, claim, report, policy)
                finished.add(claim.id)
        report.fetch_ms = (time.perf_counter() - t_fetch) * 1000
        if not ready:
            return
        t0 = time.perf_counter()
        results = _assess_isolating_failures(model, [req for _, req in ready])
        report.model_ms = (time.perf_counter() - t0) * 1000
        per_item_ms = report.model_ms / len(ready)
        t_save = time.perf_counter()
        for (claim, _), result in zip(ready, results, strict=True):
            if isinstance(result, Exception):  # this item fails on its own: it uses an attempt
                _give_back(sessions, claim, report, policy, count_attempt=True)
                finished.add(claim.id)
                continue
            try:
                with sessions() as s:
                    outcome = save_scores(s, claim.id, claim.attempt, result, model_name=pool.base_model,
                                          model_ms=per_item_ms)
            except DataError as exc:  # the database refuses this result: retrying cannot help
                _fail(sessions, claim, "result_not_storable", str(getattr(exc, "orig", exc))[:500], report)
                finished.add(claim.id)
                continue
            finished.add(claim.id)
            if outcome is False:
                log.warning("lost the claim on %s (attempt %d); result dropped", claim.id, claim.attempt)
                continue
            report.scored.append(claim.id)
            if outcome is not None:
                report.deliveries.append(outcome)
        report.save_ms = (time.perf_counter() - t_save) * 1000
    finally:
        # Whatever escaped (database down, a bug), no claimed row waits for the sweeper's deadline.
        for claim in claims:
            if claim.id not in finished:
                try:
                    _give_back(sessions, claim, report, policy)
                except Exception:
                    log.exception("could not give %s back; the sweeper will", claim.id)


def _assess_isolating_failures(model, requests: list[AssessmentRequest]) -> list:
    """One batched call; if it fails, one call per item, so one poison item cannot sink its
    neighbours. Returns a result or the exception per item."""
    try:
        return assess(model, requests)
    except Exception:
        if len(requests) == 1:
            log.exception("model failure on one item")
            return [sys.exc_info()[1]]
        log.exception("model failure on a batch of %d; scoring its items one by one", len(requests))
    out: list = []
    for req in requests:
        try:
            out.extend(assess(model, [req]))
        except Exception as exc:
            log.exception("model failure on one item")
            out.append(exc)
    return out


def _fail(sessions: sessionmaker[Session], claim: Claim, code: str, message: str, report: RoundReport) -> None:
    with sessions() as s:
        if (d := mark_failed(s, claim.id, claim.attempt, code, message)) is not None:
            report.deliveries.append(d)
    report.failed[claim.id] = code


def _give_back(sessions: sessionmaker[Session], claim: Claim, report: RoundReport, policy: RetryPolicy, *,
               count_attempt: bool = False) -> None:
    with sessions() as s:
        outcome = release(s, claim, policy, count_attempt=count_attempt)
    if outcome.failed_code is not None:
        report.failed[claim.id] = outcome.failed_code
        if outcome.delivery_id is not None:
            report.deliveries.append(outcome.delivery_id)
    elif outcome.released:
        report.retry[claim.id] = outcome.delay_s
