"""Updates already taken, and build archives, for replicas

Revision ID: 0005_replicas
Revises: 0004_versions
Create Date: 2026-11-30 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_replicas"
down_revision = "0004_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seen_updates",
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("update_id", sa.String(length=40), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("platform", "update_id"),
    )
    op.create_index("ix_seen_updates_seen_at", "seen_updates", ["seen_at"])
    op.create_table(
        "build_artefacts",
        sa.Column("build", sa.String(length=120), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("archive", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("build"),
    )


def downgrade() -> None:
    op.drop_table("build_artefacts")
    op.drop_index("ix_seen_updates_seen_at", table_name="seen_updates")
    op.drop_table("seen_updates")
