"""delivery lease token (fencing)

Revision ID: 0003
Revises: 0001

A delivery's lease carries a fresh token; the worker's final update only applies while the row
still holds its token, so a worker whose lease ran out cannot overwrite the next holder's result.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries') as batch:
        batch.add_column(sa.Column('lease_token', sa.Uuid(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deliveries') as batch:
        batch.drop_column('lease_token')
