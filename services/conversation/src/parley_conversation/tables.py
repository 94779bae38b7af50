"""conversation's tables: conversations, messages, feedback, rolling summaries, background
tasks and users' memories (the stores map them to the types of ``conversations.py`` and
``memory.py``; the migrations create them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """The metadata of conversation's own tables."""


class ConversationRow(Base):
    """A conversation of one tenant's user, with its settings."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(String(200), default="")
    model: Mapped[str] = mapped_column(String(100), default="")
    knowledge_base_id: Mapped[str] = mapped_column(String(200), default="")
    temperature: Mapped[float | None] = mapped_column(Float, nullable=True)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The title was taken from the first message (the client gave none): a title written
    # after the first answer may replace it.
    title_auto: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The answer being written, until when at the latest: a send meanwhile is refused
    # (conversation_busy), so two turns never interleave.
    active_answer_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    active_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Turns recall the user's memories and add to them (memory.py) unless turned off.
    memory_enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    __table_args__ = (
        Index("ix_conversations_owner_updated", "tenant_id", "user_id", "updated_at", "id"),
    )


class MessageRow(Base):
    """A message; ``role``, ``status`` and ``finish_reason`` hold the values of the enums of
    ``conversations.py``, ``citations`` their JSON objects."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("conversations.id", ondelete="CASCADE")
    )
    tenant_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    # Position in the conversation, from 1; orders messages and pages them.
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(200), default="")
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    finish_reason: Mapped[str] = mapped_column(String(32), default="")
    error_code: Mapped[str] = mapped_column(String(64), default="")
    citations: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    tool_activity: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # User messages sent with a key: the SHA-256 of their content and model override, so a
    # resend with the key and another body is refused (NULL on rows stored before it).
    request_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Assistant messages: the user message they answer.
    reply_to: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # Assistant messages replaced by a regenerated answer; kept, but not shown or sent.
    superseded: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Answers in progress: the replica writing it, and until when it has promised to be
    # alive (renewed as the answer streams); past that, any replica may close it.
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Answers in progress: a client asked to stop it; the writer sees it on its next save.
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Answers: the query their passages were searched with (a follow-up rewritten to stand
    # alone); empty without a knowledge base.
    search_query: Mapped[str] = mapped_column(Text, default="", server_default="")

    __table_args__ = (
        UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),
        UniqueConstraint(
            "conversation_id", "idempotency_key", name="uq_messages_conversation_idempotency"
        ),
        Index("ix_messages_owner", "tenant_id", "user_id"),
        Index("ix_messages_in_progress", "status", "lease_until"),
    )


class FeedbackRow(Base):
    """A user's rating of an assistant message."""

    __tablename__ = "feedback"

    message_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(128))
    rating: Mapped[str] = mapped_column(String(8))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SummaryRow(Base):
    """A conversation's rolling summary: what its messages ``first_seq`` to ``last_seq`` said
    (``messages`` of them), written through llm-router's ``model``."""

    __tablename__ = "conversation_summaries"

    conversation_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    content: Mapped[str] = mapped_column(Text)
    first_seq: Mapped[int] = mapped_column(Integer)
    last_seq: Mapped[int] = mapped_column(Integer)
    messages: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TaskRow(Base):
    """Work run after a turn (``background.py``): pending until due (``run_after``), running
    under a replica's lease, then deleted when done or kept ``failed`` with its last error.
    ``dedup_key`` keeps one unfinished task per subject (NULL once it has ended)."""

    __tablename__ = "background_tasks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    tenant_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    conversation_id: Mapped[str] = mapped_column(String(40))
    message_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    dedup_key: Mapped[str | None] = mapped_column(String(120), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("dedup_key", name="uq_background_tasks_dedup"),
        Index("ix_background_tasks_due", "state", "run_after"),
        Index("ix_background_tasks_conversation", "conversation_id"),
    )


class MemoryRow(Base):
    """A fact Parley keeps about a tenant's user (memory.py), with the message and
    conversation it was taken from; retrieval's memory collection indexes it by ``id``."""

    __tablename__ = "memories"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    content: Mapped[str] = mapped_column(Text)
    # No foreign key: a memory outlives the conversation it came from.
    conversation_id: Mapped[str] = mapped_column(String(40))
    source_message_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_memories_owner_created", "tenant_id", "user_id", "created_at", "id"),
    )
