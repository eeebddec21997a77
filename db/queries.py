"""Read queries for teachers and LMSes: a learner's score history and a course's learners.

They run the same SQL on Postgres and SQLite (window functions, no `regr_slope`). Callers pass
the caller's scope as plain filters (`tenant_id`, `courses`); deciding who may see what is the
gateway's job, applying it in the WHERE clause is this module's.

History order is newest first by `(created_at, id)`, a total order, so keyset pagination after a
`(created_at, id)` key has no duplicates and no gaps even when timestamps tie.

Aggregates are over the whole filtered window (not one page), over scored submissions only, on
the sentence scores' integer values:
  - `mean`: arithmetic mean;
  - `latest`: the newest scored submission's value;
  - `trend`: the least-squares slope of value against the scored-submission index (0 for the
    oldest scored submission in the window that has this aspect, 1 for the next, ...): score
    points gained per submission. It is null with fewer than two points.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from sqlalchemy import Row, Select, bindparam, case, func, or_, select, tuple_
from sqlalchemy.orm import Session

from db.models import CourseLearnerSummary, SentenceScore, Submission, SubmissionStatus
from db.results import SENTENCE_ASPECTS, as_utc, iso
from db.summary import summary_last_totals, summary_mean


@dataclass(frozen=True)
class HistoryFilter:
    """Which submissions of one learner a history or its aggregates cover."""

    learner_id: str
    tenant_id: uuid.UUID | None = None  # None: every tenant (ops only)
    courses: Sequence[str] | None = None  # a scope: only these courses (teachers); None = all
    course_id: str | None = None
    assignment_id: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    status: SubmissionStatus | None = None

    def conditions(self) -> list[Any]:
        conds: list[Any] = [Submission.learner_id == self.learner_id]
        if self.tenant_id is not None:
            conds.append(Submission.tenant_id == self.tenant_id)
        if self.courses is not None:
            conds.append(Submission.course_id.in_(list(self.courses)))
        if self.course_id is not None:
            conds.append(Submission.course_id == self.course_id)
        if self.assignment_id is not None:
            conds.append(Submission.assignment_id == self.assignment_id)
        if self.since is not None:
            conds.append(Submission.created_at >= _utc(self.since))
        if self.until is not None:
            conds.append(Submission.created_at < _utc(self.until))
        if self.status is not None:
            conds.append(Submission.status == self.status)
        return conds


def _utc(value: datetime) -> datetime:
    """Bind values in UTC: SQLite compares the stored UTC wall time as text.

    A bound past the ends of Python's calendar once in UTC (`0001-01-01T00:00+01:00` is in year 0,
    `9999-12-31T23:59-01:00` in year 10000) is clamped to datetime.min / datetime.max: no row can
    lie beyond them, so the filter selects exactly what the caller asked for.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        offset = value.utcoffset()
        edge = datetime.min if offset is not None and offset > timedelta(0) else datetime.max
        return edge.replace(tzinfo=timezone.utc)


HistoryKey = tuple[datetime, uuid.UUID]

# What a history item shows, and nothing else: never the raw model output, reference text or
# phones, which are most of a submission row's bytes.
_ITEM_COLUMNS: tuple[Any, ...] = (
    Submission.id, Submission.lms_submission_id, Submission.tenant_id, Submission.course_id,
    Submission.assignment_id, Submission.status, Submission.granularity, Submission.created_at,
    Submission.finished_at, Submission.error_code, Submission.error_message,
    SentenceScore.submission_id.label("sentence_id"),
    *(getattr(SentenceScore, a) for a in SENTENCE_ASPECTS),
    *(getattr(SentenceScore, f"{a}_expected") for a in SENTENCE_ASPECTS),
)

# Which optional filters a HistoryFilter sets: statements are built once per shape (bind
# parameters for the values) and reused, instead of being rebuilt and recompiled on every call.
_SHAPE_FIELDS = ("tenant_id", "courses", "course_id", "assignment_id", "since", "until", "status")


def _shape(flt: HistoryFilter) -> tuple[bool, ...]:
    return tuple(getattr(flt, f) is not None for f in _SHAPE_FIELDS)


def _params(flt: HistoryFilter) -> dict[str, Any]:
    params: dict[str, Any] = {"learner_id": flt.learner_id}
    for f in _SHAPE_FIELDS:
        value = getattr(flt, f)
        if value is None:
            continue
        if f == "courses":
            value = list(value)
        elif f in ("since", "until"):
            value = _utc(value)
        params[f] = value
    return params


def _shape_conditions(shape: tuple[bool, ...]) -> list[Any]:
    has = dict(zip(_SHAPE_FIELDS, shape))
    conds: list[Any] = [Submission.learner_id == bindparam("learner_id")]
    if has["tenant_id"]:
        conds.append(Submission.tenant_id == bindparam("tenant_id"))
    if has["courses"]:
        conds.append(Submission.course_id.in_(bindparam("courses", expanding=True)))
    if has["course_id"]:
        conds.append(Submission.course_id == bindparam("course_id"))
    if has["assignment_id"]:
        conds.append(Submission.assignment_id == bindparam("assignment_id"))
    if has["since"]:
        conds.append(Submission.created_at >= bindparam("since"))
    if has["until"]:
        conds.append(Submission.created_at < bindparam("until"))
    if has["status"]:
        conds.append(Submission.status == bindparam("status"))
    return conds


@lru_cache(maxsize=256)
def _history_statement(shape: tuple[bool, ...], keyed: bool, reference_text: bool = False) -> Select:
    columns = (*_ITEM_COLUMNS, Submission.reference_text) if reference_text else _ITEM_COLUMNS
    stmt = (
        select(*columns)
        .outerjoin(SentenceScore, SentenceScore.submission_id == Submission.id)
        .where(*_shape_conditions(shape))
    )
    if keyed:  # a row comparison: one index range on (created_at, id)
        stmt = stmt.where(
            tuple_(Submission.created_at, Submission.id)
            < tuple_(bindparam("after_at", type_=Submission.created_at.type),
                     bindparam("after_id", type_=Submission.id.type))
        )
    return stmt.order_by(Submission.created_at.desc(), Submission.id.desc()).limit(bindparam("limit"))


def learner_history(
    session: Session, flt: HistoryFilter, *, limit: int, after: HistoryKey | None = None,
    reference_text: bool = False,
) -> tuple[list[Row[Any]], HistoryKey | None]:
    """One page, newest first, and the key to pass as `after` for the next page (None at the end).

    Each row has the submission's item columns (`id`, `lms_submission_id`, `tenant_id`,
    `course_id`, `assignment_id`, `status`, `granularity`, `created_at`, `finished_at`,
    `error_code`, `error_message`) and its sentence scores (`sentence_id` is None when it has none;
    `accuracy`, `accuracy_expected`, ... otherwise). `reference_text=True` adds that column too,
    for the teachers' learner page, which lists what each recording was of; the JSON API leaves
    it out."""
    params = _params(flt)
    params["limit"] = limit + 1
    if after is not None:
        params["after_at"], params["after_id"] = _utc(after[0]), after[1]
    statement = _history_statement(_shape(flt), after is not None, reference_text)
    rows = list(session.execute(statement, params).all())
    next_key: HistoryKey | None = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_key = (as_utc(last.created_at), last.id)  # type: ignore[assignment]
    return rows, next_key


@lru_cache(maxsize=256)
def _aggregates_statement(shape: tuple[bool, ...]) -> Select:
    """ONE statement for every aspect: a single pass over the learner's scored submissions.

    Per aspect a, x_a is the running count of non-null a values in (created_at, id) order minus 1,
    which is the scored-submission index the trend is defined on; n_a, sum(y), sum(x*y) and the
    value at x = n_a - 1 (the latest) are all that the slope and the mean need (sum(x) and
    sum(x^2) over 0..n-1 have closed forms)."""
    running = {"order_by": (Submission.created_at, Submission.id), "rows": (None, 0)}
    cols: list[Any] = []
    for a in SENTENCE_ASPECTS:
        col = getattr(SentenceScore, a)
        cols += [col.label(f"y_{a}"), (func.count(col).over(**running) - 1).label(f"x_{a}"),
                 func.count(col).over().label(f"n_{a}")]
    points = (
        select(*cols)
        .join(SentenceScore, SentenceScore.submission_id == Submission.id)
        .where(*_shape_conditions(shape), Submission.status == SubmissionStatus.scored)
        .subquery()
    )
    out: list[Any] = []
    for a in SENTENCE_ASPECTS:
        x, y, n = points.c[f"x_{a}"], points.c[f"y_{a}"], points.c[f"n_{a}"]
        out += [func.count(y).label(f"n_{a}"), func.sum(y).label(f"sy_{a}"),
                func.sum(x * y).label(f"sxy_{a}"), func.max(case((x == n - 1, y))).label(f"latest_{a}")]
    return select(*out).select_from(points)


def learner_aggregates(session: Session, flt: HistoryFilter) -> dict[str, dict[str, Any]]:
    """Per sentence aspect: n, mean, latest, trend (see the module docstring), in one statement."""
    row = session.execute(_aggregates_statement(_shape(flt)), _params(flt)).one()
    out: dict[str, dict[str, Any]] = {}
    for a in SENTENCE_ASPECTS:
        n = int(getattr(row, f"n_{a}") or 0)
        if n == 0:
            out[a] = {"n": 0, "mean": None, "latest": None, "trend": None}
            continue
        sy, sxy = float(getattr(row, f"sy_{a}")), float(getattr(row, f"sxy_{a}"))
        sx, sxx = float(n * (n - 1) // 2), float((n - 1) * n * (2 * n - 1) // 6)
        denom = n * sxx - sx * sx
        latest = getattr(row, f"latest_{a}")
        out[a] = {
            "n": n,
            "mean": sy / n,
            "latest": float(latest) if latest is not None else None,
            "trend": (n * sxy - sx * sy) / denom if n >= 2 and denom != 0 else None,
        }
    return out


_SUMMARY = CourseLearnerSummary


@lru_cache(maxsize=4)
def _course_statement(by_tenant: bool) -> Select:
    stmt = select(*_SUMMARY.__table__.columns).where(_SUMMARY.course_id == bindparam("course_id"))
    if by_tenant:
        stmt = stmt.where(_SUMMARY.tenant_id == bindparam("tenant_id"))
    return stmt.order_by(_SUMMARY.tenant_id, _SUMMARY.learner_id)


def course_learners(
    session: Session, course_id: str, *, tenant_id: uuid.UUID | None = None
) -> list[dict[str, Any]]:
    """Each learner of a course (per tenant): scored count, mean and latest sentence scores, and
    the totals of the last three scored submissions (newest first, null where fewer).

    Learners appear once they have at least one scored submission in the course; ordered by
    tenant then learner id. Read from `course_learner_summaries` (one row per learner, kept by the
    worker's result transaction; plain rows, no ORM objects); `db.summary.recompute_course_learners`
    gives the same from the submissions themselves.
    """
    params: dict[str, Any] = {"course_id": course_id}
    if tenant_id is not None:
        params["tenant_id"] = tenant_id
    learners = []
    for row in session.execute(_course_statement(tenant_id is not None), params).mappings():
        learners.append(
            {
                "tenant_id": str(row["tenant_id"]),
                "learner_id": row["learner_id"],
                "count": int(row["n"]),
                "latest_at": iso(row["latest_at"]),
                "latest": {a: row[f"latest_{a}"] for a in SENTENCE_ASPECTS},
                "mean": {a: summary_mean(row, a) for a in SENTENCE_ASPECTS},
                "last_totals": list(summary_last_totals(row)),
            }
        )
    return learners


def submission_counts(session: Session) -> dict[str, int]:
    """Submissions per status (every status present, zero when none): the metrics gauge."""
    counts = {s.value: 0 for s in SubmissionStatus}
    for status, n in session.execute(select(Submission.status, func.count()).group_by(Submission.status)):
        counts[status.value if hasattr(status, "value") else str(status)] = int(n)
    return counts


def find_existing_submission(
    session: Session, tenant_id: uuid.UUID, *, lms_submission_id: str, webhook_id: str | None
) -> Submission | None:
    """The tenant's submission with this webhook id or this LMS id (idempotent deliveries)."""
    clauses = [Submission.lms_submission_id == lms_submission_id]
    if webhook_id:
        clauses.append(Submission.webhook_id == webhook_id)
    return session.scalars(
        select(Submission)
        .where(Submission.tenant_id == tenant_id, or_(*clauses))
        .order_by(Submission.created_at)
        .limit(1)
    ).first()
