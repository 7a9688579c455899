"""Ingestion format `json`: one JSON document per file (an array of objects, or one object)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("ck_ingestions_format", "ingestions", type_="check")
    op.create_check_constraint("ck_ingestions_format", "ingestions", "format IN ('csv', 'jsonl', 'json', 'parquet')")


def downgrade() -> None:
    op.drop_constraint("ck_ingestions_format", "ingestions", type_="check")
    op.create_check_constraint("ck_ingestions_format", "ingestions", "format IN ('csv', 'jsonl', 'parquet')")
