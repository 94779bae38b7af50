"""Long-term user memory: the facts Parley keeps about a user across conversations, and a
conversation's switch for it.

- ``memories``: one row per fact of a tenant's user, with the message and conversation it
  was taken from (kept when that conversation is deleted; deleting the user deletes them).
  Retrieval's memory collection indexes them by the same id.
- ``conversations.memory_enabled``: whether the conversation's turns recall memories and
  add to them (on unless turned off).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memories",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("conversation_id", sa.String(40), nullable=False),
        sa.Column("source_message_id", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_memories_owner_created", "memories", ["tenant_id", "user_id", "created_at", "id"]
    )
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(
            sa.Column("memory_enabled", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("memory_enabled")
    op.drop_index("ix_memories_owner_created", table_name="memories")
    op.drop_table("memories")
