"""The tool loop through llm-router to fake providers speaking OpenAI's, an OpenAI-compatible
server's and Anthropic's real wire protocols, on SQLite and PostgreSQL: the model's scripted
tool calls reach conversation, which runs them and sends their results back in each
protocol's own form until the model answers. retrieval is a fake that speaks its contract."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from parley.conversation.v1 import conversation_pb2 as pb
from parley.conversation.v1 import conversation_pb2_grpc as pb_grpc
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_conversation.main import build as build_conversation
from parley_conversation.settings import Settings
from parley_fakes import AnthropicFake, Behaviour, Fake, OpenAIFake
from parley_llm_router.main import build as build_router
from parley_llm_router.settings import Settings as RouterSettings
from parley_runtime.grpc_client import channel
from parley_runtime.grpc_server import Registration
from parley_testkit import acting_as, grpc_server

LEAVE = ret.ScoredChunk(
    chunk_id="doc1:v1:0",
    document_id="doc1",
    text="Employees have 25 days of leave a year.",
    score=0.7,
    title="Leave policy",
)


class FakeRetrieval(ret_grpc.RetrievalServicer):
    """A retrieval that finds the leave policy for every question."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def Search(
        self, request: ret.SearchRequest, context: grpc.aio.ServicerContext
    ) -> ret.SearchResponse:
        self.queries.append(request.query)
        return ret.SearchResponse(chunks=[LEAVE])


@dataclass
class Service:
    stub: pb_grpc.ConversationServiceStub
    fake: Fake
    retrieval: FakeRetrieval


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    with acting_as("acme", "ann"):
        yield


ROUTES = """
default_model: default
providers:
  {name}: {{type: {kind}, base_url: "{url}", api_key_env: FAKE_KEY}}
models:
  default:
    candidates:
      - {{provider: {name}, model: fake-model}}
"""


@pytest.fixture(params=["openai", "openai_compatible", "anthropic"])
async def service(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> AsyncIterator[Service]:
    kind = request.param
    with AnthropicFake() if kind == "anthropic" else OpenAIFake() as fake:
        url = fake.base_url if kind == "anthropic" else f"{fake.base_url}/v1"
        routes = tmp_path / "routes.yaml"
        routes.write_text(ROUTES.format(name="fake", kind=kind, url=url))
        router = await build_router(
            RouterSettings(
                grpc_port=0,
                routes_file=routes,
                database_url=f"sqlite:///{tmp_path}/router.db",
                redis_url=None,
            ),
            env={"FAKE_KEY": "sk-test"},
        )
        retrieval = FakeRetrieval()
        peers = [
            *router.registrations,
            Registration(
                "parley.retrieval.v1.Retrieval",
                lambda s: ret_grpc.add_RetrievalServicer_to_server(retrieval, s),
            ),
        ]
        async with grpc_server(peers) as peers_address:
            wiring = await build_conversation(
                Settings(
                    grpc_port=0,
                    database_url=database_url,
                    llm_router_addr=peers_address,
                    retrieval_addr=peers_address,
                )
            )
            async with (
                grpc_server(wiring.registrations) as address,
                channel(address, "parley.conversation.v1.ConversationService") as chan,
            ):
                yield Service(pb_grpc.ConversationServiceStub(chan), fake, retrieval)
            await wiring.close()
        await router.close()


async def send(service: Service, text: str, knowledge_base_id: str = "") -> list[pb.TurnEvent]:
    created = await service.stub.CreateConversation(
        pb.CreateConversationRequest(
            settings=pb.ConversationSettings(knowledge_base_id=knowledge_base_id)
        )
    )
    call = service.stub.SendMessage(pb.SendMessageRequest(conversation_id=created.id, content=text))
    return [event async for event in call]


def sent_results(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(call id, text) of each tool result a request carries, in either protocol's form."""
    found = []
    for message in body["messages"]:
        if message["role"] == "tool":
            found.append((message["tool_call_id"], message["content"]))
        elif message["role"] == "user" and isinstance(message["content"], list):
            found += [
                (block["tool_use_id"], block["content"])
                for block in message["content"]
                if block.get("type") == "tool_result"
            ]
    return found


def sent_calls(body: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, name, arguments) of each past tool call a request carries."""
    found = []
    for message in body["messages"]:
        if message["role"] != "assistant":
            continue
        for call in message.get("tool_calls") or ():
            function = call["function"]
            found.append((call["id"], function["name"], json.loads(function["arguments"])))
        if isinstance(message["content"], list):
            found += [
                (block["id"], block["name"], block["input"])
                for block in message["content"]
                if block.get("type") == "tool_use"
            ]
    return found


def turn_requests(service: Service) -> list[dict[str, Any]]:
    """The bodies of the turn's model calls (those offering tools: not a title's, say)."""
    return [r.body for r in service.fake.requests if r.body.get("tools")]


async def test_search_then_calculator_ends_in_an_answer(service: Service) -> None:
    service.fake.push(
        Behaviour(tool_name="search_knowledge_base", tool_arguments={"query": "leave days"}),
        Behaviour(tool_name="calculator", tool_arguments={"expression": "25 * 2"}),
        Behaviour(text="Two years give 50 days [1]."),
    )
    events = await send(service, "How many days of leave in two years?", "handbook")

    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[:3] == ["accepted", "citations", "tool_call"]
    assert kinds[-2:] == ["usage", "done"]
    calls = [e.tool_call for e in events if e.HasField("tool_call")]
    results = [e.tool_result for e in events if e.HasField("tool_result")]
    assert [(c.name, json.loads(c.arguments_json)) for c in calls] == [
        ("search_knowledge_base", {"query": "leave days"}),
        ("calculator", {"expression": "25 * 2"}),
    ]
    assert [(r.call_id, r.is_error) for r in results] == [(c.call_id, False) for c in calls]
    assert "25 days of leave a year" in results[0].result
    assert results[1].result == "50"
    done = events[-1].done.message
    assert (done.status, done.content) == (
        pb.MESSAGE_STATUS_COMPLETE,
        "Two years give 50 days [1].",
    )
    assert [(t.step, t.name, t.result[:9]) for t in done.tool_activity] == [
        (1, "search_knowledge_base", "<document"),
        (2, "calculator", "50"),
    ]
    assert service.retrieval.queries[-1] == "leave days"

    # Three model calls; each after the first carries the calls so far, with the provider's
    # own ids, and their results, in the provider's own format.
    first, second, third = turn_requests(service)
    offered = [t.get("name") or t["function"]["name"] for t in first["tools"]]
    assert offered == ["search_knowledge_base", "calculator", "current_time"]
    assert [(n, a) for _, n, a in sent_calls(third)] == [
        ("search_knowledge_base", {"query": "leave days"}),
        ("calculator", {"expression": "25 * 2"}),
    ]
    assert [i for i, _, _ in sent_calls(third)] == [c.call_id for c in calls]
    assert [i for i, _ in sent_results(third)] == [c.call_id for c in calls]
    assert sent_results(second)[0][1].endswith("</tool_result>")
    assert '<tool_result name="calculator" status="ok">\n50\n' in sent_results(third)[1][1]


async def test_calls_made_together_are_answered_together(service: Service) -> None:
    service.fake.push(
        Behaviour(
            tool_calls=[
                {"name": "calculator", "arguments": {"expression": "2 ** 8"}},
                {"name": "current_time", "arguments": {"timezone": "Mars/Olympus"}},
            ]
        ),
        Behaviour(text="256, and Mars has no time zone."),
    )
    events = await send(service, "Two things at once.")

    results = {e.tool_result.name: e.tool_result for e in events if e.HasField("tool_result")}
    assert results["calculator"].result == "256"
    assert (results["current_time"].is_error, results["current_time"].error_code) == (
        True,
        "unknown_timezone",
    )
    assert events[-1].done.message.status == pb.MESSAGE_STATUS_COMPLETE
    follow_up = turn_requests(service)[-1]
    assert [n for _, n, _ in sent_calls(follow_up)] == ["calculator", "current_time"]
    texts = [text for _, text in sent_results(follow_up)]
    assert 'status="error" code="unknown_timezone"' in texts[1]
