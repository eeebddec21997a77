"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-26 00:47:49.696667

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('tenants',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('webhook_secret', sa.String(length=120), nullable=False),
    sa.Column('callback_url', sa.String(length=2048), nullable=True),
    sa.Column('allowed_buckets', sa.JSON(), nullable=False),
    sa.Column('active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenants')),
    sa.UniqueConstraint('name', name=op.f('uq_tenants_name'))
    )
    op.create_table('training_jobs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.Enum('queued', 'running', 'succeeded', 'failed', name='job_status', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('trigger', sa.String(length=32), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('step', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('total_steps', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('epoch', sa.Float(), server_default=sa.text('0'), nullable=False),
    sa.Column('latest_loss', sa.Float(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('log', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.Column('checkpoint_uri', sa.String(length=2048), nullable=True),
    sa.Column('report_uri', sa.String(length=2048), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_jobs'))
    )
    op.create_index('ix_training_jobs_status_created', 'training_jobs', ['status', 'created_at'], unique=False)
    op.create_table('adapters',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('base_model', sa.String(length=300), nullable=False),
    sa.Column('uri', sa.String(length=2048), nullable=False),
    sa.Column('status', sa.Enum('candidate', 'active', 'retired', name='adapter_status', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('training_job_id', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['training_job_id'], ['training_jobs.id'], name=op.f('fk_adapters_training_job_id_training_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adapters')),
    sa.UniqueConstraint('version', name=op.f('uq_adapters_version'))
    )
    op.create_index('uq_adapters_one_active_per_base', 'adapters', ['base_model'], unique=True, postgresql_where=sa.text("status = 'active'"), sqlite_where=sa.text("status = 'active'"))
    op.create_table('annotation_batches',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('uri', sa.String(length=2048), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.Enum('registered', 'accepted', 'partial', 'rejected', name='batch_status', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('n_items', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('n_accepted', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('n_quarantined', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('problems', sa.JSON(), nullable=False),
    sa.Column('used_by_job_id', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('validated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['used_by_job_id'], ['training_jobs.id'], name=op.f('fk_annotation_batches_used_by_job_id_training_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_annotation_batches')),
    sa.UniqueConstraint('uri', name=op.f('uq_annotation_batches_uri'))
    )
    op.create_table('api_keys',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=True),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('role', sa.Enum('lms', 'teacher', 'ops', name='role', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('courses', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_api_keys_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash'))
    )
    op.create_index(op.f('ix_api_keys_tenant_id'), 'api_keys', ['tenant_id'], unique=False)
    op.create_table('submissions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('lms_submission_id', sa.String(length=200), nullable=False),
    sa.Column('webhook_id', sa.String(length=200), nullable=True),
    sa.Column('learner_id', sa.String(length=200), nullable=False),
    sa.Column('course_id', sa.String(length=200), nullable=False),
    sa.Column('assignment_id', sa.String(length=200), nullable=True),
    sa.Column('reference_text', sa.Text(), nullable=False),
    sa.Column('reference_phones', sa.JSON(), nullable=True),
    sa.Column('audio_uri', sa.String(length=2048), nullable=False),
    sa.Column('granularity', sa.String(length=32), nullable=False),
    sa.Column('callback_url', sa.String(length=2048), nullable=True),
    sa.Column('status', sa.Enum('queued', 'running', 'scored', 'failed', name='submission_status', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('model_ms', sa.Float(), nullable=True),
    sa.Column('adapter_version', sa.String(length=64), nullable=True),
    sa.Column('model_name', sa.String(length=300), nullable=True),
    sa.Column('raw_output', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_submissions_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_submissions')),
    sa.UniqueConstraint('tenant_id', 'lms_submission_id', name=op.f('uq_submissions_tenant_id_lms_submission_id')),
    sa.UniqueConstraint('tenant_id', 'webhook_id', name=op.f('uq_submissions_tenant_id_webhook_id'))
    )
    op.create_index('ix_submissions_course_recent', 'submissions', ['tenant_id', 'course_id', 'created_at'], unique=False)
    op.create_index('ix_submissions_learner_history', 'submissions', ['tenant_id', 'learner_id', 'created_at'], unique=False)
    op.create_index('ix_submissions_status_age', 'submissions', ['status', 'updated_at'], unique=False)
    op.create_table('deliveries',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('submission_id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'delivered', 'failed', name='delivery_status', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_deliveries_submission_id_submissions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_deliveries_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries'))
    )
    op.create_index('ix_deliveries_due', 'deliveries', ['status', 'next_attempt_at'], unique=False)
    op.create_index(op.f('ix_deliveries_submission_id'), 'deliveries', ['submission_id'], unique=False)
    op.create_table('sentence_scores',
    sa.Column('submission_id', sa.Uuid(), nullable=False),
    sa.Column('accuracy', sa.SmallInteger(), nullable=True),
    sa.Column('accuracy_expected', sa.Float(), nullable=True),
    sa.Column('fluency', sa.SmallInteger(), nullable=True),
    sa.Column('fluency_expected', sa.Float(), nullable=True),
    sa.Column('prosody', sa.SmallInteger(), nullable=True),
    sa.Column('prosody_expected', sa.Float(), nullable=True),
    sa.Column('completeness', sa.SmallInteger(), nullable=True),
    sa.Column('completeness_expected', sa.Float(), nullable=True),
    sa.Column('total', sa.SmallInteger(), nullable=True),
    sa.Column('total_expected', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_sentence_scores_submission_id_submissions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('submission_id', name=op.f('pk_sentence_scores'))
    )
    op.create_table('word_scores',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('submission_id', sa.Uuid(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('text', sa.String(length=100), nullable=False),
    sa.Column('accuracy', sa.SmallInteger(), nullable=True),
    sa.Column('accuracy_expected', sa.Float(), nullable=True),
    sa.Column('stress', sa.SmallInteger(), nullable=True),
    sa.Column('stress_expected', sa.Float(), nullable=True),
    sa.Column('total', sa.SmallInteger(), nullable=True),
    sa.Column('total_expected', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_word_scores_submission_id_submissions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_word_scores')),
    sa.UniqueConstraint('submission_id', 'position', name=op.f('uq_word_scores_submission_id_position'))
    )
    op.create_table('phone_scores',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('word_score_id', sa.Integer(), nullable=False),
    sa.Column('submission_id', sa.Uuid(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('phone', sa.String(length=8), nullable=False),
    sa.Column('accuracy', sa.SmallInteger(), nullable=False),
    sa.Column('accuracy_expected', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_phone_scores_submission_id_submissions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['word_score_id'], ['word_scores.id'], name=op.f('fk_phone_scores_word_score_id_word_scores'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_phone_scores')),
    sa.UniqueConstraint('word_score_id', 'position', name=op.f('uq_phone_scores_word_score_id_position'))
    )
    op.create_index(op.f('ix_phone_scores_submission_id'), 'phone_scores', ['submission_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f('ix_phone_scores_submission_id'), table_name='phone_scores')
    op.drop_table('phone_scores')
    op.drop_table('word_scores')
    op.drop_table('sentence_scores')
    op.drop_index(op.f('ix_deliveries_submission_id'), table_name='deliveries')
    op.drop_index('ix_deliveries_due', table_name='deliveries')
    op.drop_table('deliveries')
    op.drop_index('ix_submissions_status_age', table_name='submissions')
    op.drop_index('ix_submissions_learner_history', table_name='submissions')
    op.drop_index('ix_submissions_course_recent', table_name='submissions')
    op.drop_table('submissions')
    op.drop_index(op.f('ix_api_keys_tenant_id'), table_name='api_keys')
    op.drop_table('api_keys')
    op.drop_table('annotation_batches')
    op.drop_index('uq_adapters_one_active_per_base', table_name='adapters', postgresql_where=sa.text("status = 'active'"), sqlite_where=sa.text("status = 'active'"))
    op.drop_table('adapters')
    op.drop_index('ix_training_jobs_status_created', table_name='training_jobs')
    op.drop_table('training_jobs')
    op.drop_table('tenants')
