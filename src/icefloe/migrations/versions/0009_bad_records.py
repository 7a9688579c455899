"""Bad records: ingestion on_bad_record / max_bad_records, records_rejected per file and per run

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 01:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "ingestions", sa.Column("on_bad_record", sa.String(length=20), server_default="fail-file", nullable=False)
    )
    op.add_column("ingestions", sa.Column("max_bad_records", sa.String(length=20), nullable=True))
    op.create_check_constraint(
        "ck_ingestions_on_bad_record", "ingestions", "on_bad_record IN ('fail-file', 'skip', 'quarantine')"
    )
    op.add_column("files", sa.Column("records_rejected", sa.BigInteger(), nullable=True))
    op.add_column("runs", sa.Column("records_rejected", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("runs", "records_rejected")
    op.drop_column("files", "records_rejected")
    op.drop_constraint("ck_ingestions_on_bad_record", "ingestions", type_="check")
    op.drop_column("ingestions", "max_bad_records")
    op.drop_column("ingestions", "on_bad_record")
