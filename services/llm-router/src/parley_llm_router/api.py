"""The LlmRouter gRPC servicer: validates, reads the principal once, and hands the request to
the router in its own types (through :mod:`.wire`), with the principal as an argument."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc

from parley.llm_router.v1 import llm_router_pb2 as pb
from parley.llm_router.v1 import llm_router_pb2_grpc as pb_grpc
from parley_llm_router import wire
from parley_llm_router.dispatch import Dispatcher, RouterEvent
from parley_llm_router.embeddings import check_inputs
from parley_llm_router.framing import coalesce
from parley_llm_router.ledger import UsageLedger
from parley_llm_router.reload import EngineHolder
from parley_llm_router.validation import check_request
from parley_runtime.context import ACCEPTED, Principal, current_principal
from parley_runtime.errors import InvalidArgument, PermissionDenied


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

    def _answer(
        self, request: pb.ChatRequest, principal: Principal, window: float
    ) -> AsyncIterator[RouterEvent]:
        """The router's events for ``request``, deltas within ``window`` merged."""
        engine = self.holder.engine  # one engine for the whole request, even across a reload
        route = engine.routes.resolve(request.model)
        chat = wire.chat_request(request)
        check_request(chat, route)
        if window > 0 and engine.paced(route, window):
            # Its deltas come a window apart already: coalescing would merge nothing, and
            # its reader task is work of its own.
            window = 0.0
        events = self.dispatcher.stream(
            engine, route, chat, wire.cache_mode(request), principal=principal
        )
        return coalesce(events, window) if window > 0 else events

    def _events(
        self, request: pb.ChatRequest, principal: Principal, window: float
    ) -> AsyncIterator[pb.ChatEvent]:
        return wire.chat_events(self._answer(request, principal, window))

    async def StreamChat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatEvent]:
        """Stream an answer: deltas, then one finish or error, the first carrying ``start``
        (see the proto). A valid request is accepted at once (``ACCEPTED`` in the initial
        metadata), before the provider's first token.

        Deltas within ``STREAM_COALESCE_MS`` of the previous message leave as one.
        """
        events = self._events(request, current_principal(), self.coalesce_seconds)
        await context.send_initial_metadata((ACCEPTED,))
        async for event in events:
            yield event

    async def Chat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChatResponse:
        """Answer in one response, gathered from the same events as StreamChat."""
        return await wire.chat_response(self._answer(request, current_principal(), 0.0))

    async def CountTokens(
        self, request: pb.CountTokensRequest, context: grpc.aio.ServicerContext
    ) -> pb.CountTokensResponse:
        """Count a request's input tokens with the tokenizer of the alias's first candidate."""
        engine = self.holder.engine
        route = engine.routes.resolve(request.model)
        messages = wire.messages(request.messages)
        tokens, estimated = engine.count_tokens(route, messages, wire.tools(request.tools))
        return wire.token_count(tokens, estimated)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        """The aliases callers may use and what stands behind each."""
        return wire.models(self.holder.engine.routes)

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        """Vectors for up to 256 texts, through the alias's provider or the local model."""
        principal = current_principal()
        engine = self.holder.engine
        model = engine.embedding_model(request.model)
        inputs = list(request.inputs)
        check_inputs(inputs)
        result = await self.dispatcher.embed(engine, model, inputs, principal)
        return wire.embed_response(result)

    async def GetUsage(
        self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUsageResponse:
        """Usage of the caller's tenant; other users' usage needs the admin scope."""
        principal = current_principal()
        user = request.user_id or None
        if user != principal.user_id and not principal.has_scope("admin"):
            raise PermissionDenied(
                "reading other users' usage needs the admin scope", code="missing_scope"
            )
        start, end = wire.usage_window(request, datetime.now(UTC))
        if end <= start:
            raise InvalidArgument("end_time must be after start_time", code="invalid_window")
        totals = await self.ledger.totals(principal.tenant_id, user, start, end)
        return wire.usage_response(totals)

    async def DeleteUserUsage(
        self, request: pb.DeleteUserUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteUserUsageResponse:
        """Erase the caller's user from the ledger (rows written, and sums not yet written)."""
        principal = current_principal()
        deleted = await self.ledger.delete_user(principal.tenant_id, principal.user_id)
        return pb.DeleteUserUsageResponse(records_deleted=deleted)
