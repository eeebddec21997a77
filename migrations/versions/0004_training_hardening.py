"""training hardening: one pending job per engine, batch validation progress

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-26

- training_jobs.engine (default 'qwen2-audio'; the `gop` engine comes later) and a partial unique
  index that allows one queued/running job per engine: the trigger's check-then-insert cannot
  create duplicates under concurrency (gateway and beat at the same moment).
- annotation_batches.n_checked / progress_at: validation runs on the train queue and commits per
  chunk, so a killed validation resumes where it stopped and ops see its progress.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

PENDING = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    with op.batch_alter_table('training_jobs') as batch:
        batch.add_column(sa.Column('engine', sa.String(length=32), server_default=sa.text("'qwen2-audio'"),
                                   nullable=False))
    op.create_index('uq_training_jobs_one_pending_per_engine', 'training_jobs', ['engine'], unique=True,
                    postgresql_where=PENDING, sqlite_where=PENDING)
    with op.batch_alter_table('annotation_batches') as batch:
        batch.add_column(sa.Column('n_checked', sa.Integer(), server_default=sa.text('0'), nullable=False))
        batch.add_column(sa.Column('progress_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('annotation_batches') as batch:
        batch.drop_column('progress_at')
        batch.drop_column('n_checked')
    op.drop_index('uq_training_jobs_one_pending_per_engine', table_name='training_jobs',
                  postgresql_where=PENDING, sqlite_where=PENDING)
    with op.batch_alter_table('training_jobs') as batch:
        batch.drop_column('engine')
