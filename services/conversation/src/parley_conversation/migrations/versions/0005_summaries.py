"""Rolling summaries, background tasks, the search query of an answer, and the fields that
serialise a conversation's turns and tell a title Parley chose from the client's.

- ``conversation_summaries``: one rolling summary per conversation, with the range of
  messages it covers (``first_seq`` to ``last_seq``).
- ``background_tasks``: durable work run after a turn (summary, title, memory), claimed by
  any replica under a lease, retried with backoff.
- ``conversations.active_answer_id`` / ``active_until``: the answer being written, so a second
  send is refused while one streams (a conditional update, on SQLite and PostgreSQL alike).
- ``conversations.title_auto``: the title was taken from the first message, not given.
- ``messages.search_query``: answers, the query their passages were searched with.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(
            sa.Column("title_auto", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("active_answer_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("active_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("search_query", sa.Text(), nullable=False, server_default=""))
    op.create_table(
        "conversation_summaries",
        sa.Column(
            "conversation_id",
            sa.String(40),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "background_tasks",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("conversation_id", sa.String(40), nullable=False),
        sa.Column("message_id", sa.String(40), nullable=True),
        sa.Column("dedup_key", sa.String(120), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("run_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("dedup_key", name="uq_background_tasks_dedup"),
    )
    op.create_index("ix_background_tasks_due", "background_tasks", ["state", "run_after"])
    op.create_index("ix_background_tasks_conversation", "background_tasks", ["conversation_id"])


def downgrade() -> None:
    op.drop_index("ix_background_tasks_conversation", table_name="background_tasks")
    op.drop_index("ix_background_tasks_due", table_name="background_tasks")
    op.drop_table("background_tasks")
    op.drop_table("conversation_summaries")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("search_query")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("active_until")
        batch.drop_column("active_answer_id")
        batch.drop_column("title_auto")
