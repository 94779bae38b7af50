"""The LlmRouter protobuf messages to the router's own types and back: the only module that
knows both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime

from parley.common.v1 import common_pb2
from parley.llm_router.v1 import llm_router_pb2 as pb
from parley_llm_router.dispatch import Failed, RouterEvent, Started
from parley_llm_router.embeddings import Embedded
from parley_llm_router.ledger import UsageTotal
from parley_llm_router.messages import (
    ChatRequest,
    Finish,
    FinishReason,
    Message,
    Part,
    Role,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from parley_llm_router.routing import RouteTable
from parley_runtime.errors import InvalidArgument

_ROLES = {
    pb.ROLE_SYSTEM: Role.SYSTEM,
    pb.ROLE_USER: Role.USER,
    pb.ROLE_ASSISTANT: Role.ASSISTANT,
    pb.ROLE_TOOL: Role.TOOL,
}
_FINISH = {
    FinishReason.STOP: common_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: common_pb2.FINISH_REASON_LENGTH,
    FinishReason.TOOL_CALLS: common_pb2.FINISH_REASON_TOOL_CALLS,
    FinishReason.CONTENT_FILTER: common_pb2.FINISH_REASON_CONTENT_FILTER,
    FinishReason.ERROR: common_pb2.FINISH_REASON_ERROR,
    FinishReason.CANCELLED: common_pb2.FINISH_REASON_CANCELLED,
}
_CACHE_MODE = {pb.CACHE_MODE_BYPASS: "bypass", pb.CACHE_MODE_PREFER: "prefer"}


# Requests


def message(index: int, message: pb.ChatMessage) -> Message:
    """``messages[index]`` of a request; INVALID_ARGUMENT for a role it cannot have."""
    role = _ROLES.get(message.role)
    if role is None:
        raise InvalidArgument(
            f"messages[{index}].role must be one of system, user, assistant, tool",
            code="invalid_role",
        )
    parts = tuple(
        Part(text=p.text) if p.WhichOneof("part") == "text" else Part(image_url=p.image_url)
        for p in message.content
    )
    calls = (
        tuple(ToolCall(c.id, c.name, c.arguments_json) for c in message.tool_calls)
        if message.tool_calls
        else ()
    )
    return Message(role, parts, calls, message.tool_call_id, message.name)


def messages(items: Iterable[pb.ChatMessage]) -> tuple[Message, ...]:
    return tuple(message(i, m) for i, m in enumerate(items))


def tools(items: Sequence[pb.Tool]) -> tuple[Tool, ...]:
    return tuple(Tool(t.name, t.description, t.parameters_json) for t in items) if items else ()


def chat_request(request: pb.ChatRequest) -> ChatRequest:
    """What the providers are asked, from a Chat or StreamChat request."""
    return ChatRequest(
        messages=messages(request.messages),
        tools=tools(request.tools),
        tool_choice=request.tool_choice,
        temperature=request.temperature if request.HasField("temperature") else None,
        max_tokens=request.max_tokens if request.HasField("max_tokens") else None,
        top_p=request.top_p if request.HasField("top_p") else None,
        stop=tuple(request.stop),
    )


def cache_mode(request: pb.ChatRequest) -> str:
    """The request's CacheMode as the cache names it: "default", "bypass" or "prefer"."""
    return _CACHE_MODE.get(request.cache_mode, "default")


def usage_window(request: pb.GetUsageRequest, now: datetime) -> tuple[datetime, datetime]:
    """Start and end of a GetUsage window: unset, the start of the month (UTC) and now."""
    start = (
        request.start_time.ToDatetime(UTC)
        if request.HasField("start_time")
        else now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    )
    end = request.end_time.ToDatetime(UTC) if request.HasField("end_time") else now
    return start, end


# Answers


def usage(usage: Usage) -> common_pb2.Usage:
    return common_pb2.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=usage.cost_usd,
        estimated=usage.estimated,
    )


def chat_event(event: TextDelta | ToolCallDelta | Finish | Failed) -> pb.ChatEvent:
    """One router event as a StreamChat message (``start`` is added by the caller)."""
    if isinstance(event, TextDelta):
        return pb.ChatEvent(text_delta=event.text)
    if isinstance(event, ToolCallDelta):
        return pb.ChatEvent(
            tool_call_delta=pb.ToolCallDelta(
                index=event.index,
                id=event.id,
                name=event.name,
                arguments_delta=event.arguments_delta,
            )
        )
    if isinstance(event, Finish):
        return pb.ChatEvent(
            finish=pb.ChatFinish(finish_reason=_FINISH[event.reason], usage=usage(event.usage))
        )
    return pb.ChatEvent(
        error=pb.ChatFailure(
            error=common_pb2.StreamError(
                code=event.kind.value, message=event.message, retryable=event.retryable
            ),
            partial_usage=usage(event.partial_usage),
        )
    )


async def chat_events(events: AsyncIterator[RouterEvent]) -> AsyncIterator[pb.ChatEvent]:
    """The StreamChat messages of an answer: ``start`` rides with the first event after it."""
    start: pb.ChatStart | None = None
    async for event in events:
        if isinstance(event, Started):
            # Held back to ride with the first event: one message for the first token.
            start = pb.ChatStart(
                provider=event.candidate.provider,
                model=event.candidate.model,
                cached=event.cached,
            )
            continue
        message = chat_event(event)
        if start is not None:
            message.start.CopyFrom(start)
            start = None
        yield message


async def chat_response(events: AsyncIterator[RouterEvent]) -> pb.ChatResponse:
    """A Chat response gathered from an answer's events; the reported error of a stream
    that broke after it started."""
    response = pb.ChatResponse()
    text: list[str] = []
    calls: dict[int, pb.ToolCall] = {}
    async for event in events:
        if isinstance(event, Started):
            response.provider, response.model = event.candidate.provider, event.candidate.model
            response.cached = event.cached
        elif isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = calls.setdefault(event.index, pb.ToolCall())
            call.id = call.id or event.id
            call.name = call.name or event.name
            call.arguments_json += event.arguments_delta
        elif isinstance(event, Finish):
            response.finish_reason = _FINISH[event.reason]
            response.usage.CopyFrom(usage(event.usage))
        else:
            raise event.error()
    answer = response.message
    answer.role = pb.ROLE_ASSISTANT
    if text:
        answer.content.add(text="".join(text))
    answer.tool_calls.extend(calls[i] for i in sorted(calls))
    return response


def token_count(tokens: int, estimated: bool) -> pb.CountTokensResponse:
    return pb.CountTokensResponse(input_tokens=tokens, estimated=estimated)


def models(routes: RouteTable) -> pb.ListModelsResponse:
    """Every alias, sorted, with its candidates and limits."""
    return pb.ListModelsResponse(
        default_model=routes.default_alias,
        models=[
            pb.ModelInfo(
                alias=route.alias,
                candidates=[c.label for c in route.candidates],
                context_window=route.context_window,
                max_output_tokens=route.max_output_tokens,
                local=all(c.local for c in route.candidates),
            )
            for route in sorted(routes.routes.values(), key=lambda r: r.alias)
        ],
    )


def embed_response(result: Embedded) -> pb.EmbedResponse:
    return pb.EmbedResponse(
        embeddings=[pb.Embedding(values=v) for v in result.vectors],
        model=result.model,
        dimensions=len(result.vectors[0]) if result.vectors else 0,
        usage=common_pb2.Usage(
            input_tokens=result.input_tokens,
            cost_usd=result.cost_usd,
            estimated=result.estimated,
        ),
    )


def usage_response(totals: list[UsageTotal]) -> pb.GetUsageResponse:
    return pb.GetUsageResponse(
        rows=[
            pb.UsageRow(
                user_id=t.user_id,
                model=t.model,
                requests=t.requests,
                input_tokens=t.input_tokens,
                output_tokens=t.output_tokens,
                cost_usd=t.cost_usd,
            )
            for t in totals
        ]
    )
