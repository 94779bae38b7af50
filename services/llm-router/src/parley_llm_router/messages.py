"""The router's own model of a chat request and its streamed answer.

Providers translate from and to these types; nothing else in the router knows a provider's
format. Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class FinishReason(StrEnum):
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
    id: str
    name: str
    arguments_json: str


@dataclass(frozen=True, slots=True)
class Message:
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
    name: str
    description: str
    parameters_json: str


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved passage the caller placed in the prompt under ``marker``."""

    marker: str
    text: str
    title: str = ""


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
    passages: tuple[Passage, ...] = ()


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    estimated: bool = False


# Events a provider yields, in order: deltas, then exactly one Finish.


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    index: int
    id: str = ""
    name: str = ""
    arguments_delta: str = ""


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason
    usage: Usage = field(default_factory=Usage)


ProviderEvent = TextDelta | ToolCallDelta | Finish
