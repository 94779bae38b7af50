"""The LlmRouter gRPC servicer: translates protobuf to the router's types and back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc

from parley.common.v1 import common_pb2
from parley.llm_router.v1 import llm_router_pb2 as pb
from parley.llm_router.v1 import llm_router_pb2_grpc as pb_grpc
from parley_llm_router.dispatch import Dispatcher, Failed, Started
from parley_llm_router.embeddings import check_inputs, embed
from parley_llm_router.engine import EngineHolder
from parley_llm_router.framing import coalesce
from parley_llm_router.ledger import UsageEntry, UsageLedger
from parley_llm_router.messages import (
    ChatRequest,
    Finish,
    FinishReason,
    Message,
    Part,
    Passage,
    Role,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from parley_llm_router.validation import check_request
from parley_runtime.context import current_principal
from parley_runtime.errors import InvalidArgument, PermissionDenied, Unavailable

_ROLES = {
    pb.ROLE_SYSTEM: Role.SYSTEM,
    pb.ROLE_USER: Role.USER,
    pb.ROLE_ASSISTANT: Role.ASSISTANT,
    pb.ROLE_TOOL: Role.TOOL,
}
_FINISH = {
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.TOOL_CALLS: pb.FINISH_REASON_TOOL_CALLS,
    FinishReason.CONTENT_FILTER: pb.FINISH_REASON_CONTENT_FILTER,
    FinishReason.ERROR: pb.FINISH_REASON_ERROR,
    FinishReason.CANCELLED: pb.FINISH_REASON_CANCELLED,
}


def message_from_proto(index: int, message: pb.ChatMessage) -> Message:
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


def request_from_proto(request: pb.ChatRequest) -> ChatRequest:
    return ChatRequest(
        messages=tuple(message_from_proto(i, m) for i, m in enumerate(request.messages)),
        tools=(
            tuple(Tool(t.name, t.description, t.parameters_json) for t in request.tools)
            if request.tools
            else ()
        ),
        tool_choice=request.tool_choice,
        temperature=request.temperature if request.HasField("temperature") else None,
        max_tokens=request.max_tokens if request.HasField("max_tokens") else None,
        top_p=request.top_p if request.HasField("top_p") else None,
        stop=tuple(request.stop),
        passages=(
            tuple(Passage(p.marker, p.text, p.title) for p in request.passages)
            if request.passages
            else ()
        ),
    )


def usage_to_proto(usage: Usage) -> common_pb2.Usage:
    return common_pb2.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=usage.cost_usd,
        estimated=usage.estimated,
    )


def event_to_proto(event: TextDelta | ToolCallDelta | Finish | Failed) -> pb.ChatEvent:
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
            finish=pb.ChatFinish(
                finish_reason=_FINISH[event.reason], usage=usage_to_proto(event.usage)
            )
        )
    return pb.ChatEvent(
        error=pb.ChatFailure(
            error=common_pb2.StreamError(
                code=event.code, message=event.message, retryable=event.retryable
            ),
            partial_usage=usage_to_proto(event.partial_usage),
        )
    )


EMBED_TIMEOUT_SECONDS = 30.0
_CACHE_MODE = {pb.CACHE_MODE_BYPASS: "bypass", pb.CACHE_MODE_PREFER: "prefer"}


class LlmRouterServicer(pb_grpc.LlmRouterServicer):
    """One call for every provider: resolves the alias, validates, streams through the route."""

    def __init__(
        self,
        holder: EngineHolder,
        dispatcher: Dispatcher,
        ledger: UsageLedger,
        *,
        coalesce_seconds: float = 0.0,
    ) -> None:
        self.holder = holder
        self.dispatcher = dispatcher
        self.ledger = ledger
        self.coalesce_seconds = coalesce_seconds

    async def _events(
        self, request: pb.ChatRequest, window: float = 0.0
    ) -> AsyncIterator[pb.ChatEvent]:
        engine = self.holder.engine  # one engine for the whole request, even across a reload
        route = engine.routes.resolve(request.model)
        chat = request_from_proto(request)
        check_request(chat, route)
        mode = _CACHE_MODE.get(request.cache_mode, "default")
        if window > 0 and engine.paced(route, window):
            # Its deltas come a window apart already: coalescing would merge nothing, and
            # its reader task costs about a fifth of the router's own work on a stream.
            window = 0.0
        events = self.dispatcher.stream(engine, route, chat, mode)
        if window > 0:
            events = coalesce(events, window)
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
            message = event_to_proto(event)
            if start is not None:
                message.start.CopyFrom(start)
                start = None
            yield message

    def StreamChat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatEvent]:
        """Stream an answer: deltas, then one finish or error, the first carrying ``start``
        (see the proto).

        Deltas within ``STREAM_COALESCE_MS`` of the previous message leave as one.
        """
        return self._events(request, self.coalesce_seconds)

    async def Chat(self, request: pb.ChatRequest, context: grpc.aio.ServicerContext) -> Any:
        """Answer in one response, gathered from the same stream as StreamChat."""
        response = pb.ChatResponse()
        text: list[str] = []
        calls: dict[int, pb.ToolCall] = {}
        async for event in self._events(request):
            if event.HasField("start"):
                response.provider, response.model = event.start.provider, event.start.model
                response.cached = event.start.cached
            kind = event.WhichOneof("event")
            if kind == "text_delta":
                text.append(event.text_delta)
            elif kind == "tool_call_delta":
                delta = event.tool_call_delta
                call = calls.setdefault(delta.index, pb.ToolCall())
                call.id = call.id or delta.id
                call.name = call.name or delta.name
                call.arguments_json += delta.arguments_delta
            elif kind == "finish":
                response.finish_reason = event.finish.finish_reason
                response.usage.CopyFrom(event.finish.usage)
            elif kind == "error":
                raise Unavailable(event.error.error.message, code=event.error.error.code)
        message = response.message
        message.role = pb.ROLE_ASSISTANT
        if text:
            message.content.add(text="".join(text))
        message.tool_calls.extend(calls[i] for i in sorted(calls))
        return response

    async def CountTokens(
        self, request: pb.CountTokensRequest, context: grpc.aio.ServicerContext
    ) -> pb.CountTokensResponse:
        """Count a request's input tokens with the tokenizer of the alias's first candidate."""
        engine = self.holder.engine
        route = engine.routes.resolve(request.model)
        messages = tuple(message_from_proto(i, m) for i, m in enumerate(request.messages))
        tools = tuple(Tool(t.name, t.description, t.parameters_json) for t in request.tools)
        counter = engine.counters[route.candidates[0].provider]
        tokens, estimated = counter.count_messages(messages, tools)
        return pb.CountTokensResponse(input_tokens=tokens, estimated=estimated)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        """The aliases callers may use and what stands behind each."""
        routes = self.holder.engine.routes
        return pb.ListModelsResponse(
            default_model=routes.default_alias,
            models=[
                pb.ModelInfo(
                    alias=route.alias,
                    candidates=[c.label for c in route.candidates],
                    context_window=route.context_window,
                    max_output_tokens=route.max_output_tokens,
                    local=all(c.provider == "local" for c in route.candidates),
                )
                for route in sorted(routes.routes.values(), key=lambda r: r.alias)
            ],
        )

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        """Vectors for up to 256 texts, through the alias's provider or the local model."""
        engine = self.holder.engine
        alias = request.model or engine.default_embedding_model
        model = engine.embedding_models.get(alias)
        if model is None:
            valid = ", ".join(sorted(engine.embedding_models))
            raise InvalidArgument(
                f"unknown embedding model {alias!r}; valid models: {valid}", code="unknown_model"
            )
        inputs = list(request.inputs)
        check_inputs(inputs)
        result = await embed(
            model, engine.providers.get(model.provider), inputs, EMBED_TIMEOUT_SECONDS
        )
        principal = current_principal()
        self.ledger.record(
            UsageEntry(
                tenant_id=principal.tenant_id,
                user_id=principal.user_id,
                alias=alias,
                provider=model.provider,
                model=result.model,
                input_tokens=result.input_tokens,
                output_tokens=0,
                cost_usd=result.cost_usd,
                cached=False,
                outcome="ok",
            )
        )
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

    async def GetUsage(
        self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUsageResponse:
        """Usage of the caller's tenant; other users' usage needs the usage:read scope."""
        principal = current_principal()
        user = request.user_id or None
        if user != principal.user_id and not principal.has_scope("usage:read"):
            raise PermissionDenied(
                "reading other users' usage needs the usage:read scope", code="missing_scope"
            )
        now = datetime.now(UTC)
        start = (
            request.start_time.ToDatetime(UTC)
            if request.HasField("start_time")
            else now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        )
        end = request.end_time.ToDatetime(UTC) if request.HasField("end_time") else now
        if end <= start:
            raise InvalidArgument("end_time must be after start_time", code="invalid_window")
        totals = await self.ledger.totals(principal.tenant_id, user, start, end)
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
