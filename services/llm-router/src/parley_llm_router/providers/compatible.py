"""Servers that speak OpenAI's Chat Completions: vLLM, Ollama, LM Studio, TGI, llama.cpp.

They are called over aiohttp directly, not through the ``openai`` SDK: the SDK's request
path (its options, the httpx2 request and response objects around aiohttp) is a large share
of the router's CPU per streamed request, and a self-hosted model server is where a router
serves the most requests per core. The wire format is the OpenAI provider's own
(:func:`request_body`, :func:`chat_stream`); only sending the request and classifying its
failures differ. OpenAI itself and Azure OpenAI stay on the SDK.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from parley_llm_router.messages import ChatRequest, ProviderEvent
from parley_llm_router.providers.base import Timeouts
from parley_llm_router.providers.chat_completions import Body, chat_stream, streaming_body
from parley_llm_router.providers.failures import (
    FailureKind,
    ProviderFailure,
    classify_status,
    retry_after_seconds,
)

# Concurrency per candidate is the bulkheads' business; this only bounds the sockets.
# Above every candidate's default limit of calls in flight (1,024), which bounds them.
MAX_CONNECTIONS = 2048


async def _arrived(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive; when the connection breaks, what arrived before the
    break first, then the error. aiohttp's readers raise at once and drop the bytes they
    hold, and a paced stream holds up to a coalescing window of tokens: a provider dropping
    mid-answer would otherwise cost the caller text the router had received."""
    while True:
        try:
            chunk = await content.readany()
        except aiohttp.ClientError:
            try:
                # The only way to the buffer once an exception is set (read_nowait raises).
                held = content._read_nowait(-1)
            except Exception:
                held = b""
            if held:
                yield held
            raise
        if not chunk:
            return
        yield chunk


class CompatibleProvider:
    """Chat Completions and embeddings of one OpenAI-compatible server at ``base_url``
    (ending in ``/v1``, as the servers document it).

    ``pace`` is the shortest time between two reads of a stream after its first delta (see
    :func:`chat_stream`); the router sets it to its ``StreamChat`` coalescing window, which
    already holds a token back that long.
    """

    def __init__(self, *, name: str, api_key: str | None, base_url: str, pace: float = 0.0) -> None:
        self.name = name
        self.pace = pace
        root = base_url.rstrip("/")
        self._chat_url = f"{root}/chat/completions"
        self._embeddings_url = f"{root}/embeddings"
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop that runs it.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS),
                headers=self._headers,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def stream(
        self, model: str, request: ChatRequest, timeouts: Timeouts
    ) -> AsyncIterator[ProviderEvent]:
        return chat_stream(
            functools.partial(self._open, model, request, timeouts),
            request,
            _mid_stream,
            self.pace,
        )

    async def _open(self, model: str, request: ChatRequest, timeouts: Timeouts) -> Body:
        response = await self._post(
            self._chat_url,
            streaming_body(model, request),
            aiohttp.ClientTimeout(total=timeouts.total, sock_connect=timeouts.connect),
        )

        async def close(complete: bool) -> None:
            # A body read to its end gives the connection back to the pool; any other
            # end closes it, so the server sees the client leave.
            if complete:
                response.release()
            else:
                response.close()

        return Body(_arrived(response.content), close, response.content.on_eof)

    async def embed(
        self, model: str, texts: list[str], timeout: float
    ) -> tuple[list[list[float]], int]:
        """Vectors in input order, and the tokens the server counted (0 if it did not)."""
        response = await self._post(
            self._embeddings_url,
            {"model": model, "input": texts},
            aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 5)),
        )
        try:
            async with response:
                answer = orjson.loads(await response.read())
            ordered = sorted(answer["data"], key=lambda item: item["index"])
            vectors = [[float(x) for x in item["embedding"]] for item in ordered]
            tokens = int((answer.get("usage") or {}).get("prompt_tokens") or 0)
        except (ValueError, TypeError, KeyError, AttributeError):
            raise ProviderFailure(
                FailureKind.STREAM_BROKEN, "the provider sent a malformed embeddings answer"
            ) from None
        except Exception as error:
            raise _mid_stream(error) from None
        if len(vectors) != len(texts):
            raise ProviderFailure(
                FailureKind.STREAM_BROKEN,
                f"the provider answered {len(vectors)} vectors for {len(texts)} texts",
            )
        return vectors, tokens

    async def _post(
        self, url: str, body: dict[str, Any], timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        """The response to a JSON POST once its headers arrived, or the failure."""
        try:
            response = await self._http().post(url, data=_encode(body), timeout=timeout)
        except TimeoutError:
            raise ProviderFailure(
                FailureKind.TIMEOUT, "the provider did not answer in time"
            ) from None
        except aiohttp.ClientError:
            raise ProviderFailure(
                FailureKind.CONNECTION, "the provider could not be reached"
            ) from None
        if response.status >= 400:
            # The body is not read into the message: it may echo the prompt or a key.
            response.close()
            raise ProviderFailure(
                classify_status(response.status),
                f"the provider answered HTTP {response.status}",
                status=response.status,
                retry_after=retry_after_seconds(response.headers),
            )
        return response


def _encode(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # an integer wider than 64 bits in a tool's JSON schema, say
        return json.dumps(body).encode()


def _mid_stream(error: Exception) -> ProviderFailure:
    """A failure while reading a body that had started."""
    if isinstance(error, TimeoutError):
        return ProviderFailure(FailureKind.TIMEOUT, "the provider did not answer in time")
    if isinstance(error, aiohttp.ClientError):
        return ProviderFailure(FailureKind.STREAM_BROKEN, "the provider's stream broke")
    raise error
