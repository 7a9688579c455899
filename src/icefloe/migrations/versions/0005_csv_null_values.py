"""ingestions.csv_null_values: the CSV field texts read as NULL (NULL: only an empty unquoted field)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 21:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ingestions", sa.Column("csv_null_values", postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column("ingestions", "csv_null_values")
