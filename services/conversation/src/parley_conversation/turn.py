"""One chat turn, from the stored user message to the stored answer.

Order of events: ``accepted`` (the user message is stored), ``citations`` (when the
conversation's knowledge base gave passages), ``delta``… (and ``tool_call``), ``usage``, then
exactly one terminal ``done`` or ``error``. Whatever happens after ``accepted`` the answer is
stored: COMPLETE, FAILED with its partial text and error code, or CANCELLED with its partial
text when the caller goes away (that write is shielded from the cancellation).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc
from prometheus_client import Counter, Histogram

from parley.common.v1 import common_pb2
from parley.conversation.v1 import conversation_pb2 as pb
from parley.llm_router.v1 import llm_router_pb2 as llm
from parley_conversation import wire
from parley_conversation.adapters.peers import Peers
from parley_conversation.adapters.store import (
    ASSISTANT,
    CANCELLED,
    COMPLETE,
    FAILED,
    IN_PROGRESS,
    AssistantResult,
    ConversationStore,
    TurnStart,
)
from parley_conversation.prompt import Turn, build_prompt
from parley_conversation.settings import Settings
from parley_runtime.errors import from_rpc_error

log = logging.getLogger("parley.conversation.turn")

TURNS = Counter("parley_turns_total", "Chat turns by outcome.", ["outcome"])
FIRST_DELTA = Histogram(
    "parley_turn_first_delta_seconds",
    "From the stored user message to the first answer text.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
HISTORY_WINDOW = 50
_FINISH = {
    llm.FINISH_REASON_STOP: "stop",
    llm.FINISH_REASON_LENGTH: "length",
    llm.FINISH_REASON_TOOL_CALLS: "tool_calls",
    llm.FINISH_REASON_CONTENT_FILTER: "content_filter",
    llm.FINISH_REASON_ERROR: "error",
    llm.FINISH_REASON_CANCELLED: "cancelled",
}
_ROLE = {"user": llm.ROLE_USER, "assistant": llm.ROLE_ASSISTANT, "system": llm.ROLE_SYSTEM}


def _error_event(code: str, message: str, retryable: bool, assistant_id: str) -> pb.TurnEvent:
    return pb.TurnEvent(
        error=pb.TurnError(
            error=common_pb2.StreamError(code=code, message=message, retryable=retryable),
            assistant_message_id=assistant_id,
        )
    )


class TurnRunner:
    """Runs turns against the store, retrieval and llm-router (see the module docstring)."""

    def __init__(self, store: ConversationStore, peers: Peers, settings: Settings) -> None:
        self.store = store
        self.peers = peers
        self.settings = settings

    async def run(self, start: TurnStart, model: str) -> AsyncIterator[pb.TurnEvent]:
        assistant = start.assistant
        yield pb.TurnEvent(
            accepted=pb.MessageAccepted(
                user_message_id=start.user.id,
                assistant_message_id=assistant.id if assistant else "",
                replayed=start.replayed,
            )
        )
        if start.replayed:
            yield self._replay(start)
            return
        assert assistant is not None
        async for event in self._answer(start, assistant.id, assistant.seq, model):
            yield event

    @staticmethod
    def _replay(start: TurnStart) -> pb.TurnEvent:
        """The stored outcome of a turn sent again with the same idempotency key."""
        answer = start.assistant
        if answer is None or answer.status == IN_PROGRESS:
            return _error_event(
                "turn_in_progress",
                "this message is still being answered; read the conversation shortly",
                True,
                answer.id if answer else "",
            )
        if answer.status == COMPLETE:
            return pb.TurnEvent(done=pb.TurnDone(message=wire.message(answer)))
        return _error_event(
            answer.error_code or answer.status,
            "this message was answered before, without success",
            True,
            answer.id,
        )

    async def _answer(
        self, start: TurnStart, assistant_id: str, seq: int, model: str
    ) -> AsyncIterator[pb.TurnEvent]:
        conversation = start.conversation
        question = start.user.content
        began = time.perf_counter()
        text: list[str] = []
        result: AssistantResult | None = None
        call: grpc.aio.UnaryStreamCall | None = None
        try:
            passages = []
            if conversation.knowledge_base_id:
                passages = await self.peers.search(
                    conversation.knowledge_base_id, question, self.settings.retrieval_top_k
                )
            rows = await self.store.history(conversation.id, start.user.seq, HISTORY_WINDOW)
            history = [
                Turn(r.role, r.content)
                for r in rows
                if r.status == COMPLETE or (r.role == ASSISTANT and r.content)
            ]
            prompt = build_prompt(history, question, passages, self.settings.context_token_budget)
            citations = tuple(wire.citation_dict(c) for c in prompt.cited)
            if citations:
                yield pb.TurnEvent(
                    citations=pb.CitationsEvent(citations=[wire.citation(c) for c in citations])
                )
            request = llm.ChatRequest(
                model=model or conversation.model,
                messages=[
                    llm.ChatMessage(role=_ROLE[role], content=[llm.ContentPart(text=body)])
                    for role, body in prompt.messages
                ],
                passages=[
                    llm.GroundingPassage(
                        marker=c.marker, text=c.passage.text, title=c.passage.title
                    )
                    for c in prompt.cited
                ],
            )
            if conversation.temperature is not None:
                request.temperature = conversation.temperature
            call = self.peers.stream_chat(request, self.settings.turn_timeout_seconds)
            served_by = ""
            async for event in call:
                if event.HasField("start"):
                    served_by = f"{event.start.provider}/{event.start.model}"
                kind = event.WhichOneof("event")
                if kind == "text_delta":
                    if not text:
                        FIRST_DELTA.observe(time.perf_counter() - began)
                    text.append(event.text_delta)
                    yield pb.TurnEvent(delta=pb.TextDelta(text=event.text_delta))
                elif kind == "tool_call_delta":
                    d = event.tool_call_delta
                    yield pb.TurnEvent(
                        tool_call=pb.ToolCallEvent(
                            call_id=d.id, name=d.name, arguments_json=d.arguments_delta
                        )
                    )
                elif kind == "finish":
                    usage = event.finish.usage
                    result = AssistantResult(
                        content="".join(text),
                        status=COMPLETE,
                        model=served_by,
                        input_tokens=usage.input_tokens,
                        output_tokens=usage.output_tokens,
                        cost_usd=usage.cost_usd,
                        usage_estimated=usage.estimated,
                        finish_reason=_FINISH.get(event.finish.finish_reason, "stop"),
                        citations=citations,
                    )
                elif kind == "error":
                    failure, usage = event.error.error, event.error.partial_usage
                    result = AssistantResult(
                        content="".join(text),
                        status=FAILED,
                        model=served_by,
                        input_tokens=usage.input_tokens,
                        output_tokens=usage.output_tokens,
                        cost_usd=usage.cost_usd,
                        usage_estimated=True,
                        finish_reason="error",
                        error_code=failure.code,
                        citations=citations,
                    )
                    stored = await self.store.finish_answer(assistant_id, result)
                    TURNS.labels("failed").inc()
                    yield _error_event(failure.code, failure.message, failure.retryable, stored.id)
                    return
            if result is None:
                result = AssistantResult(
                    content="".join(text),
                    status=FAILED,
                    model=served_by,
                    finish_reason="error",
                    error_code="stream_incomplete",
                    citations=citations,
                )
                stored = await self.store.finish_answer(assistant_id, result)
                TURNS.labels("failed").inc()
                yield _error_event(
                    "stream_incomplete", "the model's answer ended early", True, stored.id
                )
                return
            stored = await self.store.finish_answer(assistant_id, result)
            TURNS.labels("complete").inc()
            yield pb.TurnEvent(usage=pb.UsageEvent(usage=wire.message(stored).usage))
            yield pb.TurnEvent(done=pb.TurnDone(message=wire.message(stored)))
        except grpc.RpcError as error:
            failure_ = from_rpc_error(error)
            result = AssistantResult(
                content="".join(text),
                status=FAILED,
                finish_reason="error",
                error_code=failure_.code,
            )
            await self.store.finish_answer(assistant_id, result)
            TURNS.labels("failed").inc()
            retryable = failure_.status in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
            yield _error_event(failure_.code, failure_.message, retryable, assistant_id)
        except Exception:
            result = AssistantResult(
                content="".join(text), status=FAILED, finish_reason="error", error_code="internal"
            )
            await self.store.finish_answer(assistant_id, result)
            TURNS.labels("failed").inc()
            raise
        finally:
            if result is None:
                # The caller went away (or an unexpected error): stop the model and keep what
                # was produced. The write must survive this task's cancellation.
                if call is not None:
                    call.cancel()
                partial = AssistantResult(
                    content="".join(text),
                    status=CANCELLED,
                    finish_reason="cancelled",
                    error_code="cancelled",
                )
                TURNS.labels("cancelled").inc()
                write = asyncio.ensure_future(self.store.finish_answer(assistant_id, partial))
                try:
                    await asyncio.shield(write)
                except asyncio.CancelledError:
                    await write
