"""Token estimates for providers that report no usage.

The estimate is one token per four characters of text, rounded up, plus four tokens of
framing per message: close to OpenAI's tokenizers on English prose, and always marked as
estimated in the usage it produces.
"""

from __future__ import annotations

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
