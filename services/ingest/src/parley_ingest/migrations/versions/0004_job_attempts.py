"""Jobs count their attempts and wait for a retry; failures carry a documented code; a
document being deleted is marked first.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("error_code", sa.String(40), nullable=False, server_default=""))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("error_code", sa.String(40), nullable=False, server_default=""))
        batch.add_column(sa.Column("deleting_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("deleting_since")
        batch.drop_column("error_code")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("retry_at")
        batch.drop_column("attempts")
        batch.drop_column("error_code")
