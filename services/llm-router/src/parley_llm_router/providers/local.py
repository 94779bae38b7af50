"""The offline local provider: no network, no key, clearly labelled.

It answers extractively: from the documents in the prompt, it picks the sentences that share
the most words with the question and quotes them with their citation markers. With no
documents it says so, and how to configure a real provider. It is a useful baseline for a
deployment without model access, not a language model.

It reads the documents the way a model does, from the prompt text: the documents block that
conversation places in a user message right before the question::

    Reference documents for the next question follow, inside the documents block. ...

    <documents>
    <document marker="1" title="Leave policy">
    Employees have 25 days of leave a year.
    </document>
    <document marker="2" title="untitled">
    ...
    </document>
    </documents>

- The question is the last user message; the documents come from the last user message
  before it that contains ``<documents>``, each entry matching :data:`DOCUMENT` (``marker``
  is what the answer cites as ``[1]``; ``title`` is the document's title or ``untitled``).
- Whoever writes the block neutralises ``<document`` and ``</document`` inside titles and
  passages (as ``< document`` and ``</ document``), so a passage can neither close its entry
  nor open another: only the writer's own entries match.
- No block, or a block without entries: the "nothing to quote" answer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from parley_llm_router.messages import (
    ChatRequest,
    Finish,
    FinishReason,
    Message,
    ProviderEvent,
    Role,
    TextDelta,
    Usage,
)
from parley_llm_router.providers.base import Timeouts
from parley_llm_router.tokens import estimate_messages, estimate_text

MODEL = "extractive-v1"

NO_CONTEXT_ANSWER = (
    "I found nothing in your documents to answer this, so I cannot ground a reply. "
    "This answer comes from Parley's offline local model, which only quotes retrieved "
    "passages. Attach a knowledge base to the conversation, or configure a real provider "
    "(set OPENAI_API_KEY, or OPENAI_BASE_URL for vLLM or Ollama) for generated answers."
)

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "should",
        "so",
        "that",
        "the",
        "their",
        "them",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


BLOCK_START = "<documents>"
BLOCK_END = "</documents>"
DOCUMENT = re.compile(r'<document marker="([^"]*)" title="([^"]*)">\n(.*?)\n</document>', re.DOTALL)


@dataclass(frozen=True, slots=True)
class Document:
    """One entry of the documents block: the passage the answer may quote under ``marker``."""

    marker: str
    title: str
    text: str


def documents_in(messages: tuple[Message, ...]) -> tuple[Document, ...]:
    """The documents for the last user message, read from the block before it (see the
    module docstring); empty without one."""
    users = [m for m in messages if m.role == Role.USER]
    for message in reversed(users[:-1]):
        text = message.text
        start = text.find(BLOCK_START)
        if start < 0:
            continue
        end = text.find(BLOCK_END, start)
        block = text[start : end if end >= 0 else len(text)]
        return tuple(Document(*match.groups()) for match in DOCUMENT.finditer(block))
    return ()


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and len(w) > 1}


def _sentences(document: Document) -> list[str]:
    flat = " ".join(document.text.split())
    return [s for s in _SENTENCE_END.split(flat) if len(s) > 3]


def extractive_answer(question: str, documents: tuple[Document, ...], limit: int = 3) -> str:
    """The best ``limit`` sentences for ``question``, each followed by its marker."""
    if not documents:
        return NO_CONTEXT_ANSWER
    wanted = _words(question)
    scored: list[tuple[float, int, int, str, str]] = []
    for p_index, document in enumerate(documents):
        for s_index, sentence in enumerate(_sentences(document)):
            overlap = len(wanted & _words(sentence))
            # Earlier documents ranked higher in retrieval: prefer them on ties.
            scored.append((overlap - 0.01 * p_index, -p_index, -s_index, sentence, document.marker))
    scored.sort(reverse=True)
    best = [item for item in scored if item[0] > 0][:limit] or scored[:1]
    # Quote in document order so the answer reads naturally.
    best.sort(key=lambda item: (-item[1], -item[2]))
    quoted = " ".join(f"{sentence} [{marker}]" for _, _, _, sentence, marker in best)
    return f"From your documents: {quoted}"


def _tokens(text: str) -> list[str]:
    """Split into word tokens that concatenate back to ``text``."""
    return re.findall(r"\S+\s*|\s+", text)


class LocalProvider:
    """Streams an extractive answer token by token (see the module docstring)."""

    name = "local"
    pace = 0.0

    def __init__(self, token_delay_seconds: float = 0.0) -> None:
        self.token_delay = token_delay_seconds

    async def stream(
        self, model: str, request: ChatRequest, timeouts: Timeouts
    ) -> AsyncIterator[ProviderEvent]:
        question = next((m.text for m in reversed(request.messages) if m.role == Role.USER), "")
        answer = extractive_answer(question, documents_in(request.messages))
        budget = request.max_tokens
        produced = 0
        reason = FinishReason.STOP
        for token in _tokens(answer):
            if budget is not None and produced >= budget:
                reason = FinishReason.LENGTH
                break
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            produced += 1
            yield TextDelta(token)
        output = "".join(_tokens(answer)[:produced])
        yield Finish(
            reason,
            Usage(
                input_tokens=estimate_messages(request.messages, request.tools),
                output_tokens=estimate_text(output),
                estimated=True,
            ),
        )
