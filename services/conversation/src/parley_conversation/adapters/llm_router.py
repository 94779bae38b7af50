"""llm-router, as a turn calls it: one streamed model call per answer."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import grpc

from parley.llm_router.v1 import llm_router_pb2_grpc as llm_grpc
from parley_conversation import wire
from parley_conversation.events import ModelEvent
from parley_conversation.prompt import Prompt
from parley_runtime.errors import from_rpc_error
from parley_runtime.grpc_client import channel


class LlmRouter:
    """A channel to llm-router, opened once per process."""

    def __init__(self, address: str, timeout: float) -> None:
        self._channel = channel(
            address,
            "parley.llm_router.v1.LlmRouter",
            idempotent_methods=["CountTokens", "ListModels"],
            default_timeout=timeout,
        )
        self._stub = llm_grpc.LlmRouterStub(self._channel)

    async def stream_chat(
        self, prompt: Prompt, model: str, temperature: float | None, timeout: float
    ) -> AsyncGenerator[ModelEvent, None]:
        """The model's answer to ``prompt`` as it streams.

        Raises the ``ParleyError`` llm-router sent when the call fails before or between
        events. Closing the iterator early cancels the call, down to the provider's stream.
        """
        call = self._stub.StreamChat(wire.chat_request(prompt, model, temperature), timeout=timeout)
        try:
            async for event in call:
                started = wire.model_started(event)
                if started is not None:
                    yield started
                content = wire.model_event(event)
                if content is not None:
                    yield content
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        finally:
            call.cancel()

    async def close(self) -> None:
        await self._channel.close()
