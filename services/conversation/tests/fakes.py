"""conversation's peers as fakes that speak their real gRPC contracts over a socket.

``FakeRouter`` lists ``aliases`` (``ListModels``, counted; it can hang instead), plays a
scripted ``StreamChat`` (events, then an end, a refusal or a hang) and keeps the requests it
received; ``FakeRetrieval`` answers every search with the same chunks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from parley.common.v1 import common_pb2
from parley.llm_router.v1 import llm_router_pb2 as llm
from parley.llm_router.v1 import llm_router_pb2_grpc as llm_grpc
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_runtime.context import ACCEPTED
from parley_runtime.errors import ParleyError


def text(delta: str) -> llm.ChatEvent:
    return llm.ChatEvent(text_delta=delta)


def finish(input_tokens: int = 12, output_tokens: int = 3) -> llm.ChatEvent:
    return llm.ChatEvent(
        finish=llm.ChatFinish(
            finish_reason=common_pb2.FINISH_REASON_STOP,
            usage=common_pb2.Usage(
                input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=0.001
            ),
        )
    )


def started(first: llm.ChatEvent) -> llm.ChatEvent:
    """``first`` as the first event of a stream: it names who answers."""
    first.start.CopyFrom(llm.ChatStart(provider="fake", model="scripted-1"))
    return first


def answer_events(*parts: str) -> list[llm.ChatEvent]:
    """A stream that answers ``parts`` and finishes."""
    events = [text(p) for p in parts]
    events[0] = started(events[0])
    return [*events, finish()]


# A passage retrieval finds, with everything a citation shows.
LEAVE_CHUNK = ret.ScoredChunk(
    chunk_id="doc1:v1:0",
    document_id="doc1",
    text="Employees have 25 days of leave a year.",
    score=0.5,
    title="Leave policy",
    source_uri="leave.md",
)


@dataclass
class Script:
    """What the next StreamChat plays once it takes the call (unless ``refused``): ``events``,
    then returns, raises ``then``, or hangs."""

    events: list[llm.ChatEvent]
    then: ParleyError | None = None
    hang: bool = False
    # Raised before the call is taken (llm-router's refusal, or a router going away).
    refused: ParleyError | None = None


ALIASES = ("default", "fast", "slow")


class FakeRouter(llm_grpc.LlmRouterServicer):
    """An llm-router that serves ``aliases`` and whose streams follow ``script``."""

    def __init__(self) -> None:
        self.script = Script(answer_events("Hello", " there", "."))
        self.requests: list[llm.ChatRequest] = []
        self.cancelled = asyncio.Event()
        self.aliases: list[str] = list(ALIASES)
        self.listings = 0
        self.list_hangs = False

    async def ListModels(
        self, request: llm.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> llm.ListModelsResponse:
        self.listings += 1
        if self.list_hangs:
            await asyncio.Event().wait()
        return llm.ListModelsResponse(
            models=[llm.ModelInfo(alias=a, candidates=[f"fake/{a}"]) for a in self.aliases],
            default_model=self.aliases[0] if self.aliases else "",
        )

    async def StreamChat(
        self, request: llm.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm.ChatEvent]:
        self.requests.append(request)
        if self.script.refused is not None:
            raise self.script.refused
        await context.send_initial_metadata((ACCEPTED,))
        try:
            for event in self.script.events:
                yield event
            if self.script.then is not None:
                raise self.script.then
            if self.script.hang:
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


class FakeRetrieval(ret_grpc.RetrievalServicer):
    """A retrieval that finds ``chunks`` for every question."""

    def __init__(self) -> None:
        self.chunks: list[ret.ScoredChunk] = []
        self.requests: list[ret.SearchRequest] = []

    async def Search(
        self, request: ret.SearchRequest, context: grpc.aio.ServicerContext
    ) -> ret.SearchResponse:
        self.requests.append(request)
        return ret.SearchResponse(chunks=self.chunks)


@dataclass
class Peers:
    """The fakes, served together at ``address``."""

    address: str
    router: FakeRouter = field(default_factory=FakeRouter)
    retrieval: FakeRetrieval = field(default_factory=FakeRetrieval)
