"""conversation's peers as fakes that speak their real gRPC contracts over a socket.

``FakeRouter`` lists ``aliases`` (``ListModels``, counted; it can hang instead), plays a
scripted ``StreamChat`` (events, then an end, a refusal or a hang) and keeps the requests it
received; ``FakeRetrieval`` answers every search with the same chunks, and keeps memories
per caller (found by no search).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

import grpc

from parley.common.v1 import common_pb2
from parley.llm_router.v1 import llm_router_pb2 as llm
from parley.llm_router.v1 import llm_router_pb2_grpc as llm_grpc
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_runtime.context import ACCEPTED, Principal
from parley_runtime.errors import InvalidArgument, ParleyError


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


def tool_calls(*calls: tuple[str, str, str]) -> list[llm.ChatEvent]:
    """A stream that asks for tools, (id, name, arguments JSON) each, and finishes."""
    events = [
        llm.ChatEvent(
            tool_call_delta=llm.ToolCallDelta(index=i, id=call_id, name=name, arguments_delta=a)
        )
        for i, (call_id, name, a) in enumerate(calls)
    ]
    events[0] = started(events[0])
    return [
        *events,
        llm.ChatEvent(
            finish=llm.ChatFinish(
                finish_reason=common_pb2.FINISH_REASON_TOOL_CALLS,
                usage=common_pb2.Usage(input_tokens=10, output_tokens=5, cost_usd=0.001),
            )
        ),
    ]


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


def prompt_tokens(messages: Iterable[llm.ChatMessage]) -> int:
    """What llm-router counts for a request to a provider without a tokenizer: four
    characters a token, four tokens of framing a message."""
    return sum(4 + -(-len("".join(p.text for p in m.content)) // 4) for m in messages)


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
    """An llm-router that serves ``aliases`` and whose streams follow ``script``, or the
    scripts queued in ``scripts``, one per call, while there are some."""

    def __init__(self) -> None:
        self.script = Script(answer_events("Hello", " there", "."))
        self.scripts: list[Script] = []
        self.requests: list[llm.ChatRequest] = []
        self.cancelled = asyncio.Event()
        self.aliases: list[str] = list(ALIASES)
        self.listings = 0
        self.listed = asyncio.Event()  # set by every ListModels call
        self.list_hangs = False
        # ListModels' limits of every alias; a local alias is the offline provider.
        self.context_window = 128_000
        self.max_output_tokens = 16_384
        self.local_aliases: set[str] = set()
        # Chat: what answers a one-shot request (nothing by default: a title, a standalone
        # query or facts are then left as they were), the requests received, and how long
        # each takes.
        self.chat_answer: Callable[[llm.ChatRequest], str] = lambda r: ""
        self.chats: list[llm.ChatRequest] = []
        self.chat_delay = 0.0
        self.counted: list[llm.CountTokensRequest] = []

    async def ListModels(
        self, request: llm.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> llm.ListModelsResponse:
        self.listings += 1
        self.listed.set()
        if self.list_hangs:
            await asyncio.Event().wait()
        return llm.ListModelsResponse(
            models=[
                llm.ModelInfo(
                    alias=a,
                    candidates=[f"fake/{a}"],
                    context_window=self.context_window,
                    max_output_tokens=self.max_output_tokens,
                    local=a in self.local_aliases,
                )
                for a in self.aliases
            ],
            default_model=self.aliases[0] if self.aliases else "",
        )

    async def Chat(
        self, request: llm.ChatRequest, context: grpc.aio.ServicerContext
    ) -> llm.ChatResponse:
        self.chats.append(request)
        if self.chat_delay:
            await asyncio.sleep(self.chat_delay)
        text = self.chat_answer(request)
        return llm.ChatResponse(
            message=llm.ChatMessage(role=llm.ROLE_ASSISTANT, content=[llm.ContentPart(text=text)]),
            finish_reason=common_pb2.FINISH_REASON_STOP,
            provider="fake",
            model="scripted-1",
        )

    async def CountTokens(
        self, request: llm.CountTokensRequest, context: grpc.aio.ServicerContext
    ) -> llm.CountTokensResponse:
        """llm-router's count for providers without a tokenizer (``prompt_tokens``)."""
        self.counted.append(request)
        return llm.CountTokensResponse(input_tokens=prompt_tokens(request.messages))

    async def StreamChat(
        self, request: llm.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm.ChatEvent]:
        self.requests.append(request)
        script = self.scripts.pop(0) if self.scripts else self.script
        if script.refused is not None:
            raise script.refused
        if request.model and request.model not in self.aliases:  # as llm-router's routing
            valid = ", ".join(sorted(self.aliases))
            raise InvalidArgument(
                f"unknown model {request.model!r}; valid models: {valid}", code="unknown_model"
            )
        await context.send_initial_metadata((ACCEPTED,))
        try:
            for event in script.events:
                yield event
            if script.then is not None:
                raise script.then
            if script.hang:
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


class FakeRetrieval(ret_grpc.RetrievalServicer):
    """A retrieval that finds ``chunks`` for every question (``by_query``'s for its queries)."""

    def __init__(self) -> None:
        self.chunks: list[ret.ScoredChunk] = []
        self.by_query: dict[str, list[ret.ScoredChunk]] = {}
        self.requests: list[ret.SearchRequest] = []
        self.memories: dict[tuple[str, str], dict[str, str]] = {}

    async def Search(
        self, request: ret.SearchRequest, context: grpc.aio.ServicerContext
    ) -> ret.SearchResponse:
        self.requests.append(request)
        return ret.SearchResponse(chunks=self.by_query.get(request.query, self.chunks))

    # Users' memories: kept per (tenant, user) of the caller's metadata, found by none.

    def _memories(self, context: grpc.aio.ServicerContext) -> dict[str, str]:
        who = Principal.from_metadata(dict(context.invocation_metadata() or ()))  # type: ignore[arg-type]
        assert who is not None, "a memory call names its principal"
        return self.memories.setdefault((who.tenant_id, who.user_id), {})

    async def IndexMemories(
        self, request: ret.IndexMemoriesRequest, context: grpc.aio.ServicerContext
    ) -> ret.IndexMemoriesResponse:
        self._memories(context).update({m.memory_id: m.text for m in request.memories})
        return ret.IndexMemoriesResponse(indexed=len(request.memories))

    async def SearchMemories(
        self, request: ret.SearchMemoriesRequest, context: grpc.aio.ServicerContext
    ) -> ret.SearchMemoriesResponse:
        self._memories(context)
        return ret.SearchMemoriesResponse()

    async def DeleteMemories(
        self, request: ret.DeleteMemoriesRequest, context: grpc.aio.ServicerContext
    ) -> ret.DeleteMemoriesResponse:
        kept = self._memories(context)
        named = list(kept) if request.all else [i for i in request.memory_ids if i in kept]
        for memory_id in named:
            del kept[memory_id]
        return ret.DeleteMemoriesResponse(deleted=len(named))


@dataclass
class Peers:
    """The fakes, served together at ``address``."""

    address: str
    router: FakeRouter = field(default_factory=FakeRouter)
    retrieval: FakeRetrieval = field(default_factory=FakeRetrieval)
