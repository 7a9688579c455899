"""Incremental listing: ingestion listing options, listing watermarks, run listing counters

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 22:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "listing_watermarks",
        sa.Column("ingestion_id", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("watermark", sa.Text(), nullable=True),
        sa.Column("last_full_listing_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["ingestion_id"], ["ingestions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("ingestion_id", "root"),
    )
    op.add_column("ingestions", sa.Column("listing", sa.String(length=20), server_default="full", nullable=False))
    op.add_column("ingestions", sa.Column("relist_lookback_seconds", sa.Integer(), nullable=True))
    op.add_column(
        "ingestions",
        sa.Column("full_listing_every_seconds", sa.Integer(), server_default="86400", nullable=False),
    )
    op.create_check_constraint("ck_ingestions_listing", "ingestions", "listing IN ('full', 'incremental')")
    op.add_column("runs", sa.Column("listing", sa.String(length=20), nullable=True))
    op.add_column("runs", sa.Column("list_requests", sa.Integer(), server_default="0", nullable=False))
    op.add_column("runs", sa.Column("files_missed_by_incremental", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("runs", "files_missed_by_incremental")
    op.drop_column("runs", "list_requests")
    op.drop_column("runs", "listing")
    op.drop_constraint("ck_ingestions_listing", "ingestions", type_="check")
    op.drop_column("ingestions", "full_listing_every_seconds")
    op.drop_column("ingestions", "relist_lookback_seconds")
    op.drop_column("ingestions", "listing")
    op.drop_table("listing_watermarks")
