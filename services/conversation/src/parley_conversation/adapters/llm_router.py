"""llm-router, as conversation calls it: the model aliases it serves and their limits (checked
before a turn or a conversation's settings are stored), one streamed model call per answer,
unstreamed answers for Parley's own use (summaries, titles, standalone queries, memories),
and exact token counts of a prompt near its budget."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Sequence

import grpc

from parley.llm_router.v1 import llm_router_pb2 as llm
from parley.llm_router.v1 import llm_router_pb2_grpc as llm_grpc
from parley_conversation import wire
from parley_conversation.conversations import ModelAliases, ModelLimits, Role
from parley_conversation.events import ModelEvent
from parley_conversation.prompt import Prompt, ToolExchange
from parley_conversation.tools import ToolSpec
from parley_runtime.context import ACCEPTED, Principal
from parley_runtime.errors import InvalidArgument, Unavailable, from_rpc_error
from parley_runtime.grpc_client import channel

log = logging.getLogger("parley.conversation")


class ModelStream:
    """A model call under way: its events as it streams (iterate once), or ``cancel``.

    Iterating raises the ``ParleyError`` llm-router sent when the call fails before or
    between events. Leaving the iteration early, or ``cancel``, cancels the call, down to the
    provider's stream.
    """

    def __init__(self, call: grpc.aio.UnaryStreamCall) -> None:
        self._call = call

    def cancel(self) -> None:
        self._call.cancel()

    async def accepted(self) -> None:
        """Wait until llm-router has taken the call (it says so at once, before the model's
        first token); raise the ``ParleyError`` of a call that ended without being taken:
        refused, or a router that went away."""
        metadata = await self._call.initial_metadata()
        # A router that sends no such metadata (an earlier version, during an upgrade) sends
        # its metadata with the first event: a call still going has started.
        if ACCEPTED[0] in metadata or not self._call.done():
            return
        code = await self._call.code()
        if code == grpc.StatusCode.OK:
            return
        trailing = await self._call.trailing_metadata()
        details = await self._call.details()
        raise from_rpc_error(grpc.aio.AioRpcError(code, metadata, trailing, details))

    async def __aiter__(self) -> AsyncGenerator[ModelEvent, None]:
        try:
            async for event in self._call:
                started = wire.model_started(event)
                if started is not None:
                    yield started
                content = wire.model_event(event)
                if content is not None:
                    yield content
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        finally:
            self._call.cancel()


class LlmRouter:
    """A channel to llm-router, opened once per process, and the aliases it serves.

    The list of aliases is used only while the channel is connected: a router that went away
    is asked again (within ``check_timeout``) before anything is stored, so a send to a dead
    router is refused instead of stored and failed. While it is connected, a list older than
    ``aliases_ttl`` seconds is asked for again in the background and the turn goes on with
    the one it has: a turn after a quiet spell does not wait a round trip for it. An alias
    removed meanwhile is still refused before anything is stored, by llm-router itself,
    which refuses the call before accepting it (``ModelStream.accepted``).
    """

    def __init__(
        self,
        address: str,
        timeout: float,
        *,
        aliases_ttl: float = 5.0,
        check_timeout: float = 2.0,
    ) -> None:
        self._channel = channel(
            address,
            "parley.llm_router.v1.LlmRouter",
            idempotent_methods=["CountTokens", "ListModels"],
            default_timeout=timeout,
        )
        self._stub = llm_grpc.LlmRouterStub(self._channel)
        self._aliases_ttl = aliases_ttl
        self._check_timeout = check_timeout
        self._aliases: ModelAliases | None = None
        self._fetched_at = 0.0
        self._fetching: asyncio.Future[ModelAliases] | None = None

    async def check_model(self, alias: str) -> None:
        """Pass when llm-router serves ``alias`` (empty: its default).

        Raises ``InvalidArgument`` (``unknown_model``, naming the alias) when it does not,
        after asking once more (a route added a moment ago works at once), and ``Unavailable``
        when llm-router does not answer within the check's deadline.
        """
        known = await self._known(fresh=False)
        if known.knows(alias):
            return
        known = await self._known(fresh=True)
        if not known.knows(alias):
            valid = ", ".join(sorted(known.names))
            raise InvalidArgument(
                f"unknown model {alias!r}; valid models: {valid}", code="unknown_model"
            )

    async def _known(self, fresh: bool) -> ModelAliases:
        cached = self._aliases
        if (
            not fresh
            and cached is not None
            and self._channel.get_state() == grpc.ChannelConnectivity.READY
        ):
            if time.monotonic() - self._fetched_at >= self._aliases_ttl:
                self._refresh()  # for the next turns; this one goes on with the list it has
            return cached
        return await asyncio.shield(self._refresh())

    def _refresh(self) -> asyncio.Future[ModelAliases]:
        """The list's fetch under way, or a new one. Concurrent callers share one call: a
        dead router costs each of them one deadline, not one per caller queued behind it."""
        if self._fetching is None:
            fetching = asyncio.ensure_future(self._fetch())
            fetching.add_done_callback(self._fetched)
            self._fetching = fetching
        return self._fetching

    def _fetched(self, fetching: asyncio.Future[ModelAliases]) -> None:
        if self._fetching is fetching:
            self._fetching = None
        if not fetching.cancelled() and fetching.exception() is None:
            self._aliases, self._fetched_at = fetching.result(), time.monotonic()

    async def _fetch(self) -> ModelAliases:
        try:
            # Waits for a router that is reconnecting, within the check's short deadline.
            found = await self._stub.ListModels(
                llm.ListModelsRequest(), timeout=self._check_timeout, wait_for_ready=True
            )
        except grpc.RpcError as error:
            status = error.code() if isinstance(error, grpc.aio.AioRpcError) else None
            log.warning("llm-router did not list its models", extra={"status": str(status)})
            raise Unavailable(
                "the model service is unavailable; retry shortly", code="service_unavailable"
            ) from error
        return wire.model_aliases(found)

    async def limits(self, alias: str) -> ModelLimits | None:
        """The limits of ``alias`` (empty: the default), from the list ``check_model`` keeps;
        None when llm-router lists no such alias."""
        return (await self._known(fresh=False)).limits_of(alias)

    def stream_chat(
        self,
        prompt: Prompt,
        model: str,
        temperature: float | None,
        timeout: float,
        max_tokens: int | None = None,
        *,
        tools: Sequence[ToolSpec] = (),
        steps: Sequence[ToolExchange] = (),
    ) -> ModelStream:
        """Start the model call for ``prompt`` now; its answer streams from the result.
        ``tools`` are offered to the model; ``steps`` are the tool steps of the answer so
        far, which follow the prompt's messages."""
        request = wire.chat_request(prompt, model, temperature, max_tokens)
        if tools or steps:
            wire.add_tools(request, tools, steps)
        return ModelStream(self._stub.StreamChat(request, timeout=timeout))

    async def count_tokens(self, prompt: Prompt, model: str, timeout: float) -> int:
        """The input tokens of ``prompt`` with the tokenizer of ``model``'s first candidate;
        raises the ``ParleyError`` of a call that failed."""
        request = wire.count_tokens_request(prompt, model)
        try:
            counted = await self._stub.CountTokens(request, timeout=timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        return int(counted.input_tokens)

    async def complete(
        self,
        who: Principal,
        messages: Sequence[tuple[Role, str]],
        model: str,
        *,
        timeout: float,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> str:
        """The text of one unstreamed answer to ``messages``, asked for ``who`` (named on the
        call: background work runs outside the request that caused it). Raises the
        ``ParleyError`` llm-router sent."""
        request = wire.completion_request(messages, model, max_tokens, temperature)
        try:
            found = await self._stub.Chat(request, timeout=timeout, metadata=who.to_metadata())
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        return wire.answer_text(found)

    async def close(self) -> None:
        await self._channel.close()
