"""Usage rows count requests: one row stands for a key's requests within one flush.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written before this revision are one request each.
    op.add_column(
        "usage_records",
        sa.Column("requests", sa.Integer(), nullable=False, server_default="1"),
    )


def downgrade() -> None:
    # A summed row cannot be split back into requests: the count is dropped with the column.
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("requests")
