"""History at scale (issue 10): the course summary kept by the worker's result transaction equals a
recomputation from the submissions; the one-statement aggregates and the column-only history equal
the old computations; the migration backfills the summary from existing rows. SQLite and Postgres."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Float, and_, case, cast, func, literal, select, union_all
from sqlalchemy.orm import Session

from db.accounts import create_tenant
from db.engine import make_engine, make_session_factory, session_scope
from db.models import SentenceScore, Submission, SubmissionStatus
from db.queries import HistoryFilter, course_learners, learner_aggregates, learner_history
from db.results import SENTENCE_ASPECTS, as_utc
from db.teacher_views import COURSE_ASPECTS, LearnerRow, course_rows
from db.summary import add_scored, recompute_course_learners
from migrations.runner import downgrade, upgrade
from pronunciation.assess import AssessmentResult
from pronunciation.schema import Assessment, Granularity, Score, SentenceScores
from workers.persist import mark_failed, save_scores

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)
GRANULARITIES = (Granularity.SENTENCE, Granularity.SENTENCE_ACCURACY, Granularity.SENTENCE_TOTAL)


def _sentence(g: Granularity, rng: random.Random) -> SentenceScores:
    from pronunciation.schema import MODE_FIELDS

    values = {}
    for a in MODE_FIELDS[g].sentence:
        v = rng.randint(0, 10)
        values[a] = Score(value=v, expected=min(10.0, v + rng.random()))
    return SentenceScores(**values)


def _queue(s: Session, tenant_id: uuid.UUID, learner: str, course: str, at: datetime, n: int, g: Granularity) -> uuid.UUID:
    """A submission as a claimed worker sees it: running, first attempt."""
    sid = uuid.uuid4()
    s.add(Submission(id=sid, tenant_id=tenant_id, lms_submission_id=f"{learner}-{n}-{sid.hex[:6]}", learner_id=learner,
                     course_id=course, reference_text="WE CALL IT BEAR", audio_uri="s3://b/k.wav",
                     granularity=g.value, status=SubmissionStatus.running, attempts=1, created_at=at, updated_at=at))
    return sid


def _seed_scored_through_worker(sessions, rng: random.Random, n: int = 60) -> list[uuid.UUID]:
    """Submissions of 2 tenants x 3 learners x 2 courses, scored (or failed) through
    `workers.persist` in an order unrelated to created_at; ties in created_at included."""
    with session_scope(sessions) as s:
        tenants = [create_tenant(s, f"t{i}").id for i in range(2)]
        planned = []
        for i in range(n):
            at = T0 + timedelta(hours=rng.choice([0, 1, 1, 2, 3, 5, 8, 13]) + i // 7)  # many ties
            planned.append(_queue(s, rng.choice(tenants), f"L{rng.randint(0, 2)}", rng.choice(["c1", "c2"]),
                                  at, i, rng.choice(GRANULARITIES)))
    order = planned[:]
    rng.shuffle(order)
    for sid in order:
        with sessions() as s:
            sub = s.get(Submission, sid)
            if rng.random() < 0.15:
                mark_failed(s, sid, 1, "audio_silent", "no speech")
                continue
            g = Granularity(sub.granularity)
            result = AssessmentResult(Assessment(granularity=g, sentence=_sentence(g, rng)), "raw", "v1", True)
            assert save_scores(s, sid, 1, result, model_name="tiny", model_ms=1.0) is None
    return tenants


@pytest.fixture
def sessions(migrated_url: str):
    engine = make_engine(migrated_url)
    yield make_session_factory(engine)
    engine.dispose()


def test_summary_kept_by_result_transaction_matches_recomputation(sessions) -> None:
    tenants = _seed_scored_through_worker(sessions, random.Random(7))
    with sessions() as s:
        for course in ("c1", "c2", "nobody"):
            for tenant in (None, *tenants):
                got = course_learners(s, course, tenant_id=tenant)
                assert got == recompute_course_learners(s, course, tenant_id=tenant)
            if course != "nobody":
                assert got, "the seed gives every course scored learners"
        # a submission whose claim was lost writes nothing, the summary included
        sid = _queue(s, tenants[0], "L0", "c1", T0 + timedelta(days=30), 999, Granularity.SENTENCE)
        s.commit()
        before = course_learners(s, "c1")
        g = Granularity.SENTENCE
        result = AssessmentResult(Assessment(granularity=g, sentence=_sentence(g, random.Random(1))), "raw", "v1", True)
        assert save_scores(s, sid, 2, result, model_name="tiny", model_ms=1.0) is False
        assert course_learners(s, "c1") == before
        # ... and the newest result becomes the learner's latest
        assert save_scores(s, sid, 1, result, model_name="tiny", model_ms=1.0) is None
        row = next(r for r in course_learners(s, "c1", tenant_id=tenants[0]) if r["learner_id"] == "L0")
        assert row["latest_at"] == "2026-03-31T08:00:00Z"
        assert row["latest"]["accuracy"] == result.assessment.sentence.accuracy.value
        assert course_learners(s, "c1") == recompute_course_learners(s, "c1")


def old_course_rows(session: Session, course_id: str, *, tenant_id: uuid.UUID | None) -> list[LearnerRow]:
    """The course page's rows as computed before the summary kept the last three totals: one
    window over every submission of the course joined to its sentence row."""
    scored = Submission.status == SubmissionStatus.scored
    conds = [Submission.course_id == course_id] + ([Submission.tenant_id == tenant_id] if tenant_id else [])
    ranked = (
        select(
            Submission.tenant_id, Submission.learner_id, Submission.created_at,
            case((scored, 1), else_=0).label("is_scored"),
            *(getattr(SentenceScore, a).label(a) for a in COURSE_ASPECTS),
            func.row_number().over(partition_by=(Submission.tenant_id, Submission.learner_id, scored),
                                   order_by=(Submission.created_at.desc(), Submission.id.desc())).label("rn"),
        )
        .outerjoin(SentenceScore, SentenceScore.submission_id == Submission.id)
        .where(*conds)
        .subquery()
    )
    is_scored = ranked.c.is_scored == 1
    cols: list[Any] = [ranked.c.tenant_id, ranked.c.learner_id, func.count().label("n"),
                       func.sum(ranked.c.is_scored).label("n_scored"), func.max(ranked.c.created_at).label("last_at")]
    for a in COURSE_ASPECTS:
        cols.append(func.avg(case((is_scored, cast(ranked.c[a], Float)))).label(f"mean_{a}"))
        cols.append(func.max(case((and_(is_scored, ranked.c.rn == 1), ranked.c[a]))).label(f"latest_{a}"))
    for i in (1, 2, 3):
        cols.append(func.max(case((and_(is_scored, ranked.c.rn == i), ranked.c.total))).label(f"t{i}"))
    rows = session.execute(select(*cols).group_by(ranked.c.tenant_id, ranked.c.learner_id)).mappings()
    return [LearnerRow(
        tenant_id=r["tenant_id"], learner_id=r["learner_id"], recordings=int(r["n"]), scored=int(r["n_scored"] or 0),
        last_at=r["last_at"], latest={a: r[f"latest_{a}"] for a in COURSE_ASPECTS},
        mean={a: r[f"mean_{a}"] for a in COURSE_ASPECTS}, last_three=(r["t1"], r["t2"], r["t3"]),
    ) for r in rows]


def test_course_page_rows_from_the_summary_equal_the_old_computation(sessions) -> None:
    # Results stored through the worker in shuffled order (so the summary's last-three slots take
    # late arrivals), failed ones, and recordings still waiting: counted as recordings, not scores.
    tenants = _seed_scored_through_worker(sessions, random.Random(11), n=120)
    with session_scope(sessions) as s:
        for i, learner in enumerate(("L0", "L9")):
            _queue(s, tenants[0], learner, "c1", T0 + timedelta(days=40 + i), 1000 + i, Granularity.SENTENCE)
    with sessions() as s:
        seen_three = 0
        for course in ("c1", "c2", "nobody"):
            for tenant in (None, *tenants):
                def key(r: LearnerRow) -> tuple[str, str]:
                    return str(r.tenant_id), r.learner_id
                new = sorted(course_rows(s, course, tenant_id=tenant), key=key)
                old = sorted(old_course_rows(s, course, tenant_id=tenant), key=key)
                assert [key(r) for r in new] == [key(r) for r in old], (course, tenant)
                for n, o in zip(new, old):
                    assert (n.recordings, n.scored, as_utc(n.last_at), n.latest, n.last_three, n.falling) == (
                        o.recordings, o.scored, as_utc(o.last_at), o.latest, o.last_three, o.falling), (course, key(n))
                    for a in COURSE_ASPECTS:
                        assert (n.mean[a] is None) == (o.mean[a] is None), (course, key(n), a)
                        if o.mean[a] is not None:
                            assert n.mean[a] == pytest.approx(o.mean[a], rel=1e-12), (course, key(n), a)
                    seen_three += None not in n.last_three
        assert seen_three > 0
        waiting = [r for r in course_rows(s, "c1", tenant_id=tenants[0]) if r.learner_id == "L9"]
        assert len(waiting) == 1 and waiting[0].recordings == 1 and waiting[0].scored == 0
        assert waiting[0].latest["total"] is None and waiting[0].last_three == (None, None, None)


def test_history_indexes_exist(sessions) -> None:
    from sqlalchemy import inspect

    insp = inspect(sessions.kw["bind"])
    ix = {i["name"]: i["column_names"] for i in insp.get_indexes("submissions")}
    assert ix["ix_submissions_learner_created"] == ["learner_id", "created_at", "id"]  # ops: no tenant first
    assert insp.get_pk_constraint("course_learner_summaries")["constrained_columns"] == [
        "course_id", "tenant_id", "learner_id"]


def test_add_scored_ignores_unscored_rows(sessions) -> None:
    with session_scope(sessions) as s:
        t = create_tenant(s, "acme").id
        sid = _queue(s, t, "L", "c1", T0, 0, Granularity.SENTENCE)
        s.flush()
        add_scored(s, sid)  # running, no sentence row: nothing to add
    with sessions() as s:
        assert course_learners(s, "c1") == [] == recompute_course_learners(s, "c1")


# -- the old computations, verbatim in substance, as the reference -------------------------------


def old_learner_aggregates(session: Session, flt: HistoryFilter) -> dict[str, dict[str, Any]]:
    """The 5-part UNION that the history route ran before issue 10."""
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
                literal(aspect).label("aspect"), func.count().label("n"), func.sum(x).label("sx"),
                func.sum(y).label("sy"), func.sum(x * y).label("sxy"), func.sum(x * x).label("sxx"),
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
        out[row.aspect] = {"n": n, "mean": sy / n, "latest": float(row.latest) if row.latest is not None else None,
                           "trend": slope}
    return {a: out.get(a, {"n": 0, "mean": None, "latest": None, "trend": None}) for a in SENTENCE_ASPECTS}


def old_history_ids(session: Session, flt: HistoryFilter) -> list[uuid.UUID]:
    stmt = (select(Submission.id).where(*flt.conditions())
            .order_by(Submission.created_at.desc(), Submission.id.desc()))
    return list(session.scalars(stmt))


def _seed_direct(sessions, rng: random.Random, n: int = 300) -> list[uuid.UUID]:
    """Many rows quickly (the worker path is covered above): scored with random aspects missing,
    failed and queued rows, 2 tenants, 3 courses, 2 learners, tied timestamps."""
    with session_scope(sessions) as s:
        tenants = [create_tenant(s, f"t{i}").id for i in range(2)]
        for i in range(n):
            status = rng.choice([SubmissionStatus.scored] * 6 + [SubmissionStatus.failed, SubmissionStatus.queued])
            at = T0 + timedelta(minutes=rng.randint(0, 40) * 30)
            sub = Submission(tenant_id=rng.choice(tenants), lms_submission_id=f"x{i}", learner_id=rng.choice("AB"),
                             course_id=rng.choice(["c1", "c2", "c3"]), assignment_id=rng.choice(["a1", "a2"]),
                             reference_text="WE", audio_uri="s3://b/k", granularity="sentence", status=status,
                             created_at=at, updated_at=at)
            if status is SubmissionStatus.scored and rng.random() < 0.9:
                vals = {a: (rng.randint(0, 10) if rng.random() < 0.8 else None) for a in SENTENCE_ASPECTS}
                sub.sentence = SentenceScore(**vals, **{f"{a}_expected": v for a, v in vals.items()})
            s.add(sub)
    return tenants


def test_aggregates_and_history_equal_the_old_computation(sessions) -> None:
    tenants = _seed_direct(sessions, random.Random(3))
    filters = [
        HistoryFilter(learner_id="A"),  # ops
        HistoryFilter(learner_id="A", tenant_id=tenants[0], courses=("c1", "c3")),  # teacher
        HistoryFilter(learner_id="B", tenant_id=tenants[1]),  # lms
        HistoryFilter(learner_id="B", course_id="c2", since=T0 + timedelta(hours=3), until=T0 + timedelta(hours=15)),
        HistoryFilter(learner_id="A", assignment_id="a2", status=SubmissionStatus.scored),
        HistoryFilter(learner_id="nobody"),
    ]
    with sessions() as s:
        for flt in filters:
            new, old = learner_aggregates(s, flt), old_learner_aggregates(s, flt)
            assert new.keys() == old.keys()
            for a in SENTENCE_ASPECTS:
                assert new[a]["n"] == old[a]["n"] and new[a]["latest"] == old[a]["latest"], (flt, a)
                for k in ("mean", "trend"):
                    assert (new[a][k] is None) == (old[a][k] is None), (flt, a, k)
                    if new[a][k] is not None:
                        assert new[a][k] == pytest.approx(old[a][k], rel=1e-12, abs=1e-12), (flt, a, k)
            # pages of 7 in the new column-only query give the old order, no gaps, no repeats
            ids, after = [], None
            while True:
                rows, after = learner_history(s, flt, limit=7, after=after)
                ids += [r.id for r in rows]
                if after is None:
                    break
            assert ids == old_history_ids(s, flt)
        assert any(learner_aggregates(s, f)["total"]["n"] >= 20 for f in filters)


def test_migration_backfills_summary_from_existing_rows(database_url: str) -> None:
    # Rows written through today's models, then the schema taken back to before the summary (0008)
    # and forward again: the summary migration must rebuild it from the rows alone.
    upgrade(database_url)
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    try:
        _seed_direct(sessions, random.Random(5), n=200)
        engine.dispose()
        for before in ("0008", "0010"):  # the summary itself (0009), then its last-three slots (0011)
            downgrade(database_url, before)
            upgrade(database_url)
            with sessions() as s:
                for course in ("c1", "c2", "c3"):
                    got = course_learners(s, course)
                    assert got and got == recompute_course_learners(s, course)
                    assert any(None not in r["last_totals"] for r in got)
    finally:
        engine.dispose()
