"""Event-driven discovery (SQS) and source clean-up: ingestion options, run and file columns

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 01:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ingestions", sa.Column("discovery", sa.String(length=20), server_default="listing", nullable=False))
    op.add_column("ingestions", sa.Column("events_queue", sa.Text(), nullable=True))
    op.add_column(
        "ingestions", sa.Column("reconcile_every_seconds", sa.Integer(), server_default="86400", nullable=False)
    )
    op.add_column("ingestions", sa.Column("after_ingest", sa.Text(), server_default="keep", nullable=False))
    op.add_column(
        "ingestions", sa.Column("after_ingest_delay_seconds", sa.Integer(), server_default="604800", nullable=False)
    )
    op.add_column("ingestions", sa.Column("cleanup_due_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint("ck_ingestions_discovery", "ingestions", "discovery IN ('listing', 'events')")
    op.add_column("runs", sa.Column("discovery", sa.String(length=20), nullable=True))
    op.add_column("runs", sa.Column("event_messages", sa.Integer(), server_default="0", nullable=False))
    op.add_column("runs", sa.Column("files_missed_by_events", sa.Integer(), server_default="0", nullable=False))
    op.add_column("files", sa.Column("event_sequencer", sa.Text(), nullable=True))
    op.add_column("files", sa.Column("cleanup_status", sa.String(length=20), nullable=True))
    op.add_column("files", sa.Column("cleanup_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("files", sa.Column("cleanup_error", sa.Text(), nullable=True))
    op.create_check_constraint("ck_files_cleanup_status", "files", "cleanup_status IN ('DONE', 'FAILED')")
    # The clean-up candidates: SUCCESS files not cleaned yet, oldest first.
    op.create_index(
        "ix_files_cleanup",
        "files",
        ["ingestion_id", "processed_at"],
        postgresql_where=sa.text("status = 'SUCCESS' AND cleanup_status IS DISTINCT FROM 'DONE'"),
    )


def downgrade() -> None:
    op.drop_index("ix_files_cleanup", table_name="files")
    op.drop_constraint("ck_files_cleanup_status", "files", type_="check")
    for column in ("cleanup_error", "cleanup_at", "cleanup_status", "event_sequencer"):
        op.drop_column("files", column)
    for column in ("files_missed_by_events", "event_messages", "discovery"):
        op.drop_column("runs", column)
    op.drop_constraint("ck_ingestions_discovery", "ingestions", type_="check")
    for column in (
        "cleanup_due_at",
        "after_ingest_delay_seconds",
        "after_ingest",
        "reconcile_every_seconds",
        "events_queue",
        "discovery",
    ):
        op.drop_column("ingestions", column)
