"""How a fake provider answers: timing, length, and the failure to inject. Pure data.

A fake has a default :class:`Behaviour` and a script: a queue of behaviours used, one each,
by the next requests before the default applies again.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any

WORDS = (
    "Parley answers from the fake provider with a steady stream of ordinary words so that "
    "tests can count tokens and check that nothing is lost on the way"
).split()


@dataclass(frozen=True)
class Behaviour:
    """One request's answer.

    ``fail_status`` answers that HTTP status at once (with ``Retry-After`` when
    ``retry_after`` is set); ``hang`` accepts the request and never answers until the client
    goes away; ``drop_after_tokens`` closes the connection after that many tokens, without the
    stream's end; ``stall_after_tokens`` stops sending after that many tokens, keeping the
    connection open; ``error_after_tokens`` sends the protocol's in-stream error event after
    that many tokens (an ``overloaded_error`` event from Anthropic, a ``data: {"error": ...}``
    chunk from OpenAI) and ends the body; ``tool_name`` answers a tool call (when the request
    offers tools) with ``tool_arguments``, and ``tool_calls`` (``{"name": ..., "arguments":
    {...}}`` each) answers several calls at once, as a model calling tools in parallel;
    ``end_delay_ms`` holds the end of the HTTP body back that long after the
    stream's last event (``[DONE]``), as a distant server's last packet may be.
    """

    ttft_ms: float = 0.0
    token_delay_ms: float = 0.0
    tokens: int = 20
    text: str | None = None
    fail_status: int | None = None
    retry_after: float | None = None
    hang: bool = False
    drop_after_tokens: int | None = None
    stall_after_tokens: int | None = None
    error_after_tokens: int | None = None
    tool_name: str | None = None
    tool_arguments: dict[str, Any] = field(default_factory=dict)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    report_usage: bool = True
    end_delay_ms: float = 0.0

    def answer_tokens(self) -> list[str]:
        """The answer as tokens that concatenate to the answer text."""
        if self.text is not None:
            words = self.text.split(" ")
            return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
        return [WORDS[i % len(WORDS)] + " " for i in range(self.tokens)]

    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        """The tool calls to answer with (name, arguments), when the request offers tools."""
        if self.tool_calls:
            return [(str(c["name"]), dict(c.get("arguments") or {})) for c in self.tool_calls]
        if self.tool_name is not None:
            return [(self.tool_name, self.tool_arguments)]
        return []

    def call_pieces(self) -> list[tuple[int, str]]:
        """(call index, piece) of each call's arguments, 8 characters at a time, in order."""
        pieces: list[tuple[int, str]] = []
        for index, (_, arguments) in enumerate(self.calls()):
            text = json.dumps(arguments)
            pieces += [(index, text[i : i + 8]) for i in range(0, len(text), 8)] or [(index, "")]
        return pieces

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Behaviour:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown behaviour fields: {', '.join(sorted(unknown))}")
        return cls(**data)


class Script:
    """The default behaviour and a queue of one-off behaviours for the next requests."""

    def __init__(self, default: Behaviour) -> None:
        self.default = default
        self.queue: deque[Behaviour] = deque()

    def next(self) -> Behaviour:
        return self.queue.popleft() if self.queue else self.default

    def push(self, *behaviours: Behaviour) -> None:
        self.queue.extend(behaviours)
