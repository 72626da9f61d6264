"""Corpus versions and refresh requests

Revision ID: 0004_versions
Revises: 0003_community
Create Date: 2026-11-30 05:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_versions"
down_revision = "0003_community"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corpus_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("build", sa.String(length=120), nullable=False),
        sa.Column("translated_build", sa.String(length=120), nullable=True),
        sa.Column("corpus_version", sa.String(length=64), nullable=False),
        sa.Column("corpus_hash", sa.String(length=64), nullable=False),
        sa.Column("passages", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("figures", sa.Text(), nullable=False),
        sa.Column("changes", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("promoted_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("build"),
    )
    with op.batch_alter_table("corpus_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_corpus_versions_status"), ["status"], unique=False)
    op.create_table(
        "refresh_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("requested_by", sa.String(length=80), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("argument", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("offers", sa.Text(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("refresh_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_refresh_requests_status"), ["status"], unique=False)


def downgrade() -> None:
    op.drop_table("refresh_requests")
    op.drop_table("corpus_versions")
