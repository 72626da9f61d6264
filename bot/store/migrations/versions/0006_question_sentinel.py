"""A sentinel column on questions, so that a batch of them is inserted in one statement

Revision ID: 0006_question_sentinel
Revises: 0005_replicas
Create Date: 2026-11-30 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_question_sentinel"
down_revision = "0005_replicas"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("questions", sa.Column("_sentinel", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("questions") as batch:
        batch.drop_column("_sentinel")
