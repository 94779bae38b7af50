"""The conversation service with the real llm-router (and retrieval when asked) in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from parley.conversation.v1 import conversation_pb2_grpc as pb_grpc
from parley_conversation.main import build as build_conversation
from parley_conversation.settings import Settings
from parley_llm_router.main import build as build_router
from parley_llm_router.settings import Settings as RouterSettings
from parley_runtime.grpc_client import channel
from parley_runtime.testing import acting_as, grpc_server


@dataclass
class Service:
    stub: pb_grpc.ConversationServiceStub
    database_url: str


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    """Calls carry this principal (a sync fixture: its context reaches the test)."""
    with acting_as("acme", "ann"):
        yield


async def start(
    database_url: str, tmp_path: Path, router_env: dict[str, str] | None = None, **settings: object
) -> AsyncIterator[Service]:
    router = await build_router(
        RouterSettings(
            grpc_port=0,
            local_token_delay_ms=1,
            database_url=f"sqlite:///{tmp_path}/router.db",
            **{k: v for k, v in (router_env or {}).items()},  # type: ignore[arg-type]
        ),
        env={},
    )
    async with grpc_server(router.registrations) as router_address:
        wiring = await build_conversation(
            Settings(
                grpc_port=0,
                database_url=database_url,
                llm_router_addr=router_address,
                retrieval_addr=str(settings.pop("retrieval_addr", "127.0.0.1:1")),
                **settings,  # type: ignore[arg-type]
            )
        )
        async with (
            grpc_server(wiring.registrations) as address,
            channel(address, "parley.conversation.v1.ConversationService") as chan,
        ):
            yield Service(pb_grpc.ConversationServiceStub(chan), database_url)
        await wiring.close()
    await router.close()


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    async for running in start(database_url, tmp_path):
        yield running
