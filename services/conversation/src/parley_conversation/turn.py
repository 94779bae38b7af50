"""One chat turn, from the stored user message to the stored answer.

A turn is stored only once it can start (``TurnRunner.begin``): its model alias is one
llm-router serves, llm-router answers, and an idempotency key is not reused for another
message; otherwise the caller gets the error and nothing is written. The model call is
started before the turn is written (the prompt is built from what was read before), and the
turn is written once llm-router has taken the call, while the provider works on its first
token: the database's write is off the first token's path. A write that fails cancels the
call.

Order of events (``events.py``): ``Accepted`` (the user message is stored), ``CitationsFound``
(when the conversation's knowledge base gave passages), ``TextDelta``… (and, for each tool
step, ``ToolCall`` and ``ToolResult`` per call: when the model asks for tools they run and
the model is called again with their results, see ``tool_loop.py``), ``UsageReport``, then
exactly one terminal ``Done`` or ``TurnFailed``. The answer is built in
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
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

from opentelemetry import trace
from sqlalchemy import Connection

from parley_conversation.adapters.llm_router import LlmRouter, ModelStream
from parley_conversation.adapters.retrieval import Retrieval
from parley_conversation.adapters.store import ConversationStore
from parley_conversation.adapters.tasks import TaskStore
from parley_conversation.background import Task, TaskKind, TaskRequest, whole
from parley_conversation.context import budget_for, measured_scale
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
    ToolActivity,
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
    ToolCallDelta,
    ToolResult,
    TurnEvent,
    TurnFailed,
    UsageReport,
)
from parley_conversation.followups import SearchQuery, standalone_query
from parley_conversation.memory import Memories, Memory, may_state_facts
from parley_conversation.metrics import FIRST_DELTA, PROMPT_COUNTS, TURN_DURATION, TURNS
from parley_conversation.prompt import (
    ESTIMATE_SCALE,
    MAX_PASSAGE_CHARS,
    CitedPassage,
    Prompt,
    ToolExchange,
    Turn,
    build_prompt,
)
from parley_conversation.settings import Settings, shares_of
from parley_conversation.summaries import due
from parley_conversation.tool_loop import PendingCalls, ToolLimits, ToolStep
from parley_conversation.tools import ToolContext, ToolRegistry
from parley_runtime import telemetry
from parley_runtime.context import Principal, remaining_seconds
from parley_runtime.errors import ParleyError
from parley_runtime.guardrails import record, scan

log = logging.getLogger("parley.conversation.turn")
_tracer = trace.get_tracer("parley.conversation")

STREAM_INCOMPLETE = Failure("stream_incomplete", "the model's answer ended early", True)
# Stored on the answer; the caller gets the gRPC status INTERNAL instead of an event.
INTERNAL = Failure("internal", "internal error", False)
STILL_ANSWERING = Failure(
    "turn_in_progress", "this message is still being answered; read the conversation shortly", True
)
# Memories a turn recalls at most (the prompt keeps those its budget holds).
MEMORY_RECALL_LIMIT = 5
STOPPED = Failure(CANCELLED, "the answer was stopped on request; its text so far is kept", False)
# While no text arrives (nothing to save), how often the writer reads whether a client asked
# another replica to stop the answer.
CANCEL_CHECK_SECONDS = 1.0
# How long CancelAnswer waits for the answer to end (within the call's own deadline), and
# how often it reads the answer meanwhile when another replica writes it.
CANCEL_WAIT_SECONDS = 5.0
CANCEL_POLL_SECONDS = 0.05
TOOL_TIME_LIMIT = Failure(
    "tool_time_limit", "the answer's tool steps ran out of time; its text so far is kept", False
)
# Between the texts of two model calls of one answer (before and after a tool step).
STEP_BREAK = "\n\n"


def _step_limit(steps: int) -> Failure:
    return Failure(
        "tool_step_limit",
        f"the model asked for tools more than {steps} times; its text so far is kept",
        False,
    )


def _plus(a: Usage, b: Usage) -> Usage:
    return Usage(
        a.input_tokens + b.input_tokens,
        a.output_tokens + b.output_tokens,
        a.cost_usd + b.cost_usd,
        a.estimated or b.estimated,
    )


# The model call that goes on after a tool step: the same prompt, tools and settings, with
# the tool steps so far, and its deadline in seconds.
FollowUp = Callable[[Sequence[ToolExchange], float], ModelStream]


@dataclass(frozen=True, slots=True)
class ModelCall:
    """A model call started for a turn: the passages its prompt cites, its stream, and how
    it goes on after a tool step (``follow_up``; None when it offers no tools)."""

    cited: tuple[CitedPassage, ...]
    stream: ModelStream
    follow_up: FollowUp | None = None
    # What the turn searched with, and whether its history asks for a rolling summary.
    search_query: str = ""
    summary_due: bool = False

    def then(self, steps: Sequence[ToolExchange], timeout: float) -> asyncio.Future[ModelCall]:
        """The call after ``steps``, started, as a done future (as a turn holds its call)."""
        assert self.follow_up is not None
        future: asyncio.Future[ModelCall] = asyncio.get_running_loop().create_future()
        future.set_result(ModelCall(self.cited, self.follow_up(steps, timeout), self.follow_up))
        return future


@dataclass(frozen=True, slots=True)
class Begun:
    """A turn begun in the store (``start``) and, for a new answer, its model call as it
    starts (``call``; None on a replay, or when the answer builds its prompt itself), and
    who sent it (``who``: the memories it recalls and the work it leaves are theirs; None
    for a turn begun in the store alone, which leaves none)."""

    start: TurnStart
    call: asyncio.Future[ModelCall] | None = None
    who: Principal | None = None


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
    # The tool calls so far, in the order the model made them; ``tool_changes`` counts the
    # changes, for the saves of an answer in progress.
    tool_activity: list[ToolActivity] = field(default_factory=list)
    tool_changes: int = 0
    # What the passages were searched with; whether the history asks for a summary.
    search_query: str = ""
    summary_due: bool = False

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

    def add_usage(self, usage: Usage) -> None:
        """Count the usage of a model call that ended in tool calls."""
        self.usage = _plus(self.usage, usage)

    def cite(self, passage: Passage) -> CitedPassage:
        """Add a passage a tool found to the citations, under the next marker (or the one
        it has, when the answer cites it already)."""
        for known in self.citations:
            if (known.document_id, known.chunk_id) == (passage.document_id, passage.chunk_id):
                return CitedPassage(known.marker, passage, scan(passage.text[:MAX_PASSAGE_CHARS]))
        cited = CitedPassage(
            str(len(self.citations) + 1), passage, scan(passage.text[:MAX_PASSAGE_CHARS])
        )
        for rule in cited.flags:
            record(
                "passage_injection",
                rule,
                "marked",
                marker=cited.marker,
                document_id=passage.document_id,
            )
        self.citations += (cited.citation(),)
        return cited

    def start_calls(self, calls: Sequence[ToolActivity]) -> None:
        self.tool_activity.extend(calls)
        self.tool_changes += 1

    def end_call(self, done: ToolActivity) -> None:
        for index, call in enumerate(self.tool_activity):
            if call.step == done.step and call.call_id == done.call_id:
                self.tool_activity[index] = done
        self.tool_changes += 1

    def step_calls(self, step: int) -> tuple[ToolActivity, ...]:
        return tuple(call for call in self.tool_activity if call.step == step)

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
            tool_activity=tuple(self.tool_activity),
            search_query=self.search_query,
        )


@dataclass
class RunningAnswer:
    """An answer this replica is writing: what stops it, and when it is stored."""

    answer: Answer
    call: asyncio.Future[ModelCall] | None
    stored: asyncio.Event = field(default_factory=asyncio.Event)
    # The tool step running, if any.
    step: ToolStep | None = None

    def stop(self) -> None:
        """Stop the answer on a client's request: its model call is cancelled (down to the
        provider's stream), or its tool step, and the turn stores it CANCELLED."""
        if not self.answer.cancel():
            return
        if self.call is not None:
            _abandon(self.call)
        if self.step is not None:
            self.step.cancel()


class TurnRunner:
    """Runs turns against the store, retrieval and llm-router (see the module docstring)."""

    def __init__(
        self,
        store: ConversationStore,
        router: LlmRouter,
        retrieval: Retrieval,
        settings: Settings,
        tools: ToolRegistry | None = None,
        *,
        memories: Memories | None = None,
        tasks: TaskStore | None = None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.router = router
        self.retrieval = retrieval
        self.settings = settings
        self.shares = shares_of(settings)
        # The users' long-term memory (none: turns recall nothing, extract nothing), and the
        # background work a stored turn leaves (none: it leaves none), ``wake`` telling this
        # replica's worker.
        self.memories = memories
        self.tasks = tasks
        self.wake = wake
        # The tools turns may offer (none without a registry), and the loop's limits.
        self.tools = tools or ToolRegistry(())
        self.tool_limits = ToolLimits(
            max_steps=settings.tool_max_steps,
            loop_seconds=settings.tool_loop_seconds,
            call_seconds=settings.tool_timeout_seconds,
            output_chars=settings.tool_output_max_chars,
        )
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
        found = await self.store.find_turn(
            who, cid, key, fingerprint, self.settings.history_max_messages
        )
        if isinstance(found, TurnStart):
            return Begun(found)
        await self.router.check_model(model or found.conversation.model)
        call = asyncio.ensure_future(self._call_model(who, found, content, model))
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
        return Begun(start, call, who)

    async def begin_regeneration(self, who: Principal, cid: str, model: str) -> Begun:
        """Open a new answer to the conversation's last user message, once the model alias is
        known and llm-router answers (as ``begin``): until then the last answer stays."""
        conversation = await self.store.get(who, cid)
        await self.router.check_model(model or conversation.model)
        return Begun(await self.store.begin_regeneration(who, cid), None, who)

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
        answer = self._answer(start, assistant.id, model, begun.call, begun.who)
        async with aclosing(answer) as events:
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
        who: Principal | None,
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
                opening = await self.store.history(
                    start.conversation, start.user.seq, self.settings.history_max_messages
                )
                if answer.cancelled:
                    raise asyncio.CancelledError  # stopped before its model call began
                question = start.user.content
                call = asyncio.ensure_future(self._call_model(who, opening, question, model))
                running.call = call
            model_call = await call
            answer.search_query = model_call.search_query
            answer.summary_due = model_call.summary_due
            answer.citations = tuple(item.citation() for item in model_call.cited)
            if answer.citations:
                yield CitationsFound(answer.citations)
            limits = self.tool_limits
            until = asyncio.get_running_loop().time() + limits.loop_seconds
            steps: list[ToolExchange] = []
            # One model call per pass; a call that ends asking for tools makes a tool step,
            # and the next pass reads the model's call after it (tool_loop.py).
            while True:
                pending = PendingCalls()
                said = len(answer.parts)
                asks_for_tools = False
                # Leaving this block any way but the stream's end cancels the model call.
                async with aclosing(aiter(model_call.stream)) as events:
                    async for event in events:
                        if isinstance(event, TextDelta):
                            if not answer.parts:
                                FIRST_DELTA.observe(
                                    time.perf_counter() - began, telemetry.exemplar()
                                )
                            elif steps and len(answer.parts) == said:
                                event = TextDelta(STEP_BREAK + event.text)
                            answer.add_text(event.text)
                            yield event
                        elif isinstance(event, ToolCallDelta):
                            pending.add(event)
                        elif isinstance(event, ModelStarted):
                            answer.served_by = event.served_by
                        elif isinstance(event, ModelFinished):
                            if pending and model_call.follow_up is not None:
                                answer.add_usage(event.usage)
                                asks_for_tools = True
                            else:
                                answer.finish(event.reason, _plus(answer.usage, event.usage))
                        else:
                            answer.fail(event.failure, _plus(answer.usage, event.usage))
                            break
                if not asks_for_tools:
                    break
                if len(steps) == limits.max_steps:
                    answer.fail(_step_limit(limits.max_steps))
                    break
                left = until - asyncio.get_running_loop().time()
                if left <= 0:
                    answer.fail(TOOL_TIME_LIMIT)
                    break
                step = len(steps) + 1
                calls = pending.calls(step)
                answer.start_calls(calls)
                for asked in calls:
                    yield ToolCall(asked.call_id, asked.name, asked.arguments_json)
                cited = len(answer.citations)
                running.step = ToolStep(
                    self.tools,
                    calls,
                    ToolContext(start.conversation, answer.cite),
                    min(limits.call_seconds, left),
                    limits.output_chars,
                )
                async with aclosing(running.step.results()) as results:
                    async for done in results:
                        answer.end_call(done)
                        yield ToolResult(
                            done.call_id, done.name, done.result, done.is_error, done.error_code
                        )
                running.step = None
                if answer.cancelled:
                    raise asyncio.CancelledError  # stopped while its tools ran
                if len(answer.citations) > cited:
                    yield CitationsFound(answer.citations[cited:])
                text = "".join(answer.parts[said:]).removeprefix(STEP_BREAK)
                steps.append(ToolExchange(text, answer.step_calls(step)))
                left = until - asyncio.get_running_loop().time()
                if left <= 0:
                    answer.fail(TOOL_TIME_LIMIT)
                    break
                call = running.call = model_call.then(
                    steps, min(self.settings.turn_timeout_seconds, left)
                )
                model_call = call.result()
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
                outcome = answer.outcome()
                after = self._after(who, start, assistant_id, answer, outcome)
                stored = await self._end(assistant_id, outcome, who, after)
                TURN_DURATION.labels(outcome.status.value).observe(
                    time.perf_counter() - began, telemetry.exemplar()
                )
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
        saved_parts, saved_tools, saved_at = 0, 0, loop.time()
        checked_at = saved_at
        while True:
            try:
                await asyncio.wait_for(ended.wait(), self.settings.turn_flush_seconds)
                return
            except TimeoutError:
                pass
            parts, tools = len(answer.parts), answer.tool_changes
            now = loop.time()
            try:
                if parts != saved_parts or tools != saved_tools or now - saved_at >= heartbeat:
                    state = await self.store.save_progress(
                        assistant_id,
                        "".join(answer.parts),
                        # Tool activity so far (when there is some), so an answer closed as
                        # interrupted keeps it.
                        list(answer.tool_activity) if tools else None,
                    )
                    saved_parts, saved_tools, saved_at = parts, tools, now
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

    async def _call_model(
        self, who: Principal | None, opening: Opening, question: str, model: str
    ) -> ModelCall:
        """Build the prompt within the model's budget (``context.py``): the rolling summary,
        the user's memories, the knowledge base's passages for the question made standalone
        (``followups.py``), the history that fits; then start the model call."""
        conversation = opening.conversation
        alias = model or conversation.model
        budget = budget_for(await self.router.limits(alias), self.shares)
        search: Awaitable[tuple[SearchQuery, list[Passage]]] | None = None
        if conversation.knowledge_base_id:
            search = self._search(who, opening, question)
        recall: Awaitable[list[Memory]] | None = None
        if who is not None and self.memories is not None and conversation.memory_enabled:
            recall = self.memories.recall(who, question, MEMORY_RECALL_LIMIT)
        query: SearchQuery | None = None
        passages: list[Passage] = []
        memories: list[Memory] = []
        if search is not None and recall is not None:
            (query, passages), memories = await asyncio.gather(search, recall)
        elif search is not None:
            query, passages = await search
        elif recall is not None:
            memories = await recall
        history = [Turn(role, text) for role, text in opening.history]
        summary = opening.summary.content if opening.summary is not None else ""

        def build(scale: float) -> Prompt:
            return build_prompt(
                history,
                question,
                passages,
                budget,
                summary=summary,
                memories=memories,
                scale=scale,
            )

        with telemetry.span(_tracer, "build prompt", {"parley.prompt.passages": len(passages)}):
            prompt = build(ESTIMATE_SCALE)
        if prompt.bound > budget.prompt:
            # It may not fit: llm-router counts it once, exactly, and it is trimmed by what
            # the count measured (by the bound itself when the count fails).
            PROMPT_COUNTS.inc()
            try:
                exact = await self.router.count_tokens(
                    prompt, alias, self.settings.count_tokens_timeout_seconds
                )
            except ParleyError:
                prompt = build(1.0)
            else:
                if exact > budget.prompt:
                    prompt = build(measured_scale(exact, prompt.bound))
        for item in prompt.cited:
            for rule in item.flags:  # marked in the prompt, not dropped (prompt.py)
                record(
                    "passage_injection",
                    rule,
                    "marked",
                    marker=item.marker,
                    document_id=item.passage.document_id,
                )
        summary_due = due(
            prompt.history_left_out,
            prompt.history_tokens,
            prompt.history_room,
            len(history),
            self.settings.history_max_messages,
        )
        tools = self.tools.offered(conversation)
        stream = self.router.stream_chat(
            prompt,
            alias,
            conversation.temperature,
            self.settings.turn_timeout_seconds,
            budget.answer,
            tools=tools,
        )

        def follow_up(steps: Sequence[ToolExchange], timeout: float) -> ModelStream:
            return self.router.stream_chat(
                prompt,
                alias,
                conversation.temperature,
                timeout,
                budget.answer,
                tools=tools,
                steps=steps,
            )

        return ModelCall(
            prompt.cited,
            stream,
            follow_up if tools else None,
            query.text if query is not None else "",
            summary_due,
        )

    async def _search(
        self, who: Principal | None, opening: Opening, question: str
    ) -> tuple[SearchQuery, list[Passage]]:
        """The knowledge base's passages for ``question``, made standalone first when the
        turn has history (``followups.py``); the query used is on the turn's span."""
        kb = opening.conversation.knowledge_base_id
        if who is None or not opening.history:
            query = SearchQuery(question, "first" if not opening.history else "kept")
        else:
            query = await standalone_query(
                self.router,
                who,
                opening.history,
                question,
                self.settings.rewrite_model,
                self.settings.rewrite_timeout_seconds,
            )
        span = trace.get_current_span()
        span.set_attribute("parley.retrieval.query", query.text)
        span.set_attribute("parley.retrieval.query_source", query.how)
        passages = await self.retrieval.search(kb, query.text, self.settings.retrieval_top_k)
        return query, passages

    def _after(
        self,
        who: Principal | None,
        start: TurnStart,
        assistant_id: str,
        answer: Answer,
        outcome: Outcome,
    ) -> list[TaskRequest]:
        """The background work a stored turn leaves: a rolling summary when its history
        asked for one, a title after a first complete answer to a conversation the client
        did not name, the facts to remember from a complete answer when memory is on."""
        if who is None or self.tasks is None:
            return []
        cid = start.conversation.id
        work = []
        if answer.summary_due:
            work.append(TaskRequest(TaskKind.SUMMARY, cid))
        if outcome.status == Status.COMPLETE:
            if start.conversation.title_auto and start.user.seq == 1:
                work.append(TaskRequest(TaskKind.TITLE, cid))
            if (
                self.memories is not None
                and start.conversation.memory_enabled
                and may_state_facts(start.user.content)
            ):
                work.append(TaskRequest(TaskKind.MEMORY, cid, assistant_id))
        return work

    async def remember(self, task: Task) -> None:
        """Run a ``memory`` task: keep the facts of the exchange the task names."""
        if self.memories is None or task.message_id is None:
            return
        exchange = await self.store.exchange(task.who, task.conversation_id, task.message_id)
        if exchange is not None:
            user, answer = exchange
            await self.memories.extract_and_store(task.who, task.conversation_id, user, answer)

    async def _end(
        self,
        assistant_id: str,
        outcome: Outcome,
        who: Principal | None = None,
        after: Sequence[TaskRequest] = (),
    ) -> Message:
        """Count and store how the answer ended, with the background work it leaves (queued
        in the same transaction: a crash loses neither). The write must survive the
        caller's cancellation, which is one of the ways a turn ends."""
        TURNS.labels(outcome.status.value).inc()
        then = None
        if after and who is not None and self.tasks is not None:
            tasks = self.tasks

            def then(conn: Connection) -> None:
                tasks.add(conn, who, after)

        stored = await whole(self.store.finish_answer(assistant_id, outcome, then))
        if then is not None and self.wake is not None:
            self.wake()
        return stored
