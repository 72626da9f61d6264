"""The language a question was answered in, so that More and Sources continue that answer

Revision ID: 0007_question_language
Revises: 0006_question_sentinel
Create Date: 2026-11-30 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_question_language"
down_revision = "0006_question_sentinel"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("questions", sa.Column("language", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("questions") as batch:
        batch.drop_column("language")
