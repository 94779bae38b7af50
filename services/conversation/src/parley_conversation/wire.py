"""Translations between the service's types and the protobuf messages of its contracts: its
own (conversation), llm-router's and retrieval's. The only module that knows both sides."""

from __future__ import annotations

from parley.common.v1 import common_pb2
from parley.conversation.v1 import conversation_pb2 as pb
from parley.llm_router.v1 import llm_router_pb2 as llm
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley_conversation.conversations import (
    Citation,
    Conversation,
    Feedback,
    FinishReason,
    Message,
    ModelAliases,
    Passage,
    Rating,
    Role,
    Status,
    Usage,
)
from parley_conversation.events import (
    Accepted,
    CitationsFound,
    Done,
    Failure,
    ModelEvent,
    ModelFailed,
    ModelFinished,
    ModelStarted,
    TextDelta,
    ToolCall,
    TurnEvent,
    UsageReport,
)
from parley_conversation.prompt import Prompt
from parley_runtime.timestamps import to_timestamp

_ROLE = {Role.USER: pb.MESSAGE_ROLE_USER, Role.ASSISTANT: pb.MESSAGE_ROLE_ASSISTANT}
_STATUS = {
    Status.IN_PROGRESS: pb.MESSAGE_STATUS_IN_PROGRESS,
    Status.COMPLETE: pb.MESSAGE_STATUS_COMPLETE,
    Status.CANCELLED: pb.MESSAGE_STATUS_CANCELLED,
    Status.FAILED: pb.MESSAGE_STATUS_FAILED,
}
_FINISH_REASON = {
    FinishReason.STOP: common_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: common_pb2.FINISH_REASON_LENGTH,
    FinishReason.TOOL_CALLS: common_pb2.FINISH_REASON_TOOL_CALLS,
    FinishReason.CONTENT_FILTER: common_pb2.FINISH_REASON_CONTENT_FILTER,
    FinishReason.ERROR: common_pb2.FINISH_REASON_ERROR,
    FinishReason.CANCELLED: common_pb2.FINISH_REASON_CANCELLED,
}
_FINISH_REASON_OF = {value: reason for reason, value in _FINISH_REASON.items()}
_RATING = {Rating.UP: pb.RATING_UP, Rating.DOWN: pb.RATING_DOWN}
_RATING_OF = {value: rating for rating, value in _RATING.items()}
_ROUTER_ROLE = {
    Role.SYSTEM: llm.ROLE_SYSTEM,
    Role.USER: llm.ROLE_USER,
    Role.ASSISTANT: llm.ROLE_ASSISTANT,
}


# conversation's own contract


def conversation(item: Conversation) -> pb.Conversation:
    settings = pb.ConversationSettings(model=item.model, knowledge_base_id=item.knowledge_base_id)
    if item.temperature is not None:
        settings.temperature = item.temperature
    return pb.Conversation(
        id=item.id,
        title=item.title,
        settings=settings,
        create_time=to_timestamp(item.created_at),
        update_time=to_timestamp(item.updated_at),
        message_count=item.message_count,
    )


def usage(item: Usage) -> common_pb2.Usage:
    return common_pb2.Usage(
        input_tokens=item.input_tokens,
        output_tokens=item.output_tokens,
        cost_usd=item.cost_usd,
        estimated=item.estimated,
    )


def citation(item: Citation) -> common_pb2.Citation:
    return common_pb2.Citation(
        marker=item.marker,
        document_id=item.document_id,
        chunk_id=item.chunk_id,
        title=item.title,
        source_uri=item.source_uri,
        snippet=item.snippet,
        score=item.score,
        page=item.page,
    )


def message(item: Message) -> pb.Message:
    out = pb.Message(
        id=item.id,
        conversation_id=item.conversation_id,
        role=_ROLE.get(item.role, pb.MESSAGE_ROLE_UNSPECIFIED),
        content=item.content,
        status=_STATUS[item.status],
        model=item.model,
        finish_reason=(
            _FINISH_REASON[item.finish_reason]
            if item.finish_reason is not None
            else common_pb2.FINISH_REASON_UNSPECIFIED
        ),
        error_code=item.error_code,
        create_time=to_timestamp(item.created_at),
        idempotency_key=item.idempotency_key or "",
        citations=[citation(c) for c in item.citations],
    )
    if item.role == Role.ASSISTANT:
        out.usage.CopyFrom(usage(item.usage))
    return out


def feedback(item: Feedback) -> pb.Feedback:
    return pb.Feedback(
        message_id=item.message_id,
        rating=_RATING[item.rating],
        comment=item.comment,
        create_time=to_timestamp(item.created_at),
    )


def rating(value: pb.Rating.ValueType) -> Rating | None:
    """The rating a request names; None for RATING_UNSPECIFIED or an unknown value."""
    return _RATING_OF.get(value)


def turn_event(event: TurnEvent) -> pb.TurnEvent:
    # Deltas first: nearly every event of a turn is one.
    if isinstance(event, TextDelta):
        return pb.TurnEvent(delta=pb.TextDelta(text=event.text))
    if isinstance(event, ToolCall):
        return pb.TurnEvent(
            tool_call=pb.ToolCallEvent(
                call_id=event.call_id, name=event.name, arguments_json=event.arguments_json
            )
        )
    if isinstance(event, Accepted):
        return pb.TurnEvent(
            accepted=pb.MessageAccepted(
                user_message_id=event.user_message_id,
                assistant_message_id=event.assistant_message_id,
                replayed=event.replayed,
            )
        )
    if isinstance(event, CitationsFound):
        return pb.TurnEvent(
            citations=pb.CitationsEvent(citations=[citation(c) for c in event.citations])
        )
    if isinstance(event, UsageReport):
        return pb.TurnEvent(usage=pb.UsageEvent(usage=usage(event.usage)))
    if isinstance(event, Done):
        return pb.TurnEvent(done=pb.TurnDone(message=message(event.message)))
    # What is left is TurnFailed.
    return pb.TurnEvent(
        error=pb.TurnError(
            error=common_pb2.StreamError(
                code=event.failure.code,
                message=event.failure.message,
                retryable=event.failure.retryable,
            ),
            assistant_message_id=event.assistant_message_id,
        )
    )


# llm-router


def chat_request(prompt: Prompt, model: str, temperature: float | None) -> llm.ChatRequest:
    """The router request of a turn: the prompt's messages (the documents block among them),
    the model alias and the conversation's temperature."""
    request = llm.ChatRequest(
        model=model,
        messages=[
            llm.ChatMessage(role=_ROUTER_ROLE[role], content=[llm.ContentPart(text=text)])
            for role, text in prompt.messages
        ],
    )
    if temperature is not None:
        request.temperature = temperature
    return request


def model_aliases(found: llm.ListModelsResponse) -> ModelAliases:
    return ModelAliases(frozenset(m.alias for m in found.models), found.default_model)


def _usage_of(item: common_pb2.Usage, estimated: bool | None = None) -> Usage:
    return Usage(
        input_tokens=item.input_tokens,
        output_tokens=item.output_tokens,
        cost_usd=item.cost_usd,
        estimated=item.estimated if estimated is None else estimated,
    )


def model_started(event: llm.ChatEvent) -> ModelStarted | None:
    """Who answers, when ``event`` is the first of its stream."""
    if not event.HasField("start"):
        return None
    return ModelStarted(f"{event.start.provider}/{event.start.model}")


def model_event(event: llm.ChatEvent) -> ModelEvent | None:
    """The content of a router event; None when it carries none."""
    kind = event.WhichOneof("event")
    if kind == "text_delta":
        return TextDelta(event.text_delta)
    if kind == "tool_call_delta":
        d = event.tool_call_delta
        return ToolCall(d.id, d.name, d.arguments_delta)
    if kind == "finish":
        reason = _FINISH_REASON_OF.get(event.finish.finish_reason, FinishReason.STOP)
        return ModelFinished(reason, _usage_of(event.finish.usage))
    if kind == "error":
        failure = event.error.error
        return ModelFailed(
            Failure(failure.code, failure.message, failure.retryable),
            # Usage cut short by a failure is the router's estimate.
            _usage_of(event.error.partial_usage, estimated=True),
        )
    return None


# retrieval


def search_request(knowledge_base_id: str, query: str, top_k: int) -> ret.SearchRequest:
    return ret.SearchRequest(knowledge_base_id=knowledge_base_id, query=query, top_k=top_k)


def passage(chunk: ret.ScoredChunk) -> Passage:
    return Passage(
        document_id=chunk.document_id,
        chunk_id=chunk.chunk_id,
        title=chunk.title,
        source_uri=chunk.source_uri,
        text=chunk.text,
        score=chunk.score,
        page=_page(chunk.metadata.get("page", "")),
    )


def _page(value: str) -> int:
    """The page ingest put in a chunk's metadata (a PDF's), or 0."""
    return int(value) if value.isascii() and value.isdigit() else 0
