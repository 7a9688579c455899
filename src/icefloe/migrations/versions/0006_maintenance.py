"""Table maintenance: ingestions.maintain_every_seconds and the maintenance due-time

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ingestions", sa.Column("maintain_every_seconds", sa.Integer(), nullable=True))
    op.add_column("ingestions", sa.Column("maintenance_due_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("ingestions", "maintenance_due_at")
    op.drop_column("ingestions", "maintain_every_seconds")
