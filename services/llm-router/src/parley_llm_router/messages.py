"""The router's own model of a chat request and its streamed answer.

Providers translate from and to these types; nothing else in the router knows a provider's
format. Retrieved passages have no type of their own: they reach every provider as prompt text
(the documents block, see :mod:`.providers.local`). Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """Who wrote a message."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class FinishReason(StrEnum):
    """Why an answer ended."""

    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"
    ERROR = "error"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Part:
    """One piece of content: text, or an image by URL."""

    text: str | None = None
    image_url: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call an assistant message made."""

    id: str
    name: str
    arguments_json: str


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the conversation a provider is asked to answer."""

    role: Role
    parts: tuple[Part, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if p.text is not None)


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call, its parameters a JSON schema."""

    name: str
    description: str
    parameters_json: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What a provider is asked to answer (the alias is already resolved)."""

    messages: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()
    tool_choice: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()


@dataclass(slots=True)
class Usage:
    """Tokens and cost of one answer; ``estimated`` when counted by the router."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    estimated: bool = False


# Events a provider yields, in order: deltas, then exactly one Finish.


@dataclass(frozen=True, slots=True)
class TextDelta:
    """The next piece of the answer text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """The next piece of tool call ``index``: its id and name first, then its arguments."""

    index: int
    id: str = ""
    name: str = ""
    arguments_delta: str = ""


@dataclass(frozen=True, slots=True)
class Finish:
    """The end of an answer, with its usage."""

    reason: FinishReason
    usage: Usage = field(default_factory=Usage)


ProviderEvent = TextDelta | ToolCallDelta | Finish
