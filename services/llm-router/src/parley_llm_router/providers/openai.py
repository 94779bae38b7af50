"""OpenAI Chat Completions and Azure OpenAI, through the official ``openai`` SDK.

The SDK's own retries are turned off: the router decides retries and fallback, so they never
stack.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import httpx2
import openai

from parley_llm_router.messages import ChatRequest, ProviderEvent
from parley_llm_router.providers.base import Timeouts
from parley_llm_router.providers.chat_completions import Body, chat_stream, streaming_body
from parley_llm_router.providers.failures import failure_from_sdk, failure_mid_stream


class OpenAIProvider:
    """Chat Completions over the official SDK (see the module docstring).

    With ``api_version`` it talks to Azure OpenAI, where ``base_url`` is the resource's
    endpoint and the model name is the deployment's.
    """

    pace = 0.0  # every delta as it comes

    def __init__(
        self,
        *,
        name: str,
        api_key: str | None,
        base_url: str | None,
        api_version: str | None = None,
    ) -> None:
        self.name = name
        # aiohttp's C HTTP parser: far cheaper per chunk than the pure-Python HTTP/1.1 stack.
        http_client = openai.DefaultAioHttpClient()
        if api_version:
            self._client: openai.AsyncOpenAI = openai.AsyncAzureOpenAI(
                api_key=api_key or "not-set",
                azure_endpoint=base_url or "",
                api_version=api_version,
                max_retries=0,
                http_client=http_client,
            )
        else:
            self._client = openai.AsyncOpenAI(
                api_key=api_key or "not-needed",
                base_url=base_url,
                max_retries=0,
                http_client=http_client,
            )

    async def close(self) -> None:
        await self._client.close()

    async def embed(
        self, model: str, texts: list[str], timeout: float
    ) -> tuple[list[list[float]], int]:
        """Vectors in input order, and the tokens the provider counted."""
        try:
            response = await self._client.embeddings.create(
                model=model, input=texts, timeout=httpx2.Timeout(timeout, connect=min(timeout, 5))
            )
        except Exception as error:
            raise failure_from_sdk(error, openai) from None
        ordered = sorted(response.data, key=lambda item: item.index)
        return [list(item.embedding) for item in ordered], response.usage.prompt_tokens

    def stream(
        self, model: str, request: ChatRequest, timeouts: Timeouts
    ) -> AsyncIterator[ProviderEvent]:
        return chat_stream(
            functools.partial(self._open, model, request, timeouts),
            request,
            lambda error: failure_mid_stream(error, openai),
        )

    async def _open(self, model: str, request: ChatRequest, timeouts: Timeouts) -> Body:
        # The SDK's generic ``post`` sends the request and raises its typed errors; the
        # body is read as server-sent events of plain JSON: building an SDK object per
        # chunk, and validating the parameters per call, cost more CPU than the rest of the
        # router's work on a stream.
        try:
            response = await self._client.post(
                "/chat/completions",
                cast_to=httpx2.Response,
                body=streaming_body(model, request),
                options={"timeout": httpx2.Timeout(timeouts.total, connect=timeouts.connect)},
                stream=True,
            )
        except Exception as error:
            raise failure_from_sdk(error, openai) from None

        async def close(complete: bool) -> None:
            await response.aclose()

        return Body(response.aiter_bytes(), close)
