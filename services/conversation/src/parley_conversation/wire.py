"""Translations between stored rows and the protobuf messages of the contract."""

from __future__ import annotations

from typing import Any

from parley.common.v1 import common_pb2
from parley.conversation.v1 import conversation_pb2 as pb
from parley_conversation.adapters.store import (
    ASSISTANT,
    CANCELLED,
    COMPLETE,
    FAILED,
    IN_PROGRESS,
)
from parley_conversation.models import ConversationRow, FeedbackRow, MessageRow
from parley_conversation.prompt import CitedPassage
from parley_runtime.timestamps import to_timestamp

STATUS = {
    IN_PROGRESS: pb.MESSAGE_STATUS_IN_PROGRESS,
    COMPLETE: pb.MESSAGE_STATUS_COMPLETE,
    CANCELLED: pb.MESSAGE_STATUS_CANCELLED,
    FAILED: pb.MESSAGE_STATUS_FAILED,
}
RATING = {"up": pb.RATING_UP, "down": pb.RATING_DOWN}
SNIPPET_CHARS = 300


def conversation(row: ConversationRow) -> pb.Conversation:
    settings = pb.ConversationSettings(model=row.model, knowledge_base_id=row.knowledge_base_id)
    if row.temperature is not None:
        settings.temperature = row.temperature
    return pb.Conversation(
        id=row.id,
        title=row.title,
        settings=settings,
        create_time=to_timestamp(row.created_at),
        update_time=to_timestamp(row.updated_at),
        message_count=row.message_count,
    )


def citation_dict(item: CitedPassage) -> dict[str, Any]:
    p = item.passage
    return {
        "marker": item.marker,
        "document_id": p.document_id,
        "chunk_id": p.chunk_id,
        "title": p.title,
        "source_uri": p.source_uri,
        "snippet": p.text[:SNIPPET_CHARS],
        "score": p.score,
    }


def citation(data: dict[str, Any]) -> common_pb2.Citation:
    return common_pb2.Citation(**data)


def message(row: MessageRow) -> pb.Message:
    out = pb.Message(
        id=row.id,
        conversation_id=row.conversation_id,
        role=pb.MESSAGE_ROLE_ASSISTANT if row.role == ASSISTANT else pb.MESSAGE_ROLE_USER,
        content=row.content,
        status=STATUS.get(row.status, pb.MESSAGE_STATUS_UNSPECIFIED),
        model=row.model,
        finish_reason=row.finish_reason,
        error_code=row.error_code,
        create_time=to_timestamp(row.created_at),
        idempotency_key=row.idempotency_key or "",
        citations=[citation(c) for c in row.citations or []],
    )
    if row.role == ASSISTANT:
        out.usage.CopyFrom(
            common_pb2.Usage(
                input_tokens=row.input_tokens,
                output_tokens=row.output_tokens,
                cost_usd=row.cost_usd,
                estimated=row.usage_estimated,
            )
        )
    return out


def feedback(row: FeedbackRow) -> pb.Feedback:
    return pb.Feedback(
        message_id=row.message_id,
        rating=RATING.get(row.rating, pb.RATING_UNSPECIFIED),
        comment=row.comment,
        create_time=to_timestamp(row.created_at),
    )
