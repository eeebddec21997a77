"""retry policy and lease columns on submissions; worker heartbeats

Revision ID: 0002
Revises: 0001
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('submissions') as batch:
        batch.add_column(sa.Column('transient_failures', sa.Integer(), server_default=sa.text('0'), nullable=False))
        batch.add_column(sa.Column('failing_since', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_submissions_status_due', 'submissions', ['status', 'next_attempt_at'], unique=False)
    op.create_table('worker_heartbeats',
    sa.Column('id', sa.String(length=300), nullable=False),
    sa.Column('queues', sa.String(length=100), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('beat_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_worker_heartbeats'))
    )
    op.create_index(op.f('ix_worker_heartbeats_beat_at'), 'worker_heartbeats', ['beat_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_worker_heartbeats_beat_at'), table_name='worker_heartbeats')
    op.drop_table('worker_heartbeats')
    op.drop_index('ix_submissions_status_due', table_name='submissions')
    with op.batch_alter_table('submissions') as batch:
        batch.drop_column('lease_expires_at')
        batch.drop_column('next_attempt_at')
        batch.drop_column('failing_since')
        batch.drop_column('transient_failures')
