"""A provider whose stream is not what its API promises: a clear failure, never a crash, from
the OpenAI SDK-based provider, the OpenAI-compatible one and the Anthropic one alike. The
server is a plain socket answering fixed bytes, since no real provider sends them on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from parley_llm_router.providers.anthropic import AnthropicProvider
from parley_llm_router.providers.compatible import CompatibleProvider
from parley_llm_router.providers.failures import FailureKind, ProviderFailure
from parley_llm_router.providers.openai import OpenAIProvider
from parley_testkit.provider_streams import HELLO, TIMEOUTS

AnyProvider = OpenAIProvider | CompatibleProvider | AnthropicProvider
Serve = Callable[[bytes], Awaitable[AnyProvider]]


async def serve_once(body: bytes) -> tuple[asyncio.Server, str]:
    """An HTTP/1.1 server answering every request with a 200 event stream of ``body``."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1"


@pytest.fixture(params=[OpenAIProvider, CompatibleProvider, AnthropicProvider])
async def stream_of(request: pytest.FixtureRequest) -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []
    providers: list[AnyProvider] = []

    async def make(body: bytes) -> AnyProvider:
        server, url = await serve_once(body)
        servers.append(server)
        providers.append(request.param(name="odd", api_key=None, base_url=url))
        return providers[-1]

    yield make
    for provider in providers:
        await provider.close()
    for server in servers:
        server.close()


@pytest.mark.parametrize(
    "body",
    [
        b"data: {not json\n\n",
        b"data: [1, 2]\n\n",  # JSON, but not an object
        b'data: {"choices": "none"}\n\n',
        b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\ndata: \xff\xfe\n\n',
    ],
)
async def test_a_malformed_stream_is_a_broken_stream(stream_of: Serve, body: bytes) -> None:
    provider = await stream_of(body)
    with pytest.raises(ProviderFailure) as raised:
        async for _ in provider.stream("m", HELLO, TIMEOUTS):
            pass
    assert raised.value.kind == FailureKind.STREAM_BROKEN
    assert raised.value.message == "the provider sent a malformed stream"


@pytest.mark.parametrize(
    "body",
    [
        b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0}\n\n',
        b'event: message_start\ndata: {"type": "message_start", "message": []}\n\n',
        b'data: {"no_type": true}\n\n',
    ],
    ids=["delta-without-delta", "message-not-an-object", "event-without-type"],
)
async def test_anthropic_events_of_another_shape_are_a_broken_stream(body: bytes) -> None:
    server, url = await serve_once(body)
    provider = AnthropicProvider(name="odd", api_key=None, base_url=url)
    try:
        with pytest.raises(ProviderFailure) as raised:
            async for _ in provider.stream("m", HELLO, TIMEOUTS):
                pass
    finally:
        await provider.close()
        server.close()
    assert raised.value.kind == FailureKind.STREAM_BROKEN
    assert raised.value.message == "the provider sent a malformed stream"
