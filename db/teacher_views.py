"""Read queries behind the teachers' pages (course, learner, ops), on Postgres and SQLite alike.

Like `db.queries`, these take the caller's scope as plain filters (`tenant_id`, `courses`); who
may see what is decided in the gateway (`api_gateway.auth.Principal`), applied here in WHERE.

Scores are the sentence/word/phone integers on 0..10 the API returns (phones are stored ×5 from
the 0..2 annotation scale, so 0 = wrong, 5 = accented, 10 = right). A score is "low" at or under
`LOW_AT` (the poor and fair bands of the pages' legend): the practice list counts those.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Float, Integer, case, cast, func, select
from sqlalchemy.orm import Session

from db.models import (
    Adapter, CourseLearnerSummary, PhoneScore, SentenceScore, Submission, SubmissionStatus, TrainingJob, WordScore,
)
from db.queries import HistoryFilter
from db.results import as_utc
from db.summary import summary_last_totals, summary_mean

LOW_AT = 6
COURSE_ASPECTS: tuple[str, ...] = ("total", "accuracy", "fluency", "prosody")
CHART_ASPECTS: tuple[str, ...] = ("accuracy", "fluency", "prosody", "completeness", "total")
SPARK_POINTS = 10
SORT_KEYS = ("learner", "recordings", "last_at", *(f"{k}_{a}" for k in ("latest", "mean") for a in COURSE_ASPECTS))


@dataclass
class LearnerRow:
    """One learner of a course: recordings (every status), then from the recordings with sentence
    scores (a word-only granularity has none): their count, latest and mean values, last three totals."""

    tenant_id: uuid.UUID
    learner_id: str
    recordings: int
    scored: int
    last_at: datetime | None
    latest: dict[str, int | None]
    mean: dict[str, float | None]
    last_three: tuple[int | None, int | None, int | None]  # newest first

    @property
    def falling(self) -> bool:
        """The last three totals fell each time (newest < previous < the one before)."""
        t1, t2, t3 = self.last_three
        return None not in (t1, t2, t3) and t3 > t2 > t1  # type: ignore[operator]

    def sort_value(self, key: str) -> Any:
        if key == "learner":
            return self.learner_id
        if key == "recordings":
            return self.recordings
        if key == "last_at":
            return as_utc(self.last_at)
        kind, aspect = key.split("_", 1)
        return (self.latest if kind == "latest" else self.mean).get(aspect)


def _conds(course_id: str, tenant_id: uuid.UUID | None) -> list[Any]:
    conds: list[Any] = [Submission.course_id == course_id]
    if tenant_id is not None:
        conds.append(Submission.tenant_id == tenant_id)
    return conds


def course_rows(session: Session, course_id: str, *, tenant_id: uuid.UUID | None) -> list[LearnerRow]:
    """Every learner with a submission in the course (no sparkline yet).

    The scored part (means, latest values, last three totals) is the worker-kept summary, one row
    per learner (`db.summary`); recordings and the last recording time count every status, so they
    come from the submissions themselves, grouped on the course index alone. Two statements, and
    neither joins a score table, so a course of 50,000 recordings costs tens of milliseconds."""
    recordings = (
        select(Submission.tenant_id, Submission.learner_id, func.count().label("n"),
               func.max(Submission.created_at).label("last_at"))
        .where(*_conds(course_id, tenant_id))
        .group_by(Submission.tenant_id, Submission.learner_id)
    )
    summary = CourseLearnerSummary.__table__
    summary_stmt = select(summary.c.tenant_id, summary.c.learner_id, *(summary.c[c] for c in _SUMMARY_COLS)).where(
        summary.c.course_id == course_id)
    if tenant_id is not None:
        summary_stmt = summary_stmt.where(summary.c.tenant_id == tenant_id)
    # plain tuples into dicts: attribute access on 2,000 result rows x 15 columns costs more than the SQL
    summaries = {(_uuid(t), lid): dict(zip(_SUMMARY_COLS, rest)) for t, lid, *rest in session.execute(summary_stmt)}
    out = []
    for tid, learner_id, n, last_at in session.execute(recordings):
        tid = _uuid(tid)
        sm = summaries.get((tid, learner_id))
        if sm is None:  # nothing scored yet: recordings only
            out.append(LearnerRow(tenant_id=tid, learner_id=learner_id, recordings=int(n), scored=0, last_at=last_at,
                                  latest=dict.fromkeys(COURSE_ASPECTS), mean=dict.fromkeys(COURSE_ASPECTS),
                                  last_three=(None, None, None)))
            continue
        out.append(LearnerRow(
            tenant_id=tid, learner_id=learner_id, recordings=int(n), scored=sm["n"], last_at=last_at,
            latest={a: sm[f"latest_{a}"] for a in COURSE_ASPECTS},
            mean={a: summary_mean(sm, a) for a in COURSE_ASPECTS},
            last_three=summary_last_totals(sm),
        ))
    return out


_SUMMARY_COLS = ("n", *(f"{k}_{a}" for k in ("latest", "sum", "cnt") for a in COURSE_ASPECTS), "prev_total", "prev2_total")


def _uuid(v: Any) -> uuid.UUID:
    return v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))


def course_version(session: Session, course_id: str, *, tenant_id: uuid.UUID | None) -> tuple[Any, ...]:
    """When the course's submissions last changed, per tenant (index probes on
    ix_submissions_course_updated): a new submission or any status change moves it, because
    every write to a submission sets `updated_at`."""
    from db.models import Tenant

    tenants = [tenant_id] if tenant_id is not None else list(session.scalars(select(Tenant.id).order_by(Tenant.id)))
    out = []
    for tid in tenants:
        last = session.scalar(select(func.max(Submission.updated_at)).where(
            Submission.tenant_id == tid, Submission.course_id == course_id))
        out.append((str(tid), as_utc(last)))
    return tuple(out)


def sparklines(
    session: Session, course_id: str, rows: Sequence[LearnerRow], *, tenant_id: uuid.UUID | None
) -> dict[tuple[uuid.UUID, str], list[int]]:
    """The last SPARK_POINTS totals (oldest first) of these learners only (one page), by
    (tenant, learner). Ranked on `submissions` alone (index on tenant, learner, created_at), then
    joined to at most SPARK_POINTS score rows per learner, so it never touches the whole course."""
    out: dict[tuple[uuid.UUID, str], list[int]] = {(r.tenant_id, r.learner_id): [] for r in rows}
    if not rows:
        return out
    ranked = (
        select(
            Submission.id, Submission.tenant_id, Submission.learner_id,
            func.row_number().over(
                partition_by=(Submission.tenant_id, Submission.learner_id),
                order_by=(Submission.created_at.desc(), Submission.id.desc()),
            ).label("rn"),
        )
        .where(
            *_conds(course_id, tenant_id), Submission.status == SubmissionStatus.scored,
            Submission.learner_id.in_(sorted({r.learner_id for r in rows})),
        )
        .subquery()
    )
    stmt = (
        select(ranked.c.tenant_id, ranked.c.learner_id, SentenceScore.total)
        .join(SentenceScore, SentenceScore.submission_id == ranked.c.id)
        .where(ranked.c.rn <= SPARK_POINTS, SentenceScore.total.is_not(None))
        .order_by(ranked.c.tenant_id, ranked.c.learner_id, ranked.c.rn.desc())
    )
    for tid, lid, total in session.execute(stmt):
        tid = _uuid(tid)
        if (tid, lid) in out:
            out[(tid, lid)].append(int(total))
    return out


def sort_rows(rows: list[LearnerRow], key: str, descending: bool) -> list[LearnerRow]:
    """Sorted by `key` (one of SORT_KEYS), ties by learner id; learners without a value go last."""
    have = [r for r in rows if r.sort_value(key) is not None]
    missing = [r for r in rows if r.sort_value(key) is None]
    have.sort(key=lambda r: (r.learner_id, str(r.tenant_id)))
    have.sort(key=lambda r: r.sort_value(key), reverse=descending)  # stable: ties stay by learner
    missing.sort(key=lambda r: (r.learner_id, str(r.tenant_id)))
    return have + missing


def learner_series(session: Session, flt: HistoryFilter, *, limit: int = 500) -> list[dict[str, Any]]:
    """The newest `limit` scored submissions, oldest first: the chart's points (five aspects)."""
    stmt = (
        select(Submission.id, Submission.created_at, *(getattr(SentenceScore, a) for a in CHART_ASPECTS))
        .join(SentenceScore, SentenceScore.submission_id == Submission.id)
        .where(*flt.conditions(), Submission.status == SubmissionStatus.scored)
        .order_by(Submission.created_at.desc(), Submission.id.desc())
        .limit(limit)
    )
    points = []
    for row in session.execute(stmt):
        points.append({"id": str(row[0]), "at": as_utc(row[1]), **{a: _int(row[i + 2]) for i, a in enumerate(CHART_ASPECTS)}})
    points.reverse()
    return points


def practice_list(session: Session, flt: HistoryFilter, *, limit: int = 10) -> dict[str, list[dict[str, Any]]]:
    """Words and phones this learner most often scores low on (at or under LOW_AT), across recordings.

    Ranked by how many times they were low, then by the lower mean; words are compared upper-cased.
    """
    scored = [*flt.conditions(), Submission.status == SubmissionStatus.scored]
    word = func.upper(WordScore.text)
    low_w = func.sum(case((WordScore.accuracy <= LOW_AT, 1), else_=0))
    words = session.execute(
        select(word, func.count(), cast(low_w, Integer), func.avg(cast(WordScore.accuracy, Float)))
        .join(Submission, Submission.id == WordScore.submission_id)
        .where(*scored, WordScore.accuracy.is_not(None))
        .group_by(word)
        .having(low_w > 0)
        .order_by(low_w.desc(), func.avg(cast(WordScore.accuracy, Float)), word)
        .limit(limit)
    ).all()
    low_p = func.sum(case((PhoneScore.accuracy <= LOW_AT, 1), else_=0))
    phones = session.execute(
        select(PhoneScore.phone, func.count(), cast(low_p, Integer), func.avg(cast(PhoneScore.accuracy, Float)))
        .join(Submission, Submission.id == PhoneScore.submission_id)
        .where(*scored)
        .group_by(PhoneScore.phone)
        .having(low_p > 0)
        .order_by(low_p.desc(), func.avg(cast(PhoneScore.accuracy, Float)), PhoneScore.phone)
        .limit(limit)
    ).all()

    def view(rows: Any) -> list[dict[str, Any]]:
        return [{"text": t, "seen": int(n), "low": int(lo), "mean": float(m)} for t, n, lo, m in rows]

    return {"words": view(words), "phones": view(phones)}


def status_counts_since(session: Session, since: datetime) -> dict[str, int]:
    """Submissions created since `since`, per status (every status present)."""
    counts = {s.value: 0 for s in SubmissionStatus}
    stmt = select(Submission.status, func.count()).where(Submission.created_at >= since).group_by(Submission.status)
    for status, n in session.execute(stmt):
        counts[status.value if hasattr(status, "value") else str(status)] = int(n)
    return counts


def recent_jobs(session: Session, limit: int = 20) -> list[TrainingJob]:
    return list(session.scalars(select(TrainingJob).order_by(TrainingJob.created_at.desc()).limit(limit)))


def all_adapters(session: Session) -> list[Adapter]:
    return list(session.scalars(select(Adapter).order_by(Adapter.base_model, Adapter.created_at.desc())))


def courses_of(session: Session, *, tenant_id: uuid.UUID | None, courses: Sequence[str] | None) -> list[tuple[str, int]]:
    """(course id, submissions) for the courses a caller may open, most used first (ops: top 200)."""
    stmt = select(Submission.course_id, func.count()).group_by(Submission.course_id)
    if tenant_id is not None:
        stmt = stmt.where(Submission.tenant_id == tenant_id)
    if courses is not None:
        stmt = stmt.where(Submission.course_id.in_(list(courses)))
    rows = session.execute(stmt.order_by(func.count().desc(), Submission.course_id).limit(200)).all()
    found = {c: int(n) for c, n in rows}
    if courses is not None:  # a teacher sees every course of the scope, even an empty one
        return [(c, found.get(c, 0)) for c in courses]
    return list(found.items())


def _int(v: Any) -> int | None:
    return int(v) if v is not None else None


__all__ = [
    "CHART_ASPECTS", "COURSE_ASPECTS", "LOW_AT", "LearnerRow", "SORT_KEYS", "SPARK_POINTS", "all_adapters",
    "course_rows", "course_version", "courses_of", "learner_series", "practice_list", "recent_jobs",
    "sort_rows", "sparklines", "status_counts_since",
]
