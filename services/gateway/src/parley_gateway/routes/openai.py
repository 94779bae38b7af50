"""The OpenAI-compatible surface, under ``/openai/v1``: chat completions (streamed or not),
models and embeddings, each straight onto llm-router.

Point an OpenAI client's ``base_url`` at ``http://<host>/openai/v1`` and its API key at a
Parley bearer token or API key. The surface is stateless, as OpenAI's is: nothing is stored
in a conversation; the router bills the call to the authenticated principal's tenant and user.
What is accepted, refused and ignored is in :mod:`parley_gateway.openai_inputs`; the shapes
of the answers in :mod:`parley_gateway.openai_views`; every error, in OpenAI's shape, in
:mod:`parley_gateway.openai_errors`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse

from parley.llm_router.v1 import llm_router_pb2 as llm
from parley_gateway import openai_views as views
from parley_gateway.adapters import Peers
from parley_gateway.auth import PUBLIC, require
from parley_gateway.guardrails import AnswerGuard, Guardrails
from parley_gateway.inputs import Text
from parley_gateway.limits.http import RATE_LIMITED, admit_turn, route_class
from parley_gateway.limits.limiter import chat_usage
from parley_gateway.openai_errors import (
    METHODS,
    OpenAIRoute,
    Unsupported,
    not_served,
    responses,
)
from parley_gateway.openai_inputs import (
    ChatCompletionBody,
    EmbeddingsBody,
    chat_request,
    embed_request,
)
from parley_gateway.settings import Settings
from parley_gateway.sse import EventStream
from parley_runtime.context import Principal
from parley_runtime.errors import (
    Cancelled,
    Internal,
    NotFound,
    Unavailable,
    from_rpc_error,
)

log = logging.getLogger("parley.gateway")
router = APIRouter(prefix="/openai", tags=["openai"], route_class=OpenAIRoute)


Chatting = Annotated[Principal, require("chat")]
Reading = Annotated[Principal, require("read")]
ModelId = Annotated[Text, Path(max_length=200, description="A model alias.")]


def _peers(request: Request) -> Peers:
    peers: Peers = request.app.state.peers
    return peers


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _guardrails(request: Request) -> Guardrails:
    guardrails: Guardrails = request.app.state.guardrails
    return guardrails


async def _checked_input(guardrails: Guardrails, tenant: str, routed: llm.ChatRequest) -> None:
    """The text of every user message through the tenant's input guardrails, in place (as
    Parley's chat does for a user's message): normalised, or refused."""
    for message in routed.messages:
        if message.role == llm.ROLE_USER:
            for part in message.content:
                if part.WhichOneof("part") == "text":
                    part.text = await guardrails.check_input(tenant, part.text)


def _shown(guard: AnswerGuard | None, text: str) -> list[str]:
    """The pieces of answer text to show for ``text`` that arrived: through the answer's
    ``pii`` guard when there is one (it may hold a piece back, or redact it)."""
    if guard is None:
        return [text] if text else []
    return [data["text"] for name, data in guard.events("delta", {"text": text}) if data["text"]]


def _held(guard: AnswerGuard | None, end: str) -> list[str]:
    """The text the answer's guard still holds, shown before the answer's ``end`` (``done``
    or ``error``)."""
    if guard is None:
        return []
    data: dict[str, Any] = {"message": {"content": "".join(guard.parts)}}
    return [d["text"] for name, d in guard.events(end, data) if name == "delta" and d["text"]]


_COMPLETION = {
    "model": views.ChatCompletion,
    "description": "The completion as JSON, or with `stream: true` its chunks as SSE.",
    "content": {
        "text/event-stream": {
            # Each event (without a name), as OpenAPI before 3.2 describes one.
            "schema": {
                "type": "object",
                "required": ["data"],
                "properties": {
                    "data": {
                        "type": "string",
                        "description": "A `chat.completion.chunk` object as JSON, then "
                        '`[DONE]`; a failure after the first chunk is a last `{"error": ...}`.',
                    }
                },
            },
            "example": views.STREAM_EXAMPLE,
        }
    },
}


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses={200: _COMPLETION, **responses(400, 401, 403, 404, 413, 429, 500, 502, 503)},
    dependencies=[RATE_LIMITED],
    openapi_extra=route_class("chat"),
)
async def chat_completions(
    body: ChatCompletionBody, request: Request, caller: Chatting
) -> Response:
    """Answer a conversation the caller sends whole, streamed as SSE with `stream: true`."""
    settings = _settings(request)
    routed = chat_request(body)
    guardrails = _guardrails(request)
    await _checked_input(guardrails, caller.tenant_id, routed)
    guard = guardrails.answer(caller.tenant_id)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    router_client = _peers(request).llm_router
    # A stream slot and the token quotas (429 when spent), as for a turn of Parley's chat.
    lease = await admit_turn(request, caller)
    if not body.stream:
        try:
            reply = await _unless_client_leaves(
                request, router_client.Chat(routed, timeout=settings.stream_timeout_seconds)
            )
            lease.use(reply.usage)
        finally:
            lease.end()
        text = "".join(p.text for p in reply.message.content if p.WhichOneof("part") == "text")
        text = "".join(_shown(guard, text) + _held(guard, "done"))
        return JSONResponse(
            views.completion(
                reply, text, completion_id=completion_id, created=created, model=body.model
            )
        )
    call = lease.watch(
        router_client.StreamChat(routed, timeout=settings.stream_timeout_seconds), chat_usage
    )
    events: AsyncIterator[llm.ChatEvent] = aiter(call)
    # Wait for the first event, so that an unknown model or a provider that cannot answer
    # is a plain HTTP error, not a stream that starts and then fails.
    try:
        first = await anext(events, None)
    except grpc.RpcError as error:
        call.cancel()
        raise from_rpc_error(error) from None
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    chunks = views.Chunks(completion_id, created, body.model, include_usage)
    return EventStream(
        _streamed(call, events, first, chunks, guard), keep_alive=settings.sse_keep_alive_seconds
    )


async def _streamed(
    call: Any,
    events: AsyncIterator[llm.ChatEvent],
    first: llm.ChatEvent | None,
    chunks: views.Chunks,
    guard: AnswerGuard | None,
) -> AsyncGenerator[tuple[bytes, bool], None]:
    """The completion's chunks, each with whether it is the last: ``[DONE]`` after the
    finish, or an error line if the answer broke; its text through the answer's guard."""
    read_to_end = False  # llm-router's last event was read: its call closes on its own
    try:
        try:
            event = first
            while event is not None:
                kind = event.WhichOneof("event")
                read_to_end = kind in ("finish", "error")
                if kind == "text_delta":
                    for text in _shown(guard, event.text_delta):
                        yield chunks.text(text), False
                elif kind == "tool_call_delta":
                    yield chunks.tool_call(event.tool_call_delta), False
                elif kind == "finish":
                    for text in _held(guard, "done"):
                        yield chunks.text(text), False
                    yield chunks.finish(event.finish), True
                    return
                elif kind == "error":
                    for text in _held(guard, "error"):
                        yield chunks.text(text), False
                    failure = event.error.error
                    yield views.stream_error_data(failure.code, failure.message), True
                    return
                event = await anext(events, None)
            ended = views.error_data(
                Unavailable("the answer stream ended without a result", code="stream_incomplete")
            )
        except grpc.RpcError as error:
            ended = views.error_data(from_rpc_error(error))
        except Exception:
            # The status line is sent: the stream ends with an error line, not a cut connection.
            log.exception("unhandled error in a streamed completion")
            ended = views.error_data(Internal("internal error"))
        for text in _held(guard, "error"):
            yield chunks.text(text), False
        yield ended, True
    finally:
        # Cancelled unless read to its end: a client that went away cancels the call down
        # to the provider.
        call.close(read_to_end=read_to_end)


async def _unless_client_leaves(request: Request, call: Any) -> llm.ChatResponse:
    """The reply of a unary ``call``; a client that disconnects first cancels it, down to the
    provider, rather than leave a long answer to be generated for nobody."""

    async def client_left() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    answer = asyncio.ensure_future(call)
    watcher = asyncio.ensure_future(client_left())
    answered = False
    try:
        await asyncio.wait((answer, watcher), return_when=asyncio.FIRST_COMPLETED)
        answered = answer.done()
    finally:
        watcher.cancel()
        if not answered:
            call.cancel()
            answer.cancel()
    if not answered:
        raise Cancelled("the client went away", code="client_disconnected")
    reply: llm.ChatResponse = answer.result()
    return reply


@router.get(
    "/v1/models",
    response_model=None,
    responses={200: {"model": views.ModelList}, **responses(401, 403, 429, 500, 503)},
    dependencies=[RATE_LIMITED],
)
async def list_models(request: Request, caller: Reading) -> JSONResponse:
    """The model aliases, as OpenAI lists models."""
    listed = await _peers(request).llm_router.ListModels(llm.ListModelsRequest())
    return JSONResponse(views.model_list(listed))


@router.get(
    "/v1/models/{model_id:path}",
    response_model=None,
    responses={200: {"model": views.Model}, **responses(400, 401, 403, 404, 429, 500, 503)},
    dependencies=[RATE_LIMITED],
)
async def get_model(model_id: ModelId, request: Request, caller: Reading) -> JSONResponse:
    """One model alias; 404 `model_not_found` for any other name."""
    listed = await _peers(request).llm_router.ListModels(llm.ListModelsRequest())
    for info in listed.models:
        if info.alias == model_id:
            return JSONResponse(views.model(info))
    raise NotFound(f"the model {model_id!r} does not exist", code="unknown_model")


@router.post(
    "/v1/embeddings",
    response_model=None,
    responses={
        200: {"model": views.EmbeddingList},
        **responses(400, 401, 403, 404, 413, 429, 500, 502, 503),
    },
    dependencies=[RATE_LIMITED],
    openapi_extra=route_class("chat"),
)
async def create_embeddings(
    body: EmbeddingsBody, request: Request, caller: Chatting
) -> JSONResponse:
    """Vectors for a text or a list of texts (at most 256), through an embedding alias."""
    routed = embed_request(body)
    # Embedding uses tokens too: they count against the same quotas as a chat turn's.
    lease = await admit_turn(request, caller)
    try:
        reply = await _peers(request).llm_router.Embed(
            routed, timeout=_settings(request).stream_timeout_seconds
        )
        lease.use(reply.usage)
    finally:
        lease.end()
    if body.dimensions is not None and body.dimensions != reply.dimensions:
        raise Unsupported(
            "dimensions",
            f"model {body.model!r} produces {reply.dimensions} dimensions, not {body.dimensions}",
        )
    return JSONResponse(
        views.embeddings(reply, model=body.model, encoding_format=body.encoding_format)
    )


@router.api_route(
    "/{path:path}", methods=list(METHODS), include_in_schema=False, dependencies=[PUBLIC]
)
async def unknown_route(request: Request) -> JSONResponse:
    """Whatever else is asked under ``/openai/`` (last, so that it answers only what no route
    above serves): a 404, or a 405 naming the methods the path's route serves, in OpenAI's
    shape too."""
    served = [r for r in router.routes if getattr(r, "endpoint", None) is not unknown_route]
    return not_served(request, served)
