"""The whole public API in one process for the ``test_api_*`` tests: the real gateway in front
of the real conversation, ingest, retrieval and llm-router services, each on a loopback port
over gRPC, with their SQLite files in the test's folder. The only fake is the model provider
(an OpenAI-protocol server, ``parley_fakes``), so a test can hold an answer open and see it
stopped at the provider.

``stack.client`` acts as acme's ann with the development scopes; ``stack.as_user`` gives a
client of another principal.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley_conversation.main import build as build_conversation
from parley_conversation.settings import Settings as ConversationSettings
from parley_fakes import OpenAIFake
from parley_gateway.auth import DEFAULT_SCOPES, issue_token
from parley_gateway.settings import Settings
from parley_ingest.main import build as build_ingest
from parley_ingest.settings import Settings as IngestSettings
from parley_llm_router.main import build as build_router
from parley_llm_router.settings import Settings as RouterSettings
from parley_runtime.grpc_server import Wiring
from parley_testkit import grpc_server
from parley_testkit.services import retrieval_service

Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]


@dataclass
class Stack:
    """The running API, its settings and the fake provider behind llm-router."""

    client: httpx.AsyncClient
    settings: Settings
    provider: OpenAIFake
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return str(self.client.base_url)

    def token(
        self, tenant: str = "acme", user: str = "ann", scopes: tuple[str, ...] = DEFAULT_SCOPES
    ) -> str:
        return issue_token(
            self.settings.auth_secret,
            self.settings.auth_issuer,
            tenant=tenant,
            user=user,
            scopes=scopes,
        )

    def as_user(
        self, tenant: str = "acme", user: str = "ann", scopes: tuple[str, ...] = DEFAULT_SCOPES
    ) -> httpx.AsyncClient:
        """A client acting as ``user`` of ``tenant`` with ``scopes``, closed with the stack."""
        client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token(tenant, user, scopes)}"},
            timeout=30,
        )
        self.clients.append(client)
        return client


async def _served(stack: AsyncExitStack, wiring: Wiring) -> str:
    stack.push_async_callback(wiring.close)
    return await stack.enter_async_context(grpc_server(wiring.registrations))


@pytest.fixture
def background_concurrency() -> int:
    """Background tasks conversation runs at once: none by default, as the work after a turn
    (titles, memory) calls the same fake provider, whose scripted answers belong to the
    turns here. A module that tests that work overrides this fixture."""
    return 0


@pytest.fixture
async def stack(
    tmp_path: Path, local_embedder: Any, serve_gateway: Serve, background_concurrency: int
) -> AsyncIterator[Stack]:
    async with AsyncExitStack() as running:
        provider = running.enter_context(OpenAIFake(tokens=12, token_delay_ms=1))
        retrieval = await running.enter_async_context(retrieval_service(local_embedder))
        router = await _served(
            running,
            await build_router(
                RouterSettings(
                    grpc_port=0,
                    openai_base_url=f"{provider.base_url}/v1",
                    local_token_delay_ms=0,
                    database_url=f"sqlite:///{tmp_path}/router.db",
                    redis_url=None,
                ),
                env={},
            ),
        )
        ingest = await _served(
            running,
            await build_ingest(
                IngestSettings(
                    grpc_port=0,
                    database_url=f"sqlite:///{tmp_path}/ingest.db",
                    retrieval_addr=retrieval,
                )
            ),
        )
        conversation = await _served(
            running,
            await build_conversation(
                ConversationSettings(
                    grpc_port=0,
                    database_url=f"sqlite:///{tmp_path}/conversation.db",
                    llm_router_addr=router,
                    retrieval_addr=retrieval,
                    replica_id="conversation-a",
                    turn_flush_seconds=0.1,
                    background_concurrency=background_concurrency,
                )
            ),
        )
        settings = Settings(
            conversation_addr=conversation,
            ingest_addr=ingest,
            llm_router_addr=router,
            retrieval_addr=retrieval,
            database_url=f"sqlite:///{tmp_path}/gateway.db",
            redis_url=None,
            limits_default_tier="unlimited",
            max_document_bytes=64 * 1024,
            max_document_body_bytes=64 * 1024 + 4096,
        )
        client = await running.enter_async_context(serve_gateway(settings))
        client.timeout = httpx.Timeout(30)
        found = Stack(client, settings, provider)
        client.headers["Authorization"] = f"Bearer {found.token()}"
        try:
            yield found
        finally:
            for other in found.clients:
                await other.aclose()


Event = tuple[str | None, str, dict[str, Any]]


async def stream_events(response: httpx.Response) -> AsyncIterator[Event]:
    """The (id, event, data) of each event of a streamed response, as they arrive."""
    event_id: str | None = None
    name = ""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if name and data:
                yield event_id, name, json.loads("\n".join(data))
            event_id, name, data = None, "", []
        elif line.startswith(":"):
            continue
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])


@pytest.fixture
def read_events() -> Callable[[httpx.Response], AsyncIterator[Event]]:
    """``read_events(response)``: its (id, event, data) as they arrive."""
    return stream_events
