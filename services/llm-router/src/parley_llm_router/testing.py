"""Helpers for tests that read a provider's stream over real sockets."""

from __future__ import annotations

from parley_llm_router.messages import ChatRequest, Message, Part, ProviderEvent, Role
from parley_llm_router.providers.base import Provider, ProviderFailure, Timeouts

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
