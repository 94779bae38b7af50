"""What a tool is: its spec (name, description, JSON Schema of its arguments), the context a
call runs in, and the error a tool raises for a call it refuses or cannot complete."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from parley_conversation.conversations import Conversation, Passage
from parley_conversation.prompt import CitedPassage


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as the model sees it; ``parameters`` is a JSON Schema of an object."""

    name: str
    description: str
    parameters: Mapping[str, Any]

    @property
    def parameters_json(self) -> str:
        return json.dumps(self.parameters, separators=(",", ":"))


class ToolError(Exception):
    """A call the tool refuses or cannot complete: a stable ``code`` (stored with the call,
    counted in metrics) and a ``message`` the model reads to correct itself."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a call acts on: the conversation of the turn (its knowledge base), and ``cite``,
    which adds a passage to the answer's citations and returns it under its marker."""

    conversation: Conversation
    cite: Callable[[Passage], CitedPassage]


class Tool(Protocol):
    """A tool Parley runs for the model. ``run`` gets arguments already validated against
    ``spec.parameters``, returns the text the model reads, and raises ``ToolError``."""

    @property
    def spec(self) -> ToolSpec: ...

    def offered(self, conversation: Conversation) -> bool:
        """Whether a turn of ``conversation`` offers the tool."""
        ...

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> str: ...
