"""The kind of chat a delivery report goes to, so that one in a Discord DM can be sent

Revision ID: 0008_report_kind
Revises: 0007_question_language
Create Date: 2026-11-30 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_report_kind"
down_revision = "0007_question_language"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("updates", sa.Column("report_kind", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("updates") as batch:
        batch.drop_column("report_kind")
