"""The llm-router adapter's check of model aliases, against a fake router over real gRPC: a
known alias passes from a list kept and renewed in the background, an unknown one is refused
after one more look, and a router that does not answer is reported unavailable, quickly."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from parley.llm_router.v1 import llm_router_pb2_grpc as llm_grpc
from parley_conversation.adapters.llm_router import LlmRouter
from parley_runtime.errors import InvalidArgument, Unavailable
from parley_runtime.grpc_server import Registration, start_server
from parley_runtime.settings import ServiceSettings

from .fakes import FakeRouter, Peers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def router_on(port: int, router: FakeRouter) -> AsyncIterator[None]:
    """``router`` served on ``port`` (a fixed one, so it can go away and come back)."""
    settings = ServiceSettings(grpc_host="127.0.0.1", grpc_port=port, shutdown_grace_seconds=1)
    registration = Registration(
        "parley.llm_router.v1.LlmRouter",
        lambda s: llm_grpc.add_LlmRouterServicer_to_server(router, s),
    )
    server, _, _ = await start_server(settings, [registration])
    try:
        yield
    finally:
        await server.stop(None)


@pytest.fixture
async def client(peers: Peers) -> AsyncIterator[LlmRouter]:
    router = LlmRouter(peers.address, 30.0, aliases_ttl=5.0, check_timeout=0.5)
    yield router
    await router.close()


async def test_a_known_alias_passes_and_the_list_is_kept_briefly(
    client: LlmRouter, peers: Peers
) -> None:
    await client.check_model("fast")
    await client.check_model("")  # the router's default
    await client.check_model("slow")
    assert peers.router.listings == 1


async def test_an_old_list_is_asked_again_without_holding_the_check_back(peers: Peers) -> None:
    client = LlmRouter(peers.address, 30.0, aliases_ttl=0.1, check_timeout=0.5)
    try:
        await client.check_model("fast")
        await asyncio.sleep(0.15)
        peers.router.list_hangs = True  # the new list does not come
        peers.router.listed.clear()
        began = time.monotonic()
        await client.check_model("fast")  # passes on the list it has, not after 0.5 s
        assert time.monotonic() - began < 0.3
        await asyncio.wait_for(peers.router.listed.wait(), 3.0)
        assert peers.router.listings == 2  # and the list was asked for again
        peers.router.list_hangs = False
        # Once the hung call's deadline passes, a later check asks again.
        deadline = time.monotonic() + 3.0
        while peers.router.listings < 3 and time.monotonic() < deadline:
            await client.check_model("fast")
            await asyncio.sleep(0.05)
        assert peers.router.listings == 3
    finally:
        await client.close()


async def test_an_unknown_alias_is_refused_naming_it(client: LlmRouter, peers: Peers) -> None:
    await client.check_model("fast")
    with pytest.raises(InvalidArgument) as refused:
        await client.check_model("gpt-9")
    assert refused.value.code == "unknown_model"
    assert "'gpt-9'" in refused.value.message
    assert "valid models: default, fast, slow" in refused.value.message
    assert peers.router.listings == 2  # asked once more before refusing


async def test_a_route_added_a_moment_ago_works_at_once(client: LlmRouter, peers: Peers) -> None:
    await client.check_model("fast")
    peers.router.aliases.append("brand-new")
    await client.check_model("brand-new")


async def test_a_router_that_hangs_is_unavailable_within_the_checks_deadline(
    client: LlmRouter, peers: Peers
) -> None:
    peers.router.list_hangs = True
    began = time.monotonic()
    with pytest.raises(Unavailable) as refused:
        await client.check_model("")
    assert refused.value.code == "service_unavailable"
    assert time.monotonic() - began < 2.0


async def test_callers_waiting_on_a_dead_router_share_one_deadline() -> None:
    client = LlmRouter(f"127.0.0.1:{free_port()}", 30.0, check_timeout=0.3)
    try:
        began = time.monotonic()
        results = await asyncio.gather(
            *(client.check_model("") for _ in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, Unavailable) for r in results)
        assert time.monotonic() - began < 1.5  # not 20 deadlines in a row
    finally:
        await client.close()


async def test_a_router_that_went_away_is_noticed_and_used_again_when_it_is_back() -> None:
    port, router = free_port(), FakeRouter()
    client = LlmRouter(f"127.0.0.1:{port}", 30.0, aliases_ttl=60.0, check_timeout=0.5)
    try:
        async with router_on(port, router):
            await client.check_model("fast")
        await asyncio.sleep(0.2)  # the channel sees the connection go
        # The list is still fresh, but the channel lost its router: it is asked again.
        with pytest.raises(Unavailable):
            await client.check_model("fast")
        async with router_on(port, router):
            began = time.monotonic()
            await client.check_model("fast")
            assert time.monotonic() - began < 1.0
        assert router.listings == 2
    finally:
        await client.close()
