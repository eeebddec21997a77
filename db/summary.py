"""The per-(course, tenant, learner) summary behind the course view, and its recomputation.

`add_scored` is called in the worker's result transaction (`workers.persist.save_scores`) right
after the sentence row is written: one `INSERT ... SELECT ... ON CONFLICT DO UPDATE` that adds the
submission to its learner's row (count, per-aspect sums and counts) and replaces the `latest_*`
values when the submission is newer by (created_at, id) than the row's latest; the second and
third newest are kept as `prev_*` and `prev2_*` (total, time, id) for the course page's trend flag. It runs on Postgres
and SQLite alike. On Postgres concurrent workers serialise on the summary row's lock, and the
update reads the committed row, so no addition is lost; since it commits or rolls back with the
scores, the summary never counts a result that was not stored.

`recompute_course_learners` is the old computation from the submissions themselves (a window over
every scored submission of the course): the reference that tests compare the summary with, and a
way for ops to check a summary by hand.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Float, Uuid, bindparam, case, cast, func, select, text, type_coerce
from sqlalchemy.orm import Session

from db.models import SentenceScore, Submission, SubmissionStatus
from db.results import SENTENCE_ASPECTS, iso

TABLE = "course_learner_summaries"
SLOT_FIELDS = ("total", "at", "submission_id")  # what the prev/prev2 slots keep of a submission


def _newer(slot: str = "latest") -> str:
    """The incoming submission is newer by (created_at, id) than the row's `slot` (or the slot is empty)."""
    t = TABLE
    empty = f"{t}.{slot}_at IS NULL OR " if slot != "latest" else ""
    return (f"({empty}excluded.latest_at > {t}.{slot}_at OR (excluded.latest_at = {t}.{slot}_at "
            f"AND excluded.latest_submission_id > {t}.{slot}_submission_id))")


def _upsert_sql() -> str:
    aspects = SENTENCE_ASPECTS
    cols = ["course_id", "tenant_id", "learner_id", "n",
            *(f"sum_{a}" for a in aspects), *(f"cnt_{a}" for a in aspects),
            *(f"latest_{a}" for a in aspects), "latest_at", "latest_submission_id"]
    values = ["s.course_id", "s.tenant_id", "s.learner_id", "1",
              *(f"coalesce(ss.{a}, 0)" for a in aspects),
              *(f"CASE WHEN ss.{a} IS NULL THEN 0 ELSE 1 END" for a in aspects),
              *(f"ss.{a}" for a in aspects), "s.created_at", "s.id"]
    t = TABLE
    newer, newer_prev, newer_prev2 = _newer(), _newer("prev"), _newer("prev2")
    # Three slots ordered newest first: latest_*, prev_*, prev2_*. An incoming submission takes the
    # first slot it is newer than and the slots below shift down (results may arrive out of order).
    # Every right-hand side reads the row as it was before this update.
    sets = [f"n = {t}.n + 1",
            *(f"sum_{a} = {t}.sum_{a} + excluded.sum_{a}" for a in aspects),
            *(f"cnt_{a} = {t}.cnt_{a} + excluded.cnt_{a}" for a in aspects),
            *(f"prev2_{c} = CASE WHEN {newer_prev} THEN {t}.prev_{c} WHEN {newer_prev2} "
              f"THEN excluded.latest_{c} ELSE {t}.prev2_{c} END" for c in SLOT_FIELDS),
            *(f"prev_{c} = CASE WHEN {newer} THEN {t}.latest_{c} WHEN {newer_prev} "
              f"THEN excluded.latest_{c} ELSE {t}.prev_{c} END" for c in SLOT_FIELDS),
            *(f"{c} = CASE WHEN {newer} THEN excluded.{c} ELSE {t}.{c} END"
              for c in (*(f"latest_{a}" for a in aspects), "latest_at", "latest_submission_id"))]
    # SQLite parses `... WHERE ... ON CONFLICT` unambiguously only with the WHERE present (it is).
    return (f"INSERT INTO {TABLE} ({', '.join(cols)}) "
            f"SELECT {', '.join(values)} FROM submissions s "
            f"JOIN sentence_scores ss ON ss.submission_id = s.id "
            f"WHERE s.id = :sid AND s.status = 'scored' "
            f"ON CONFLICT (course_id, tenant_id, learner_id) DO UPDATE SET {', '.join(sets)}")


# Built once: the same statement object every call, so SQLAlchemy's compiled cache serves it.
_UPSERT = text(_upsert_sql()).bindparams(bindparam("sid", type_=Uuid))


def summary_mean(row: Mapping[str, Any], aspect: str) -> float | None:
    """An aspect's mean from a summary row (sum over the count of non-null values)."""
    n = row[f"cnt_{aspect}"]
    return row[f"sum_{aspect}"] / n if n else None


def summary_last_totals(row: Mapping[str, Any]) -> tuple[int | None, int | None, int | None]:
    """The totals of the learner's three newest scored submissions, newest first."""
    return row["latest_total"], row["prev_total"], row["prev2_total"]


def add_scored(session: Session, submission_id: uuid.UUID) -> None:
    """Add one scored submission (with its sentence row already flushed) to the course summary.

    Call it once per submission, in the transaction that marks it scored: a submission that is not
    `scored` or has no sentence row adds nothing (the course view counts neither)."""
    session.execute(_UPSERT, {"sid": submission_id})


def recompute_course_learners(
    session: Session, course_id: str, *, tenant_id: uuid.UUID | None = None
) -> list[dict[str, Any]]:
    """The course view computed from every scored submission (the summary's reference)."""
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
    for i in (1, 2, 3):
        cols.append(func.max(case((ranked.c.rn == i, ranked.c.total))).label(f"t{i}"))
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
                "last_totals": [int(row[k]) if row[k] is not None else None for k in ("t1", "t2", "t3")],
            }
        )
    return learners
