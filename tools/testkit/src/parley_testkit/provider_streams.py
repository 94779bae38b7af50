"""Helpers for tests that read a provider's stream over real sockets."""

from __future__ import annotations

import asyncio

from parley_fakes import Fake
from parley_llm_router.messages import (
    ChatRequest,
    Message,
    Part,
    ProviderEvent,
    Role,
    TextDelta,
)
from parley_llm_router.providers.base import Provider, Timeouts
from parley_llm_router.providers.failures import ProviderFailure

HELLO = ChatRequest(messages=(Message(Role.USER, (Part(text="hello"),)),))
TIMEOUTS = Timeouts(connect=1, first_token=1, total=5)


async def collect(
    provider: Provider, model: str, request: ChatRequest = HELLO
) -> list[ProviderEvent]:
    """Every event of one streamed answer."""
    return [event async for event in provider.stream(model, request, TIMEOUTS)]


async def failure(provider: Provider, model: str, request: ChatRequest = HELLO) -> ProviderFailure:
    """The failure that ends the stream; an :class:`AssertionError` when it ends well."""
    try:
        await collect(provider, model, request)
    except ProviderFailure as raised:
        return raised
    raise AssertionError("the stream ended without a failure")


async def assert_stopping_closes_the_stream(provider: Provider, fake: Fake, model: str) -> None:
    """A consumer that stops after the first delta makes ``fake`` see the client leave
    within 100 ms, before the answer's end (``fake`` answers 50 tokens 20 ms apart)."""
    fake.set_behaviour(tokens=50, token_delay_ms=20)
    stream = provider.stream(model, HELLO, TIMEOUTS)
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    closed_at = loop.time()
    while fake.requests[0].outcome != "disconnected":
        assert loop.time() - closed_at < 0.1, fake.requests[0].outcome
        await asyncio.sleep(0.005)
    assert fake.requests[0].tokens_sent < 50
