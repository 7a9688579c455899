"""Schema evolution: ingestions.schema_evolution, timestamp/date formats, the HELD status, schema_changes

Revision ID: 0008_schema_evolve
Revises: 0007
Create Date: 2026-12-02 01:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008_schema_evolve"
down_revision = "0007"
branch_labels = None
depends_on = None

_OLD_STATUSES = "status IN ('DISCOVERED', 'PROCESSING', 'SUCCESS', 'FAILED', 'SKIPPED')"
_NEW_STATUSES = "status IN ('DISCOVERED', 'PROCESSING', 'SUCCESS', 'FAILED', 'SKIPPED', 'HELD')"


def upgrade() -> None:
    op.add_column(
        "ingestions",
        sa.Column("schema_evolution", sa.String(length=20), server_default="add-columns", nullable=False),
    )
    op.add_column("ingestions", sa.Column("timestamp_formats", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("ingestions", sa.Column("date_formats", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.create_check_constraint(
        "ck_ingestions_schema_evolution",
        "ingestions",
        "schema_evolution IN ('add-columns', 'approve', 'rescue', 'fail')",
    )
    op.drop_constraint("ck_files_status", "files", type_="check")
    op.create_check_constraint("ck_files_status", "files", _NEW_STATUSES)
    op.create_table(
        "schema_changes",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("ingestion_id", sa.BigInteger(), nullable=False),
        sa.Column("table_identifier", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("change", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("first_file", sa.Text(), nullable=True),
        sa.Column("detected_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("schema_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "status IN ('PENDING', 'APPROVED', 'REJECTED', 'APPLIED', 'CREATED')", name="ck_schema_changes_status"
        ),
        sa.ForeignKeyConstraint(["ingestion_id"], ["ingestions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_schema_changes_pending",
        "schema_changes",
        ["ingestion_id", "fingerprint"],
        unique=True,
        postgresql_where=sa.text("status = 'PENDING'"),
    )
    op.create_index("ix_schema_changes_ingestion", "schema_changes", ["ingestion_id", "id"])
    op.add_column("files", sa.Column("schema_change_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        "fk_files_schema_change", "files", "schema_changes", ["schema_change_id"], ["id"], ondelete="SET NULL"
    )
    op.create_index("ix_files_held", "files", ["schema_change_id"], postgresql_where=sa.text("status = 'HELD'"))


def downgrade() -> None:
    op.drop_index("ix_files_held", table_name="files")
    op.drop_constraint("fk_files_schema_change", "files", type_="foreignkey")
    op.drop_column("files", "schema_change_id")
    op.drop_index("ix_schema_changes_ingestion", table_name="schema_changes")
    op.drop_index("uq_schema_changes_pending", table_name="schema_changes")
    op.drop_table("schema_changes")
    op.execute("UPDATE files SET status = 'DISCOVERED' WHERE status = 'HELD'")
    op.drop_constraint("ck_files_status", "files", type_="check")
    op.create_check_constraint("ck_files_status", "files", _OLD_STATUSES)
    op.drop_constraint("ck_ingestions_schema_evolution", "ingestions", type_="check")
    op.drop_column("ingestions", "date_formats")
    op.drop_column("ingestions", "timestamp_formats")
    op.drop_column("ingestions", "schema_evolution")
