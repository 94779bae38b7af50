"""One chat turn, from the stored user message to the stored answer.

A turn is stored only once it can start (``TurnRunner.begin``): its model alias is one
llm-router serves, llm-router answers, and an idempotency key is not reused for another
message; otherwise the caller gets the error and nothing is written. The model call is
started before the turn is written (the prompt is built from what was read before), and the
turn is written once llm-router has taken the call, while the provider works on its first
token: the database's write is off the first token's path. A write that fails cancels the
call.

Order of events (``events.py``): ``Accepted`` (the user message is stored), ``CitationsFound``
(when the conversation's knowledge base gave passages), ``TextDelta``… (and ``ToolCall``),
``UsageReport``, then exactly one terminal ``Done`` or ``TurnFailed``. The answer is built in
an ``Answer``; whatever way the turn ends after ``Accepted`` (the model finishes, fails, stops
early, llm-router refuses the call, a bug, or the caller goes away) it ends in one place, which
stores the outcome (COMPLETE, FAILED with its partial text and error code, or CANCELLED with
its partial text; the write is shielded from the caller's cancellation) and counts it once.

While the answer streams, its text so far is saved every ``TURN_FLUSH_SECONDS`` (when it
grew) and its lease renewed, so a process that dies mid-answer loses at most that window,
and the answer is closed as interrupted by whichever replica sees its lease run out.

A client may stop an answer (``TurnRunner.cancel``, the CancelAnswer RPC) through any
replica: the request is recorded on the answer's row, and the replica writing it stops at
once when it is this one, else when its next save (or, while no text arrives, its next check
of the row, every ``CANCEL_CHECK_SECONDS``) finds the request. Stopping cancels the model
call down to the provider's stream; the answer is stored CANCELLED with its text so far, and
the turn's stream ends with an error event of code ``cancelled``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field

from parley_conversation.adapters.llm_router import LlmRouter, ModelStream
from parley_conversation.adapters.retrieval import Retrieval
from parley_conversation.adapters.store import ConversationStore
from parley_conversation.conversations import (
    CANCELLED,
    AnswerState,
    Citation,
    FinishReason,
    Message,
    Opening,
    Outcome,
    Passage,
    Status,
    TurnStart,
    Usage,
    request_fingerprint,
)
from parley_conversation.events import (
    Accepted,
    CitationsFound,
    Done,
    Failure,
    ModelFinished,
    ModelStarted,
    TextDelta,
    ToolCall,
    TurnEvent,
    TurnFailed,
    UsageReport,
)
from parley_conversation.metrics import FIRST_DELTA, TURNS
from parley_conversation.prompt import CitedPassage, Turn, build_prompt
from parley_conversation.settings import Settings
from parley_runtime.context import Principal, remaining_seconds
from parley_runtime.errors import ParleyError
from parley_runtime.guardrails import record

log = logging.getLogger("parley.conversation.turn")

HISTORY_WINDOW = 50
STREAM_INCOMPLETE = Failure("stream_incomplete", "the model's answer ended early", True)
# Stored on the answer; the caller gets the gRPC status INTERNAL instead of an event.
INTERNAL = Failure("internal", "internal error", False)
STILL_ANSWERING = Failure(
    "turn_in_progress", "this message is still being answered; read the conversation shortly", True
)
STOPPED = Failure(CANCELLED, "the answer was stopped on request; its text so far is kept", False)
# While no text arrives (nothing to save), how often the writer reads whether a client asked
# another replica to stop the answer.
CANCEL_CHECK_SECONDS = 1.0
# How long CancelAnswer waits for the answer to end (within the call's own deadline), and
# how often it reads the answer meanwhile when another replica writes it.
CANCEL_WAIT_SECONDS = 5.0
CANCEL_POLL_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class ModelCall:
    """A model call started for a turn: the passages its prompt cites, and its stream."""

    cited: tuple[CitedPassage, ...]
    stream: ModelStream


@dataclass(frozen=True, slots=True)
class Begun:
    """A turn begun in the store (``start``) and, for a new answer, its model call as it
    starts (``call``; None on a replay, or when the answer builds its prompt itself)."""

    start: TurnStart
    call: asyncio.Future[ModelCall] | None = None


def _abandon(call: asyncio.Future[ModelCall]) -> None:
    """Stop a model call that will not be read: before it started, or once it has."""
    if not call.done():
        call.cancel()
    elif not call.cancelled() and call.exception() is None:
        call.result().stream.cancel()


@dataclass
class Answer:
    """The assistant's answer as it is built: text, who answers, usage, and how it ended.

    The first ending recorded (``finish``, ``fail`` or ``cancel``) wins; an answer with none
    was cancelled too (its caller went away).
    """

    citations: tuple[Citation, ...] = ()
    served_by: str = ""
    usage: Usage = field(default_factory=Usage)
    finish_reason: FinishReason | None = None
    failure: Failure | None = None
    parts: list[str] = field(default_factory=list)
    # Stopped on a client's request (CancelAnswer).
    cancelled: bool = False

    @property
    def ended(self) -> bool:
        return self.finish_reason is not None or self.failure is not None or self.cancelled

    def cancel(self) -> bool:
        """Record a client's request to stop; False when the answer had already ended."""
        if self.ended:
            return False
        self.cancelled = True
        return True

    def add_text(self, text: str) -> None:
        self.parts.append(text)

    def finish(self, reason: FinishReason, usage: Usage) -> None:
        if not self.ended:
            self.finish_reason, self.usage = reason, usage

    def fail(self, failure: Failure, usage: Usage | None = None) -> None:
        if not self.ended:
            self.failure = failure
            if usage is not None:
                self.usage = usage

    def outcome(self) -> Outcome:
        """The answer as it is stored."""
        if self.failure is not None:
            status, reason, code = Status.FAILED, FinishReason.ERROR, self.failure.code
        elif self.finish_reason is not None:
            status, reason, code = Status.COMPLETE, self.finish_reason, ""
        else:
            status, reason, code = Status.CANCELLED, FinishReason.CANCELLED, CANCELLED
        return Outcome(
            status=status,
            content="".join(self.parts),
            finish_reason=reason,
            model=self.served_by,
            usage=self.usage,
            error_code=code,
            citations=self.citations,
        )


@dataclass
class RunningAnswer:
    """An answer this replica is writing: what stops it, and when it is stored."""

    answer: Answer
    call: asyncio.Future[ModelCall] | None
    stored: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        """Stop the answer on a client's request: its model call is cancelled (down to the
        provider's stream), and the turn stores it CANCELLED."""
        if self.answer.cancel() and self.call is not None:
            _abandon(self.call)


class TurnRunner:
    """Runs turns against the store, retrieval and llm-router (see the module docstring)."""

    def __init__(
        self,
        store: ConversationStore,
        router: LlmRouter,
        retrieval: Retrieval,
        settings: Settings,
    ) -> None:
        self.store = store
        self.router = router
        self.retrieval = retrieval
        self.settings = settings
        self._keepers: set[asyncio.Task[None]] = set()  # the event loop holds tasks weakly
        # The answers this replica is writing, by message id.
        self._running: dict[str, RunningAnswer] = {}

    async def begin(
        self, who: Principal, cid: str, content: str, key: str | None, model: str
    ) -> Begun:
        """Store a new turn and start its model call, or find the turn ``key`` began (to
        replay). Nothing is stored for a turn that cannot start: an unknown model alias
        (``model`` overrides the conversation's) is INVALID_ARGUMENT, an llm-router that does
        not answer UNAVAILABLE; a key used before for another message is INVALID_ARGUMENT."""
        fingerprint = request_fingerprint(content, model) if key else None
        found = await self.store.find_turn(who, cid, key, fingerprint, HISTORY_WINDOW)
        if isinstance(found, TurnStart):
            return Begun(found)
        await self.router.check_model(model or found.conversation.model)
        call = asyncio.ensure_future(self._call_model(found, content, model))
        try:
            # Taken by llm-router (a round trip, not the model's first token) before it is
            # stored: a router that went away since check_model costs the send nothing.
            await (await call).stream.accepted()
            start = await self.store.begin_turn(who, cid, content, key, fingerprint)
        except BaseException:
            _abandon(call)
            raise
        if start.replayed:  # another request took the key a moment ago
            _abandon(call)
            return Begun(start)
        return Begun(start, call)

    async def begin_regeneration(self, who: Principal, cid: str, model: str) -> Begun:
        """Open a new answer to the conversation's last user message, once the model alias is
        known and llm-router answers (as ``begin``): until then the last answer stays."""
        conversation = await self.store.get(who, cid)
        await self.router.check_model(model or conversation.model)
        return Begun(await self.store.begin_regeneration(who, cid))

    async def cancel(self, who: Principal, cid: str, message_id: str) -> Message:
        """Stop an answer of the caller's conversation, whichever replica writes it (see the
        module docstring), and return it once it has ended, or as it stands when waiting
        longer would pass ``CANCEL_WAIT_SECONDS`` or the call's deadline."""
        message = await self.store.request_cancel(who, cid, message_id)
        if message.status != Status.IN_PROGRESS:
            return message
        wait = CANCEL_WAIT_SECONDS
        left = remaining_seconds()
        if left is not None:
            wait = min(wait, left - 0.25)  # leave time to answer within the deadline
        running = self._running.get(message_id)
        if running is not None:
            running.stop()
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    await running.stored.wait()
            except TimeoutError:
                pass
            return await self.store.message(who, cid, message_id)
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while loop.time() < until:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            message = await self.store.message(who, cid, message_id)
            if message.status != Status.IN_PROGRESS:
                break
        return message

    async def run(self, begun: Begun, model: str) -> AsyncGenerator[TurnEvent, None]:
        """The events of a turn begun in the store; ``model`` overrides the conversation's."""
        start, assistant = begun.start, begun.start.assistant
        if start.replayed or assistant is None:
            yield Accepted(start.user.id, assistant.id if assistant else "", start.replayed)
            yield self._replay(assistant)
            return
        # Closing this stream early closes the answer's too, which then ends as cancelled.
        async with aclosing(self._answer(start, assistant.id, model, begun.call)) as events:
            async for event in events:
                yield event

    @staticmethod
    def _replay(answer: Message | None) -> Done | TurnFailed:
        """The stored outcome of a turn sent again with the same idempotency key."""
        if answer is None or answer.status == Status.IN_PROGRESS:
            return TurnFailed(STILL_ANSWERING, answer.id if answer else "")
        if answer.status == Status.COMPLETE:
            return Done(answer)
        failure = Failure(
            answer.error_code or answer.status.value,
            "this message was answered before, without success",
            True,
        )
        return TurnFailed(failure, answer.id)

    async def _answer(
        self,
        start: TurnStart,
        assistant_id: str,
        model: str,
        call: asyncio.Future[ModelCall] | None,
    ) -> AsyncGenerator[TurnEvent, None]:
        began = time.perf_counter()
        answer = Answer()
        ended = asyncio.Event()
        running = self._running[assistant_id] = RunningAnswer(answer, call)
        keeper = asyncio.create_task(self._keep_saved(assistant_id, running, ended))
        self._keepers.add(keeper)
        keeper.add_done_callback(self._keepers.discard)
        try:
            yield Accepted(start.user.id, assistant_id, False)
            if call is None:
                history = await self.store.history(
                    start.conversation.id, start.user.seq, HISTORY_WINDOW
                )
                if answer.cancelled:
                    raise asyncio.CancelledError  # stopped before its model call began
                opening = Opening(start.conversation, history)
                call = asyncio.ensure_future(self._call_model(opening, start.user.content, model))
                running.call = call
            model_call = await call
            stream = model_call.stream
            answer.citations = tuple(item.citation() for item in model_call.cited)
            if answer.citations:
                yield CitationsFound(answer.citations)
            # Leaving this block any way but the stream's end cancels the model call.
            async with aclosing(aiter(stream)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        if not answer.parts:
                            FIRST_DELTA.observe(time.perf_counter() - began)
                        answer.add_text(event.text)
                        yield event
                    elif isinstance(event, ToolCall):
                        yield event
                    elif isinstance(event, ModelStarted):
                        answer.served_by = event.served_by
                    elif isinstance(event, ModelFinished):
                        answer.finish(event.reason, event.usage)
                    else:
                        answer.fail(event.failure, event.usage)
                        break
            # No-op when the model finished or failed: only a stream that just stopped is left.
            answer.fail(STREAM_INCOMPLETE)
        except ParleyError as refused:
            answer.fail(Failure(refused.code, refused.message, refused.retryable))
        except asyncio.CancelledError:
            # Stopping an answer cancels its model call, which surfaces here; the caller
            # going away cancels this task itself, and that goes on.
            task = asyncio.current_task()
            if not answer.cancelled or (task is not None and task.cancelling()):
                raise
        except Exception:
            answer.fail(INTERNAL)
            raise
        finally:
            # Reached however the turn ends, cancellation included (then the answer has no
            # ending recorded, and is stored as cancelled).
            if call is not None:
                _abandon(call)  # no-op once its stream was read to its end
            ended.set()  # the keeper ends once its save in flight, if any, is done
            try:
                stored = await self._end(assistant_id, answer.outcome())
            finally:
                running.stored.set()
                del self._running[assistant_id]
        if answer.cancelled:
            yield TurnFailed(STOPPED, stored.id)
        elif answer.failure is None:
            yield UsageReport(stored.usage)
            yield Done(stored)
        else:
            yield TurnFailed(answer.failure, stored.id)

    async def _keep_saved(
        self, assistant_id: str, running: RunningAnswer, ended: asyncio.Event
    ) -> None:
        """Save the answer's text while it grows and renew its lease, until it ends; stop
        it when a save or check finds that a client asked to. It ends on its own once
        ``ended`` is set: a save is never cut in the middle, and a late one changes nothing
        (only an answer in progress takes it)."""
        loop = asyncio.get_running_loop()
        answer = running.answer
        heartbeat = self.settings.turn_lease_seconds / 3
        saved_parts, saved_at = 0, loop.time()
        checked_at = saved_at
        while True:
            try:
                await asyncio.wait_for(ended.wait(), self.settings.turn_flush_seconds)
                return
            except TimeoutError:
                pass
            parts = len(answer.parts)
            now = loop.time()
            try:
                if parts != saved_parts or now - saved_at >= heartbeat:
                    state = await self.store.save_progress(assistant_id, "".join(answer.parts))
                    saved_parts, saved_at = parts, now
                elif now - checked_at >= CANCEL_CHECK_SECONDS:
                    state = await self.store.answer_state(assistant_id)
                else:
                    continue
                checked_at = now
            except Exception:
                # The final write still stores the answer; only the window is at risk.
                log.warning("could not save an answer in progress", exc_info=True)
                continue
            if state == AnswerState.CANCEL_REQUESTED:
                running.stop()
                return
            if state == AnswerState.ENDED:
                return

    async def _call_model(self, opening: Opening, question: str, model: str) -> ModelCall:
        """Build the prompt (with the knowledge base's passages, when the conversation has
        one) and start the model call."""
        conversation = opening.conversation
        passages: list[Passage] = []
        if conversation.knowledge_base_id:
            passages = await self.retrieval.search(
                conversation.knowledge_base_id, question, self.settings.retrieval_top_k
            )
        history = [Turn(role, text) for role, text in opening.history]
        prompt = build_prompt(history, question, passages, self.settings.context_token_budget)
        for item in prompt.cited:
            for rule in item.flags:  # marked in the prompt, not dropped (prompt.py)
                record(
                    "passage_injection",
                    rule,
                    "marked",
                    marker=item.marker,
                    document_id=item.passage.document_id,
                )
        stream = self.router.stream_chat(
            prompt,
            model or conversation.model,
            conversation.temperature,
            self.settings.turn_timeout_seconds,
        )
        return ModelCall(prompt.cited, stream)

    async def _end(self, assistant_id: str, outcome: Outcome) -> Message:
        """Count and store how the answer ended. The write must survive the caller's
        cancellation, which is one of the ways a turn ends."""
        TURNS.labels(outcome.status.value).inc()
        write = asyncio.ensure_future(self.store.finish_answer(assistant_id, outcome))
        try:
            return await asyncio.shield(write)
        except asyncio.CancelledError:
            await write
            raise
