"""The steps of the tool loop: the calls a model stream asks for, and running them.

A model stream that ends with tool calls (``PendingCalls`` assembles them from their pieces)
makes a tool step: its calls run together (``ToolStep``; calls the model makes in one answer
cannot depend on each other's results, so they are independent), each within
``TOOL_TIMEOUT_SECONDS`` (and what is left of the loop's time), each output cut at
``TOOL_OUTPUT_MAX_CHARS``. A call that fails (an unknown tool, invalid arguments, a timeout,
an error of the tool) fails alone: its result says why, with a stable code, and the model
reads it in the next call. ``turn.py`` repeats steps until the model answers without calls,
at most ``TOOL_MAX_STEPS`` steps within ``TOOL_LOOP_SECONDS``.

Each call is a span (``execute_tool <name>``, OpenTelemetry's GenAI conventions) and is
counted: ``parley_tool_calls_total{tool,outcome}`` and ``parley_tool_seconds{tool}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, replace

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from parley_conversation.conversations import ToolActivity
from parley_conversation.events import ToolCallDelta
from parley_conversation.metrics import TOOL_CALLS, TOOL_SECONDS
from parley_conversation.tools import ToolContext, ToolError, ToolRegistry
from parley_runtime.guardrails import record, scan

log = logging.getLogger("parley.conversation.tools")
_tracer = trace.get_tracer("parley.conversation")

# Arguments are stored as the model sent them, up to this many characters.
MAX_STORED_ARGUMENTS = 20_000


@dataclass(frozen=True, slots=True)
class ToolLimits:
    """How far the loop may go: tool steps, seconds for the whole loop, and per call its
    seconds and the characters of its output."""

    max_steps: int = 10
    loop_seconds: float = 300.0
    call_seconds: float = 20.0
    output_chars: int = 8000


class PendingCalls:
    """The tool calls of one model stream, assembled from their pieces by index."""

    def __init__(self) -> None:
        self._ids: dict[int, str] = {}
        self._names: dict[int, str] = {}
        self._arguments: dict[int, list[str]] = {}

    def add(self, delta: ToolCallDelta) -> None:
        if delta.call_id:
            self._ids.setdefault(delta.index, delta.call_id)
        if delta.name:
            self._names.setdefault(delta.index, delta.name)
        self._arguments.setdefault(delta.index, []).append(delta.arguments_delta)

    def __bool__(self) -> bool:
        return bool(self._arguments)

    def calls(self, step: int) -> tuple[ToolActivity, ...]:
        """The calls, in the model's order, as activities of tool step ``step`` not yet run
        (a call the provider gave no id gets one: its result must answer an id)."""
        return tuple(
            ToolActivity(
                call_id=self._ids.get(index) or f"call_{step}_{index}",
                name=self._names.get(index, ""),
                arguments_json="".join(self._arguments[index])[:MAX_STORED_ARGUMENTS],
                step=step,
            )
            for index in sorted(self._arguments)
        )


def cut(output: str, limit: int) -> str:
    """``output`` within ``limit`` characters, saying so when it was cut."""
    if len(output) <= limit:
        return output
    return f"{output[:limit]}\n[the output was cut at {limit} of {len(output)} characters]"


async def run_call(
    registry: ToolRegistry,
    call: ToolActivity,
    context: ToolContext,
    timeout: float,
    output_chars: int,
) -> ToolActivity:
    """Run one call (validated first) and return it with its result or its error."""
    label = call.name if call.name in registry.names else "unknown"
    started = time.perf_counter()
    attributes: dict[str, str | int] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": call.name,
        "gen_ai.tool.call.id": call.call_id,
        "gen_ai.tool.type": "function",
        "parley.tool.step": call.step,
    }
    with _tracer.start_as_current_span(f"execute_tool {label}", attributes=attributes) as span:
        try:
            tool, arguments = registry.prepare(call.name, call.arguments_json)
            async with asyncio.timeout(timeout):
                output = await tool.run(arguments, context)
            done = replace(call, result=cut(output, output_chars))
        except ToolError as error:
            done = _failed(call, error.code, error.message)
        except TimeoutError:
            done = _failed(call, "tool_timeout", f"the tool did not answer within {timeout:g} s")
        except asyncio.CancelledError:
            TOOL_CALLS.labels(label, "cancelled").inc()
            raise
        except Exception:
            log.exception("a tool failed", extra={"tool": label})
            done = _failed(call, "tool_failed", "the tool failed unexpectedly")
        outcome = done.error_code if done.is_error else "ok"
        TOOL_CALLS.labels(label, outcome).inc()
        TOOL_SECONDS.labels(label).observe(time.perf_counter() - started)
        if done.is_error:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", done.error_code)
        for rule in scan(done.result):  # marked in the prompt (prompt.tool_result_text)
            record("tool_output_injection", rule, "marked", tool=label)
    return done


def _failed(call: ToolActivity, code: str, message: str) -> ToolActivity:
    return replace(call, result=message, is_error=True, error_code=code)


class ToolStep:
    """The calls of one tool step, started together; ``results`` yields each as it ends.
    ``cancel`` (a client stopping the answer) stops those still running."""

    def __init__(
        self,
        registry: ToolRegistry,
        calls: Iterable[ToolActivity],
        context: ToolContext,
        timeout: float,
        output_chars: int,
    ) -> None:
        self._tasks = [
            asyncio.ensure_future(run_call(registry, call, context, timeout, output_chars))
            for call in calls
        ]

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def results(self) -> AsyncGenerator[ToolActivity, None]:
        try:
            for finished in asyncio.as_completed(self._tasks):
                yield await finished
        finally:
            self.cancel()  # no-op for the calls that ended; stops the rest when left early
