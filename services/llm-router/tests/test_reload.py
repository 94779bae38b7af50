"""A routes-file change takes effect without a restart; a broken file changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from parley.llm_router.v1 import llm_router_pb2 as pb
from parley.llm_router.v1 import llm_router_pb2_grpc as pb_grpc
from parley_llm_router.main import build
from parley_llm_router.settings import Settings
from parley_runtime.grpc_client import channel
from parley_testkit import acting_as, grpc_server

ROUTES = """
default_model: {default}
providers:
  here: {{type: local}}
models:
{models}
"""


def routes(default: str, *aliases: str) -> str:
    models = "\n".join(
        f"  {a}: {{candidates: [{{provider: here, model: extractive-v1}}]}}" for a in aliases
    )
    return ROUTES.format(default=default, models=models)


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    with acting_as("t1", "u1"):
        yield


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[pb_grpc.LlmRouterStub, Path]]:
    path = tmp_path / "routes.yaml"
    path.write_text(routes("one", "one"))
    settings = Settings(
        grpc_port=0,
        routes_file=path,
        routes_reload_seconds=0.05,
        local_token_delay_ms=1,
        database_url=f"sqlite:///{tmp_path}/router.db",
        redis_url=None,
    )
    wiring = await build(settings, env={})
    async with (
        grpc_server(wiring.registrations) as address,
        channel(address, "parley.llm_router.v1.LlmRouter") as chan,
    ):
        yield pb_grpc.LlmRouterStub(chan), path
    await wiring.close()


async def _aliases(stub: pb_grpc.LlmRouterStub) -> set[str]:
    return {m.alias for m in (await stub.ListModels(pb.ListModelsRequest())).models}


async def _eventually(stub: pb_grpc.LlmRouterStub, expected: set[str]) -> None:
    for _ in range(100):
        if await _aliases(stub) == expected:
            return
        await asyncio.sleep(0.02)
    assert await _aliases(stub) == expected


async def test_a_new_file_takes_effect_and_a_broken_one_is_ignored(
    served: tuple[pb_grpc.LlmRouterStub, Path],
) -> None:
    stub, path = served
    assert await _aliases(stub) == {"one"}
    path.write_text(routes("two", "one", "two"))
    await _eventually(stub, {"one", "two"})
    path.write_text("models: [this is not")
    await asyncio.sleep(0.3)
    assert await _aliases(stub) == {"one", "two"}
    path.write_text(routes("nowhere", "one"))  # valid YAML, invalid routes
    await asyncio.sleep(0.3)
    assert await _aliases(stub) == {"one", "two"}


async def test_reloading_under_load_fails_no_request(
    served: tuple[pb_grpc.LlmRouterStub, Path],
) -> None:
    stub, path = served
    text = pb.ContentPart(text="hi")
    request = pb.ChatRequest(
        model="one", messages=[pb.ChatMessage(role=pb.ROLE_USER, content=[text])]
    )
    flipping = True

    async def one_call() -> str:
        events = [e async for e in stub.StreamChat(request)]
        return events[-1].WhichOneof("event") or ""

    async def load() -> list[str]:
        outcomes: list[str] = []
        for _ in range(200):  # bounded; ends soon after the flips
            outcomes += await asyncio.gather(*(one_call() for _ in range(5)))
            if not flipping:
                break
        return outcomes

    async def flip() -> None:
        nonlocal flipping
        for index in range(10):
            path.write_text(routes("one", "one", f"extra{index}"))
            await asyncio.sleep(0.06)
        flipping = False

    outcomes, _ = await asyncio.gather(load(), flip())
    assert len(outcomes) >= 20
    assert set(outcomes) == {"finish"}
    assert "extra9" in await _aliases(stub)
