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
from typing import Any

from sqlalchemy import Float, and_, case, cast, func, literal, or_, select, type_coerce, union_all
from sqlalchemy.orm import Session

from db.models import SentenceScore, Submission, SubmissionStatus
from db.results import SENTENCE_ASPECTS, as_utc, iso


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


def learner_history(
    session: Session, flt: HistoryFilter, *, limit: int, after: HistoryKey | None = None
) -> tuple[list[tuple[Submission, SentenceScore | None]], HistoryKey | None]:
    """One page, newest first, and the key to pass as `after` for the next page (None at the end)."""
    stmt = (
        select(Submission, SentenceScore)
        .outerjoin(SentenceScore, SentenceScore.submission_id == Submission.id)
        .where(*flt.conditions())
    )
    if after is not None:
        at, last_id = _utc(after[0]), after[1]
        stmt = stmt.where(
            or_(Submission.created_at < at, and_(Submission.created_at == at, Submission.id < last_id))
        )
    stmt = stmt.order_by(Submission.created_at.desc(), Submission.id.desc()).limit(limit + 1)
    rows = [(sub, sent) for sub, sent in session.execute(stmt).all()]
    next_key: HistoryKey | None = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1][0]
        next_key = (as_utc(last.created_at), last.id)  # type: ignore[assignment]
    return rows, next_key


def learner_aggregates(session: Session, flt: HistoryFilter) -> dict[str, dict[str, Any]]:
    """Per sentence aspect: n, mean, latest, trend (see the module docstring), in one statement."""
    parts = []
    for aspect in SENTENCE_ASPECTS:
        col = getattr(SentenceScore, aspect)
        points = (
            select(
                cast(col, Float).label("y"),
                (func.row_number().over(order_by=(Submission.created_at, Submission.id)) - 1).label("x"),
                func.count().over().label("n"),
            )
            .join(SentenceScore, SentenceScore.submission_id == Submission.id)
            .where(*flt.conditions(), Submission.status == SubmissionStatus.scored, col.is_not(None))
            .subquery()
        )
        x, y = cast(points.c.x, Float), points.c.y
        parts.append(
            select(
                literal(aspect).label("aspect"),
                func.count().label("n"),
                func.sum(x).label("sx"),
                func.sum(y).label("sy"),
                func.sum(x * y).label("sxy"),
                func.sum(x * x).label("sxx"),
                func.max(case((points.c.x == points.c.n - 1, y))).label("latest"),
            ).select_from(points)
        )
    out: dict[str, dict[str, Any]] = {}
    for row in session.execute(union_all(*parts)).all():
        n = int(row.n or 0)
        if n == 0:
            out[row.aspect] = {"n": 0, "mean": None, "latest": None, "trend": None}
            continue
        sx, sy, sxy, sxx = (float(v) for v in (row.sx, row.sy, row.sxy, row.sxx))
        denom = n * sxx - sx * sx
        slope = (n * sxy - sx * sy) / denom if n >= 2 and denom != 0 else None
        out[row.aspect] = {
            "n": n,
            "mean": sy / n,
            "latest": float(row.latest) if row.latest is not None else None,
            "trend": slope,
        }
    return {a: out.get(a, {"n": 0, "mean": None, "latest": None, "trend": None}) for a in SENTENCE_ASPECTS}


def course_learners(
    session: Session, course_id: str, *, tenant_id: uuid.UUID | None = None
) -> list[dict[str, Any]]:
    """Each learner of a course (per tenant): scored count, mean and latest sentence scores.

    Learners appear once they have at least one scored submission in the course; ordered by
    tenant then learner id.
    """
    conds: list[Any] = [Submission.course_id == course_id, Submission.status == SubmissionStatus.scored]
    if tenant_id is not None:
        conds.append(Submission.tenant_id == tenant_id)
    ranked = (
        select(
            Submission.tenant_id,
            Submission.learner_id,
            Submission.created_at,
            *(getattr(SentenceScore, a).label(a) for a in SENTENCE_ASPECTS),
            func.row_number()
            .over(
                partition_by=(Submission.tenant_id, Submission.learner_id),
                order_by=(Submission.created_at.desc(), Submission.id.desc()),
            )
            .label("rn"),
        )
        .join(SentenceScore, SentenceScore.submission_id == Submission.id)
        .where(*conds)
        .subquery()
    )
    cols: list[Any] = [ranked.c.tenant_id, ranked.c.learner_id, func.count().label("n")]
    for a in SENTENCE_ASPECTS:
        c = ranked.c[a]
        cols.append(func.avg(cast(c, Float)).label(f"mean_{a}"))
        cols.append(func.max(case((ranked.c.rn == 1, c))).label(f"latest_{a}"))
    latest_at = func.max(case((ranked.c.rn == 1, ranked.c.created_at)))
    cols.append(type_coerce(latest_at, Submission.created_at.type).label("latest_at"))
    stmt = (
        select(*cols)
        .group_by(ranked.c.tenant_id, ranked.c.learner_id)
        .order_by(ranked.c.tenant_id, ranked.c.learner_id)
    )
    learners = []
    for row in session.execute(stmt).mappings():
        learners.append(
            {
                "tenant_id": str(row["tenant_id"]),
                "learner_id": row["learner_id"],
                "count": int(row["n"]),
                "latest_at": iso(row["latest_at"]),
                "latest": {
                    a: (int(row[f"latest_{a}"]) if row[f"latest_{a}"] is not None else None)
                    for a in SENTENCE_ASPECTS
                },
                "mean": {
                    a: (float(row[f"mean_{a}"]) if row[f"mean_{a}"] is not None else None)
                    for a in SENTENCE_ASPECTS
                },
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
