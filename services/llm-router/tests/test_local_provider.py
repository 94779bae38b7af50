"""The offline local provider: extractive, cited, honest when it has nothing."""

from __future__ import annotations

from parley_llm_router.messages import (
    ChatRequest,
    Finish,
    FinishReason,
    Message,
    Part,
    Passage,
    Role,
    TextDelta,
)
from parley_llm_router.providers.base import Timeouts
from parley_llm_router.providers.local import NO_CONTEXT_ANSWER, LocalProvider, extractive_answer

PASSAGES = (
    Passage("1", "Parley stores messages in PostgreSQL. Backups run nightly at 02:00 UTC.", "Ops"),
    Passage("2", "The gateway enforces rate limits per tenant. Limits reset every minute.", "API"),
)
TIMEOUTS = Timeouts(connect=1, first_token=1, total=5)


def test_answer_quotes_the_matching_sentences_with_their_markers() -> None:
    answer = extractive_answer("When do backups run?", PASSAGES)
    assert "Backups run nightly at 02:00 UTC. [1]" in answer
    assert "[2]" not in answer.split("[1]")[0]


def test_answer_picks_sentences_from_the_passage_that_matches() -> None:
    answer = extractive_answer("how often do rate limits reset", PASSAGES)
    assert "Limits reset every minute. [2]" in answer


def test_without_passages_it_says_so_and_how_to_configure_a_provider() -> None:
    answer = extractive_answer("anything", ())
    assert answer == NO_CONTEXT_ANSWER
    assert "OPENAI_API_KEY" in answer


async def test_stream_is_token_by_token_and_ends_with_usage() -> None:
    request = ChatRequest(
        messages=(Message(Role.USER, (Part(text="When do backups run?"),)),), passages=PASSAGES
    )
    events = [e async for e in LocalProvider().stream("extractive-v1", request, TIMEOUTS)]
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 5
    assert "".join(deltas) == extractive_answer("When do backups run?", PASSAGES)
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.reason == FinishReason.STOP
    assert finish.usage.output_tokens > 0
    assert finish.usage.estimated


async def test_max_tokens_cuts_the_answer_with_reason_length() -> None:
    request = ChatRequest(
        messages=(Message(Role.USER, (Part(text="backups?"),)),), passages=PASSAGES, max_tokens=3
    )
    events = [e async for e in LocalProvider().stream("extractive-v1", request, TIMEOUTS)]
    assert len([e for e in events if isinstance(e, TextDelta)]) == 3
    assert isinstance(events[-1], Finish)
    assert events[-1].reason == FinishReason.LENGTH
