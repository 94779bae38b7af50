"""Two gateway processes sharing one Redis, as two replicas behind a load balancer: a client
whose requests alternate between them meets one rate limit, one set of stream slots and one
token quota, not one per replica.

Each gateway is ``python -m parley_gateway.main`` on a loopback port, in front of a fake
conversation service that speaks its real gRPC contract from this process.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
import pytest_asyncio

from parley.common.v1 import common_pb2
from parley.conversation.v1 import conversation_pb2 as conv
from parley.conversation.v1 import conversation_pb2_grpc
from parley_gateway.auth import issue_token
from parley_gateway.settings import DEV_SECRET
from parley_runtime.grpc_server import Registration
from parley_testkit import grpc_server

pytestmark = [pytest.mark.redis, pytest.mark.asyncio(loop_scope="module")]

TIER = """
tiers:
  shared:
    streams: {user: 1}
    tokens: {user: {day: 100}}
  rated:
    reads: {user: 6/minute}
tenants:
  rated: rated
"""
STREAM = {"Accept": "text/event-stream"}
SEND = "/v1/conversations/c1/messages"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Conversation(conversation_pb2_grpc.ConversationServiceServicer):
    """Lists nothing; answers a turn in ``deltas`` pieces ``pace`` seconds apart, using
    70 tokens."""

    deltas: int = 3
    pace: float = 0.0
    sent: list[str] = field(default_factory=list)

    async def ListConversations(
        self, request: conv.ListConversationsRequest, context: grpc.aio.ServicerContext
    ) -> conv.ListConversationsResponse:
        return conv.ListConversationsResponse()

    async def SendMessage(
        self, request: conv.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[conv.TurnEvent]:
        self.sent.append(request.content)
        yield conv.TurnEvent(
            accepted=conv.MessageAccepted(user_message_id="u1", assistant_message_id="a1")
        )
        for n in range(self.deltas):
            await asyncio.sleep(self.pace)
            yield conv.TurnEvent(delta=conv.TextDelta(text=f"{n} "))
        used = common_pb2.Usage(input_tokens=40, output_tokens=30)
        yield conv.TurnEvent(usage=conv.UsageEvent(usage=used))
        yield conv.TurnEvent(
            done=conv.TurnDone(message=conv.Message(id="a1", conversation_id="c1", content="0 1"))
        )


@dataclass
class Replicas:
    a: httpx.AsyncClient
    b: httpx.AsyncClient
    conversation: Conversation


def _gateway(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "parley_gateway.main"],
            env={**os.environ, **env, "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(port)},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def _exited(log: Path) -> RuntimeError:
    return RuntimeError(f"a gateway exited: {log.read_text()[-2000:]}")


async def _until_up(client: httpx.AsyncClient, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise _exited(log)
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("a gateway did not answer /healthz")


@pytest.fixture(scope="module")
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replicas(
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    processes: list[subprocess.Popen[bytes]],
) -> AsyncIterator[Replicas]:
    """Both replicas, started once for the module; each test is a user of its own."""
    tmp_path = tmp_path_factory.mktemp("replicas")
    limits = tmp_path / "limits.yaml"
    limits.write_text(TIER)
    conversation = Conversation()
    registration = Registration(
        "parley.conversation.v1.ConversationService",
        lambda server: conversation_pb2_grpc.add_ConversationServiceServicer_to_server(
            conversation, server
        ),
    )
    prefix = f"test:{uuid.uuid4().hex[:12]}:"  # one for both: they share their counters
    async with grpc_server([registration]) as address:
        clients = []
        for name in ("a", "b"):
            port = _free_port()
            process = _gateway(
                port,
                {
                    "REDIS_URL": redis_url,
                    "LIMITS_KEY_PREFIX": prefix,
                    "LIMITS_FILE": str(limits),
                    "LIMITS_DEFAULT_TIER": "shared",
                    "CONVERSATION_ADDR": address,
                    "DATABASE_URL": f"sqlite:///{tmp_path}/gateway-{name}.db",
                    "METRICS_PORT": "0",
                    "LOG_LEVEL": "WARNING",
                },
                tmp_path / f"gateway-{name}.log",
            )
            processes.append(process)
            clients.append(httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10))
        try:
            for client, process, name in zip(clients, processes, "ab", strict=True):
                await _until_up(client, process, tmp_path / f"gateway-{name}.log")
            yield Replicas(clients[0], clients[1], conversation)
        finally:
            for client in clients:
                await client.aclose()


def _bearer(tenant: str = "acme") -> dict[str, str]:
    user = f"u{uuid.uuid4().hex[:10]}"  # a user of its own: the replicas outlive a test
    token = issue_token(DEV_SECRET, "parley", tenant=tenant, user=user)
    return {"Authorization": f"Bearer {token}"}


async def test_two_replicas_share_one_rate_limit(replicas: Replicas) -> None:
    who = _bearer("rated")
    answers = []
    for n in range(8):  # alternating, as a balancer would send them
        client = replicas.a if n % 2 == 0 else replicas.b
        answers.append(await client.get("/v1/conversations", headers=who))
    assert [r.status_code for r in answers] == [200] * 6 + [429, 429]
    # Each replica counts down the same limit the other used.
    assert [r.headers["ratelimit-remaining"] for r in answers] == [
        "5", "4", "3", "2", "1", "0", "0", "0"
    ]  # fmt: skip
    assert answers[6].json()["error"]["code"] == "rate_limited"
    assert answers[7].json()["error"]["code"] == "rate_limited"
    assert 9 <= int(answers[7].headers["retry-after"]) <= 10  # one request per 10 s


async def test_a_stream_open_on_one_replica_holds_the_slot_on_the_other(
    replicas: Replicas,
) -> None:
    who = _bearer()
    replicas.conversation.deltas, replicas.conversation.pace = 5, 0.1
    before = len(replicas.conversation.sent)
    async with replicas.a.stream(
        "POST", SEND, json={"content": "one"}, headers={**STREAM, **who}
    ) as first:
        assert first.status_code == 200
        refused = await replicas.b.post(SEND, json={"content": "two"}, headers={**STREAM, **who})
        await first.aread()
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_streams"
    assert refused.headers["ratelimit-limit"] == "1"
    for _ in range(100):  # given back by replica a once its stream ended
        shown = (await replicas.b.get("/v1/limits", headers=who)).json()
        if shown["streams"]["user"]["open"] == 0:
            break
        await asyncio.sleep(0.05)
    assert shown["streams"]["user"] == {"limit": 1, "open": 0}
    assert replicas.conversation.sent[before:] == ["one"]


async def test_tokens_used_through_one_replica_spend_the_quota_on_the_other(
    replicas: Replicas,
) -> None:
    who = _bearer()
    replicas.conversation.deltas, replicas.conversation.pace = 1, 0.0
    before = len(replicas.conversation.sent)
    first = await replicas.a.post(SEND, json={"content": "one"}, headers=who)
    assert first.status_code == 200
    second = await replicas.b.post(SEND, json={"content": "two"}, headers=who)
    # 70 tokens used of 100: the second turn may start, and it passes the quota.
    assert second.status_code == 200
    for _ in range(100):
        shown = (await replicas.a.get("/v1/limits", headers=who)).json()
        if shown["tokens"]["user"]["day"]["used"] == 140:
            break
        await asyncio.sleep(0.05)
    refused = await replicas.a.post(SEND, json={"content": "three"}, headers=who)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert refused.headers["ratelimit-policy"] == '100;w=86400;name="tokens.user.day"'
    assert replicas.conversation.sent[before:] == ["one", "two"]
