"""The LlmRouter gRPC servicer: translates protobuf to the router's types and back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc

from parley.common.v1 import common_pb2
from parley.llm_router.v1 import llm_router_pb2 as pb
from parley.llm_router.v1 import llm_router_pb2_grpc as pb_grpc
from parley_llm_router.dispatch import Failed, Started, dispatch
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
from parley_llm_router.providers.base import Provider, Timeouts
from parley_llm_router.routing import RouteTable
from parley_llm_router.tokens import estimate_messages
from parley_llm_router.validation import check_request
from parley_runtime.errors import InvalidArgument, Unavailable, Unimplemented

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
    calls = tuple(ToolCall(c.id, c.name, c.arguments_json) for c in message.tool_calls)
    return Message(role, parts, calls, message.tool_call_id, message.name)


def request_from_proto(request: pb.ChatRequest) -> ChatRequest:
    return ChatRequest(
        messages=tuple(message_from_proto(i, m) for i, m in enumerate(request.messages)),
        tools=tuple(Tool(t.name, t.description, t.parameters_json) for t in request.tools),
        tool_choice=request.tool_choice,
        temperature=request.temperature if request.HasField("temperature") else None,
        max_tokens=request.max_tokens if request.HasField("max_tokens") else None,
        top_p=request.top_p if request.HasField("top_p") else None,
        stop=tuple(request.stop),
        passages=tuple(Passage(p.marker, p.text, p.title) for p in request.passages),
    )


def usage_to_proto(usage: Usage) -> common_pb2.Usage:
    return common_pb2.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=usage.cost_usd,
        estimated=usage.estimated,
    )


class LlmRouterServicer(pb_grpc.LlmRouterServicer):
    """One call for every provider: resolves the alias, validates, streams through the route."""

    def __init__(
        self, routes: RouteTable, providers: Mapping[str, Provider], timeouts: Timeouts
    ) -> None:
        self.routes = routes
        self.providers = providers
        self.timeouts = timeouts

    async def _events(self, request: pb.ChatRequest) -> AsyncIterator[pb.ChatEvent]:
        route = self.routes.resolve(request.model)
        chat = request_from_proto(request)
        check_request(chat, route)
        async for event in dispatch(route, chat, self.providers, self.timeouts):
            if isinstance(event, TextDelta):
                yield pb.ChatEvent(text_delta=event.text)
            elif isinstance(event, Started):
                yield pb.ChatEvent(
                    start=pb.ChatStart(
                        provider=event.candidate.provider,
                        model=event.candidate.model,
                        cached=event.cached,
                    )
                )
            elif isinstance(event, ToolCallDelta):
                yield pb.ChatEvent(
                    tool_call_delta=pb.ToolCallDelta(
                        index=event.index,
                        id=event.id,
                        name=event.name,
                        arguments_delta=event.arguments_delta,
                    )
                )
            elif isinstance(event, Finish):
                yield pb.ChatEvent(
                    finish=pb.ChatFinish(
                        finish_reason=_FINISH[event.reason], usage=usage_to_proto(event.usage)
                    )
                )
            elif isinstance(event, Failed):
                yield pb.ChatEvent(
                    error=pb.ChatFailure(
                        error=common_pb2.StreamError(
                            code=event.code, message=event.message, retryable=event.retryable
                        ),
                        partial_usage=usage_to_proto(event.partial_usage),
                    )
                )

    async def StreamChat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatEvent]:
        """Stream an answer: start, deltas, then one finish or error (see the proto)."""
        async for event in self._events(request):
            yield event

    async def Chat(self, request: pb.ChatRequest, context: grpc.aio.ServicerContext) -> Any:
        """Answer in one response, gathered from the same stream as StreamChat."""
        response = pb.ChatResponse()
        text: list[str] = []
        calls: dict[int, pb.ToolCall] = {}
        async for event in self._events(request):
            kind = event.WhichOneof("event")
            if kind == "start":
                response.provider, response.model = event.start.provider, event.start.model
                response.cached = event.start.cached
            elif kind == "text_delta":
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
        """Count a request's input tokens (an estimate; see tokens.py)."""
        self.routes.resolve(request.model)
        messages = tuple(message_from_proto(i, m) for i, m in enumerate(request.messages))
        tools = tuple(Tool(t.name, t.description, t.parameters_json) for t in request.tools)
        return pb.CountTokensResponse(
            input_tokens=estimate_messages(messages, tools), estimated=True
        )

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        """The aliases callers may use and what stands behind each."""
        return pb.ListModelsResponse(
            default_model=self.routes.default_alias,
            models=[
                pb.ModelInfo(
                    alias=route.alias,
                    candidates=[c.label for c in route.candidates],
                    context_window=route.context_window,
                    max_output_tokens=route.max_output_tokens,
                    local=all(c.provider == "local" for c in route.candidates),
                )
                for route in sorted(self.routes.routes.values(), key=lambda r: r.alias)
            ],
        )

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        """Embeddings are served by the retrieval service in this version."""
        raise Unimplemented("Embed is not served by this version of llm-router")

    async def GetUsage(
        self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUsageResponse:
        """The usage ledger is not kept by this version of llm-router."""
        raise Unimplemented("GetUsage is not served by this version of llm-router")
