"""course page from the summary: each learner's second and third newest scored submission, and a
course index that covers the recordings count

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26

- The course page flags learners whose last three totals fell; with the newest already in
  `latest_*`, course_learner_summaries now also keeps the second and third newest scored
  submissions by (created_at, id): their total, time and id (the time and id order a result that
  arrives out of order). Backfilled here from the existing scored submissions.
- ix_submissions_course_recent (tenant_id, course_id, created_at) becomes
  ix_submissions_course_learner (tenant_id, course_id, learner_id, created_at): the page's count of
  recordings per learner (every status) is then an index-only range scan of the course, and no
  query ordered a course's submissions by time alone. Same number of indexes on the intake path.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0011'
down_revision: Union[str, Sequence[str], None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

SLOTS = ('prev', 'prev2')


def _backfill_sql(slot: str, rank: int) -> str:
    return (
        f"UPDATE course_learner_summaries SET {slot}_total = r.total, {slot}_at = r.created_at, "
        f"{slot}_submission_id = r.id "
        f"FROM (SELECT s.course_id, s.tenant_id, s.learner_id, s.id, s.created_at, ss.total, "
        f"row_number() OVER (PARTITION BY s.course_id, s.tenant_id, s.learner_id "
        f"ORDER BY s.created_at DESC, s.id DESC) AS rn "
        f"FROM submissions s JOIN sentence_scores ss ON ss.submission_id = s.id WHERE s.status = 'scored') r "
        f"WHERE r.rn = {rank} AND r.course_id = course_learner_summaries.course_id "
        f"AND r.tenant_id = course_learner_summaries.tenant_id "
        f"AND r.learner_id = course_learner_summaries.learner_id"
    )


def backfill_sql() -> list[str]:
    """The statements that fill the new columns (also run by benchmarks/seed_history.py)."""
    return [_backfill_sql(slot, rank) for rank, slot in enumerate(SLOTS, start=2)]


def upgrade() -> None:
    with op.batch_alter_table('course_learner_summaries') as batch:
        for slot in SLOTS:
            batch.add_column(sa.Column(f'{slot}_total', sa.SmallInteger(), nullable=True))
            batch.add_column(sa.Column(f'{slot}_at', sa.DateTime(timezone=True), nullable=True))
            batch.add_column(sa.Column(f'{slot}_submission_id', sa.Uuid(), nullable=True))
    for stmt in backfill_sql():
        op.execute(stmt)
    op.drop_index('ix_submissions_course_recent', table_name='submissions')
    op.create_index('ix_submissions_course_learner', 'submissions', ['tenant_id', 'course_id', 'learner_id', 'created_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_submissions_course_learner', table_name='submissions')
    op.create_index('ix_submissions_course_recent', 'submissions', ['tenant_id', 'course_id', 'created_at'], unique=False)
    with op.batch_alter_table('course_learner_summaries') as batch:
        for slot in reversed(SLOTS):
            batch.drop_column(f'{slot}_submission_id')
            batch.drop_column(f'{slot}_at')
            batch.drop_column(f'{slot}_total')
