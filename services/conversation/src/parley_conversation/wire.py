"""Translations between the service's types and the protobuf messages of its contracts: its
own (conversation), llm-router's and retrieval's. The only module that knows both sides."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence

from parley.common.v1 import common_pb2
from parley.conversation.v1 import conversation_pb2 as pb
from parley.llm_router.v1 import llm_router_pb2 as llm
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley_conversation.context import DEFAULT_LIMITS
from parley_conversation.conversations import (
    Citation,
    Conversation,
    Feedback,
    FinishReason,
    Message,
    ModelAliases,
    ModelLimits,
    Passage,
    Rating,
    Role,
    Status,
    ToolActivity,
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
    ToolCallDelta,
    ToolResult,
    TurnEvent,
    UsageReport,
)
from parley_conversation.memory import Memory
from parley_conversation.prompt import (
    Prompt,
    ToolExchange,
    tool_call_arguments,
    tool_result_text,
)
from parley_conversation.tools import ToolSpec
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
    settings = pb.ConversationSettings(
        model=item.model,
        knowledge_base_id=item.knowledge_base_id,
        memory_enabled=item.memory_enabled,
    )
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


def memory(item: Memory) -> pb.Memory:
    return pb.Memory(
        id=item.id,
        content=item.content,
        source_message_id=item.source_message_id,
        conversation_id=item.conversation_id,
        create_time=to_timestamp(item.created_at),
        update_time=to_timestamp(item.updated_at or item.created_at),
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
        search_query=item.search_query,
        citations=[citation(c) for c in item.citations],
        tool_activity=[tool_activity(t) for t in item.tool_activity],
    )
    if item.role == Role.ASSISTANT:
        out.usage.CopyFrom(usage(item.usage))
    return out


def tool_activity(item: ToolActivity) -> pb.ToolActivity:
    return pb.ToolActivity(
        call_id=item.call_id,
        name=item.name,
        arguments_json=item.arguments_json,
        result=item.result,
        is_error=item.is_error,
        error_code=item.error_code,
        step=item.step,
    )


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


async def turn_events(
    events: AsyncIterator[TurnEvent], usage_with_done: bool
) -> AsyncGenerator[pb.TurnEvent, None]:
    """A turn's ``events`` as its stream's messages; with ``usage_with_done`` its usage rides
    in the ``done`` that follows it (``TurnDone.usage``), not in a message of its own."""
    held: UsageReport | None = None
    async for event in events:
        if usage_with_done and isinstance(event, UsageReport):
            held = event
            continue
        if held is not None:
            if isinstance(event, Done):
                done = pb.TurnDone(message=message(event.message), usage=usage(held.usage))
                held = None
                yield pb.TurnEvent(done=done)
                continue
            yield turn_event(held)  # not followed by its done: it goes alone, as it came
            held = None
        yield turn_event(event)


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
    if isinstance(event, ToolResult):
        return pb.TurnEvent(
            tool_result=pb.ToolResultEvent(
                call_id=event.call_id,
                name=event.name,
                result=event.result,
                is_error=event.is_error,
                error_code=event.error_code,
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


def chat_messages(messages: Iterable[tuple[Role, str]]) -> list[llm.ChatMessage]:
    return [
        llm.ChatMessage(role=_ROUTER_ROLE[role], content=[llm.ContentPart(text=text)])
        for role, text in messages
    ]


def chat_request(
    prompt: Prompt, model: str, temperature: float | None, max_tokens: int | None = None
) -> llm.ChatRequest:
    """The router request of a turn: the prompt's messages (the documents block among them),
    the model alias, the conversation's temperature and the answer's reservation."""
    request = llm.ChatRequest(model=model, messages=chat_messages(prompt.messages))
    if temperature is not None:
        request.temperature = temperature
    if max_tokens is not None:
        request.max_tokens = max_tokens
    return request


def add_tools(
    request: llm.ChatRequest, tools: Iterable[ToolSpec], steps: Iterable[ToolExchange]
) -> llm.ChatRequest:
    """``request`` with the tools the model may call, and after its messages the tool steps
    so far: per step, the assistant's message with its calls, then one tool message per call
    with its delimited result (``prompt.tool_result_text``)."""
    request.tools.extend(
        llm.Tool(name=t.name, description=t.description, parameters_json=t.parameters_json)
        for t in tools
    )
    for step in steps:
        said = llm.ChatMessage(
            role=llm.ROLE_ASSISTANT,
            tool_calls=[
                llm.ToolCall(id=c.call_id, name=c.name, arguments_json=tool_call_arguments(c))
                for c in step.calls
            ],
        )
        if step.text:
            said.content.add(text=step.text)
        request.messages.append(said)
        request.messages.extend(
            llm.ChatMessage(
                role=llm.ROLE_TOOL,
                tool_call_id=c.call_id,
                name=c.name,
                content=[llm.ContentPart(text=tool_result_text(c))],
            )
            for c in step.calls
        )
    return request


def completion_request(
    messages: Iterable[tuple[Role, str]],
    model: str,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> llm.ChatRequest:
    """A one-shot request for Parley's own use (a summary, a title, a standalone query, the
    facts of a turn to remember)."""
    request = llm.ChatRequest(model=model, messages=chat_messages(messages))
    if max_tokens is not None:
        request.max_tokens = max_tokens
    if temperature is not None:
        request.temperature = temperature
    return request


def count_tokens_request(prompt: Prompt, model: str) -> llm.CountTokensRequest:
    return llm.CountTokensRequest(model=model, messages=chat_messages(prompt.messages))


def answer_text(response: llm.ChatResponse) -> str:
    """The text of a one-shot answer."""
    return "".join(part.text for part in response.message.content if part.HasField("text"))


def model_aliases(found: llm.ListModelsResponse) -> ModelAliases:
    return ModelAliases(
        frozenset(m.alias for m in found.models),
        found.default_model,
        {
            m.alias: ModelLimits(
                context_window=m.context_window or DEFAULT_LIMITS.context_window,
                max_output_tokens=m.max_output_tokens or DEFAULT_LIMITS.max_output_tokens,
                local=m.local,
            )
            for m in found.models
        },
    )


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
        return ToolCallDelta(d.index, d.id, d.name, d.arguments_delta)
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


def index_memories_request(memories: Sequence[Memory]) -> ret.IndexMemoriesRequest:
    return ret.IndexMemoriesRequest(
        memories=[ret.MemoryEntry(memory_id=m.id, text=m.content) for m in memories]
    )


def search_memories_request(
    query: str, top_k: int, min_score: float | None
) -> ret.SearchMemoriesRequest:
    request = ret.SearchMemoriesRequest(query=query, top_k=top_k)
    if min_score is not None:
        request.score_threshold = min_score
    return request
