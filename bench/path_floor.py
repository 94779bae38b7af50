"""The least the whole path's stack costs: three bare hops, none of Parley's work.

    uv run python bench/whole_path.py --levels 1 50 --floor

Three processes in a chain, each on the libraries the service in its place runs on, and on
uvloop as they are:

- **gateway** (``path_floor.py gateway``): FastAPI on uvicorn (httptools), one route,
  ``POST /v1/conversations/{id}/messages`` with a pydantic body and no dependency or
  middleware, that calls ``ConversationService.SendMessage`` over grpc.aio and writes each
  event it gets as a Server-Sent Event through Starlette's ``StreamingResponse``;
- **conversation** (``path_floor.py conversation``): a bare grpc.aio ``SendMessage`` that
  answers ``accepted`` at once, calls ``LlmRouter.StreamChat`` with the user's message and
  relays each text delta as a turn event, then ``done`` with the usage in it (as Parley's
  conversation does for a caller that asks, ``usage_with_done``);
- **llm-router**: ``relay_floor.py``, a bare ``StreamChat`` that posts to the fake over aiohttp
  and coalesces the text in the router's window (``STREAM_COALESCE_MS``, else its default).

The events on each hop are those of Parley's turn (``accepted``, deltas, ``done``; the gateway
writes ``usage`` and ``done`` from the last), so each hop carries as many messages as
Parley's. No identity, limits, validation, guardrails, store, history, prompt, routing,
breakers, ledger, metrics or tracing.
``whole_path.py --floor`` measures the chain beside Parley in the same runs ("path-floor"):
what Parley adds beyond it is its own work, and what the chain itself adds is the least any
Python service chain on these libraries adds.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import grpc
import orjson
import uvicorn
import uvloop
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from parley.common.v1 import common_pb2 as common
from parley.conversation.v1 import conversation_pb2 as conv
from parley.conversation.v1 import conversation_pb2_grpc as conv_grpc
from parley.llm_router.v1 import llm_router_pb2 as llm
from parley.llm_router.v1 import llm_router_pb2_grpc as llm_grpc


class Conversation(conv_grpc.ConversationServiceServicer):
    """``SendMessage`` relayed to the router's ``StreamChat``, nothing stored."""

    def __init__(self, router: str) -> None:
        self.router = router
        self.stub: llm_grpc.LlmRouterStub | None = None

    async def SendMessage(
        self, request: conv.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[conv.TurnEvent]:
        if self.stub is None:  # the channel belongs to the server's loop
            self.stub = llm_grpc.LlmRouterStub(grpc.aio.insecure_channel(self.router))
        yield conv.TurnEvent(
            accepted=conv.MessageAccepted(user_message_id="u", assistant_message_id="a")
        )
        chat = llm.ChatRequest(
            messages=[
                llm.ChatMessage(role=llm.ROLE_USER, content=[llm.ContentPart(text=request.content)])
            ]
        )
        parts: list[str] = []
        async for event in self.stub.StreamChat(chat):
            if event.WhichOneof("event") == "text_delta":
                parts.append(event.text_delta)
                yield conv.TurnEvent(delta=conv.TextDelta(text=event.text_delta))
        yield conv.TurnEvent(
            done=conv.TurnDone(
                message=conv.Message(
                    id="a", role=conv.MESSAGE_ROLE_ASSISTANT, content="".join(parts)
                ),
                usage=common.Usage(output_tokens=len(parts)),
            )
        )


async def serve_conversation(port: int, router: str) -> None:
    server = grpc.aio.server()
    conv_grpc.add_ConversationServiceServicer_to_server(Conversation(router), server)  # type: ignore[abstract]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


class Body(BaseModel):
    content: str


def gateway_app(conversation: str) -> FastAPI:
    """The gateway's floor: one route, its body validated, its events relayed as SSE."""
    app = FastAPI()
    stubs: list[conv_grpc.ConversationServiceStub] = []

    def stub() -> conv_grpc.ConversationServiceStub:
        if not stubs:  # the channel belongs to the server's loop
            stubs.append(conv_grpc.ConversationServiceStub(grpc.aio.insecure_channel(conversation)))
        return stubs[0]

    @app.post("/v1/conversations/{conversation_id}/messages")
    async def send(conversation_id: str, body: Body) -> StreamingResponse:
        call = stub().SendMessage(
            conv.SendMessageRequest(
                conversation_id=conversation_id, content=body.content, usage_with_done=True
            )
        )

        async def events() -> AsyncIterator[bytes]:
            async for event in call:
                kind = event.WhichOneof("event")
                if kind == "delta":
                    data = {"text": event.delta.text}
                elif kind == "accepted":
                    data = {"assistant_message_id": event.accepted.assistant_message_id}
                else:
                    usage = {"output_tokens": event.done.usage.output_tokens}
                    yield b"event: usage\r\ndata: %s\r\n\r\n" % orjson.dumps(usage)
                    data = {"message": {"id": event.done.message.id}}
                yield b"event: %s\r\ndata: %s\r\n\r\n" % (kind.encode(), orjson.dumps(data))

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["gateway", "conversation"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the next hop's host:port")
    args = parser.parse_args()
    if args.role == "conversation":
        uvloop.run(serve_conversation(args.port, args.upstream))
        return
    uvicorn.run(
        gateway_app(args.upstream),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
