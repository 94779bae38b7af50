"""What streams during a turn: from the model (through llm-router) and to the caller.

``TextDelta`` travels both ways unchanged. A model stream is ``ModelStarted`` (who answers),
then text and the pieces of its tool calls (``ToolCallDelta``), then one ``ModelFinished`` or
``ModelFailed``; it may also just stop. A turn streams ``Accepted``, ``CitationsFound`` (when
passages were cited), text, and for each tool step a ``ToolCall`` per call the model made
(whole, as it runs) and a ``ToolResult`` per call as it ends (``CitationsFound`` again when a
tool found passages), then ``UsageReport`` and exactly one ``Done`` or ``TurnFailed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley_conversation.conversations import Citation, FinishReason, Message, Usage


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a turn failed, as the caller sees it: a stable code and a safe message."""

    code: str
    message: str
    retryable: bool


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call the model makes: pieces of one call share ``index``; the first
    carries its id and name, the ``arguments_delta`` pieces concatenate to its JSON text."""

    index: int
    call_id: str
    name: str
    arguments_delta: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the model made, whole, as Parley runs it."""

    call_id: str
    name: str
    arguments_json: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    """How a tool call ended: its result as the model gets it, or why it failed
    (``error_code``, with ``is_error``)."""

    call_id: str
    name: str
    result: str
    is_error: bool = False
    error_code: str = ""


@dataclass(frozen=True, slots=True)
class ModelStarted:
    """The model stream began; ``served_by`` is "provider/model"."""

    served_by: str


@dataclass(frozen=True, slots=True)
class ModelFinished:
    """The model ended its answer."""

    reason: FinishReason
    usage: Usage


@dataclass(frozen=True, slots=True)
class ModelFailed:
    """The model stream failed after it started; ``usage`` is what was consumed."""

    failure: Failure
    usage: Usage


ModelEvent = TextDelta | ToolCallDelta | ModelStarted | ModelFinished | ModelFailed


@dataclass(frozen=True, slots=True)
class Accepted:
    """The user message is stored and the answer has an id."""

    user_message_id: str
    assistant_message_id: str
    replayed: bool


@dataclass(frozen=True, slots=True)
class CitationsFound:
    """The passages the prompt carries, with the markers the answer cites."""

    citations: tuple[Citation, ...]


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Tokens and cost of the turn's model calls (one per tool step, and the answer)."""

    usage: Usage


@dataclass(frozen=True, slots=True)
class Done:
    """The answer is complete and stored."""

    message: Message


@dataclass(frozen=True, slots=True)
class TurnFailed:
    """The turn ended without a complete answer; what was produced is stored."""

    failure: Failure
    assistant_message_id: str


TurnEvent = (
    Accepted | CitationsFound | TextDelta | ToolCall | ToolResult | UsageReport | Done | TurnFailed
)
