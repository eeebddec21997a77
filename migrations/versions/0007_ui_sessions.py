"""ui sessions: teachers' browser sign-ins (server-side, so sign-out really ends one); an index
that tells cheaply when a course last changed (the course page's cache key)

Revision ID: 0007
Revises: 0001
Create Date: 2026-11-26 08:30:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('ui_sessions',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.Uuid(), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['api_keys.id'], name=op.f('fk_ui_sessions_key_id_api_keys'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_ui_sessions'))
    )
    op.create_index(op.f('ix_ui_sessions_key_id'), 'ui_sessions', ['key_id'], unique=False)
    op.create_index(op.f('ix_ui_sessions_expires_at'), 'ui_sessions', ['expires_at'], unique=False)
    op.create_index('ix_submissions_course_updated', 'submissions', ['tenant_id', 'course_id', 'updated_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_submissions_course_updated', table_name='submissions')
    op.drop_index(op.f('ix_ui_sessions_expires_at'), table_name='ui_sessions')
    op.drop_index(op.f('ix_ui_sessions_key_id'), table_name='ui_sessions')
    op.drop_table('ui_sessions')
