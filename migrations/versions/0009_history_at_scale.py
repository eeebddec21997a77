"""history at scale: an ops-friendly history index and the course-view summary

Revision ID: 0009
Revises: 0004
Create Date: 2026-11-26

- ix_submissions_learner_created (learner_id, created_at, id): a learner's history for ops keys,
  which read across tenants and so cannot use ix_submissions_learner_history (it leads with
  tenant_id); its trailing (created_at, id) is the page order, so a page is one backward range scan.
- course_learner_summaries: one row per (course, tenant, learner) with the scored count, per-aspect
  sums and counts and the latest sentence values; the worker's result transaction keeps it current
  (db/summary.py). Backfilled here from the existing scored submissions with the same computation
  the course view used before (a window over each learner's scored submissions).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

ASPECTS = ('accuracy', 'fluency', 'prosody', 'completeness', 'total')


def _backfill_sql() -> str:
    keys = 'course_id, tenant_id, learner_id'
    cols = [keys, 'n', *(f'sum_{a}' for a in ASPECTS), *(f'cnt_{a}' for a in ASPECTS),
            *(f'latest_{a}' for a in ASPECTS), 'latest_at', 'latest_submission_id']
    aggs = ['count(*) AS n', *(f'coalesce(sum({a}), 0) AS sum_{a}' for a in ASPECTS),
            *(f'count({a}) AS cnt_{a}' for a in ASPECTS)]
    return (
        f"WITH r AS (SELECT s.course_id, s.tenant_id, s.learner_id, s.id, s.created_at, "
        f"{', '.join(f'ss.{a}' for a in ASPECTS)}, row_number() OVER (PARTITION BY s.course_id, s.tenant_id, "
        f"s.learner_id ORDER BY s.created_at DESC, s.id DESC) AS rn "
        f"FROM submissions s JOIN sentence_scores ss ON ss.submission_id = s.id WHERE s.status = 'scored'), "
        f"g AS (SELECT {keys}, {', '.join(aggs)} FROM r GROUP BY {keys}) "
        f"INSERT INTO course_learner_summaries ({', '.join(cols)}) "
        f"SELECT g.course_id, g.tenant_id, g.learner_id, g.n, {', '.join(f'g.sum_{a}' for a in ASPECTS)}, "
        f"{', '.join(f'g.cnt_{a}' for a in ASPECTS)}, {', '.join(f'r.{a}' for a in ASPECTS)}, r.created_at, r.id "
        f"FROM g JOIN r ON r.rn = 1 AND r.course_id = g.course_id AND r.tenant_id = g.tenant_id "
        f"AND r.learner_id = g.learner_id"
    )


def upgrade() -> None:
    op.create_index('ix_submissions_learner_created', 'submissions', ['learner_id', 'created_at', 'id'], unique=False)
    op.create_table(
        'course_learner_summaries',
        sa.Column('course_id', sa.String(length=200), nullable=False),
        sa.Column('tenant_id', sa.Uuid(), nullable=False),
        sa.Column('learner_id', sa.String(length=200), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        *(sa.Column(f'sum_{a}', sa.Integer(), nullable=False) for a in ASPECTS),
        *(sa.Column(f'cnt_{a}', sa.Integer(), nullable=False) for a in ASPECTS),
        *(sa.Column(f'latest_{a}', sa.SmallInteger(), nullable=True) for a in ASPECTS),
        sa.Column('latest_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('latest_submission_id', sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_course_learner_summaries_tenant_id_tenants'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('course_id', 'tenant_id', 'learner_id', name=op.f('pk_course_learner_summaries')),
    )
    op.execute(_backfill_sql())


def downgrade() -> None:
    op.drop_table('course_learner_summaries')
    op.drop_index('ix_submissions_learner_created', table_name='submissions')
