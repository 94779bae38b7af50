"""How many tokens a turn's prompt may use, how they are shared, and how text is measured
against them. Pure: no I/O.

**The budget** comes from the model alias's limits (llm-router's ``ListModels``, kept with the
list of aliases): the context window less the answer's reservation, which is also the
request's ``max_tokens`` (``ANSWER_MAX_TOKENS``, at most the model's largest answer and a
quarter of its window), capped by ``CONTEXT_TOKEN_BUDGET``. Within it the system prompt and
the question always go; the rolling summary, the user's memories and the retrieved passages
each take at most their own share; history takes what is left, newest first.

**Measuring.** Every tokenizer a provider uses here (OpenAI's byte-level BPE, Anthropic's,
Llama's SentencePiece with byte fallback, llm-router's own four-characters estimate) makes at
most one token per UTF-8 byte, so a text's size in bytes (plus the framing of its message) is
a bound its token count never passes. A prompt that fits by that bound is sent as it is,
uncounted: most turns, at the cost of a ``len``. A prompt that would have to leave something
out is counted once, exactly, by llm-router's ``CountTokens`` (the tokenizer of the alias's
first candidate), and trimmed by the tokens per byte that count measured (``scale``), with a
margin. So no turn pays a round trip unless it is near the budget, and none is trimmed by a
guess where a tokenizer exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from parley_conversation.conversations import ModelLimits

# Tokens a message costs beyond its text (role and separators; OpenAI's framing is 3 + 1).
FRAMING_TOKENS = 8
# Tokens that prime the answer.
PRIMING_TOKENS = 3
# When trimming by a measured scale, leave this share of the budget free.
SCALE_MARGIN = 1.05
# Used when an alias's limits are unknown (llm-router listed it without them).
DEFAULT_LIMITS = ModelLimits(context_window=8192, max_output_tokens=2048)


def size(text: str) -> int:
    """A bound on the tokens of ``text`` in a message of its own (see the module docstring)."""
    # isascii() is a flag read on CPython: ASCII text is not encoded to be measured.
    return FRAMING_TOKENS + (len(text) if text.isascii() else len(text.encode()))


def cost(text: str, scale: float) -> int:
    """The tokens ``text`` is reckoned at: its bound, times ``scale`` once one was measured."""
    return math.ceil(size(text) * scale)


@dataclass(frozen=True, slots=True)
class Shares:
    """The operator's choices (settings): the answer's reservation, a cap on the prompt, and
    the most that the summary, memories and passages may each take."""

    answer_tokens: int = 2048
    cap: int | None = None
    summary_tokens: int = 1000
    memory_tokens: int = 500
    passage_tokens: int = 2000


@dataclass(frozen=True, slots=True)
class Budget:
    """A turn's tokens: ``prompt`` for the whole request, ``answer`` reserved for the answer
    (the request's ``max_tokens``), and the most the summary, memories and passages take
    within ``prompt``."""

    window: int
    answer: int
    prompt: int
    summary: int
    memory: int
    passages: int

    @classmethod
    def of(cls, prompt: int, shares: Shares | None = None) -> Budget:
        """A budget of ``prompt`` tokens of prompt, shared as ``shares`` say."""
        shares = replace(shares or Shares(), cap=prompt)
        return budget_for(ModelLimits(prompt + shares.answer_tokens, shares.answer_tokens), shares)

    @property
    def history(self) -> int:
        """What history may take at most: the prompt's tokens less the other shares' at
        most (a share left unused goes to history too, see ``prompt.build_prompt``)."""
        return max(self.prompt - self.summary - self.memory - self.passages, 0)


def budget_for(limits: ModelLimits | None, shares: Shares) -> Budget:
    """The budget of a turn on a model with ``limits`` (see the module docstring)."""
    limits = limits or DEFAULT_LIMITS
    window = max(limits.context_window, 256)
    answer = max(min(shares.answer_tokens, limits.max_output_tokens, window // 4), 16)
    prompt = window - answer
    if shares.cap is not None:
        prompt = min(prompt, shares.cap)
    return Budget(
        window=window,
        answer=answer,
        prompt=prompt,
        summary=min(shares.summary_tokens, prompt // 5),
        memory=min(shares.memory_tokens, prompt // 10),
        passages=min(shares.passage_tokens, (prompt * 2) // 5),
    )


def measured_scale(exact_tokens: int, bound: int) -> float:
    """Tokens per unit of bound, from an exact count of a prompt whose bound was ``bound``,
    with the margin; never above 1 (the bound holds)."""
    if bound <= 0:
        return 1.0
    return min(exact_tokens * SCALE_MARGIN / bound, 1.0)
