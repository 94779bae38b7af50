"""The budget of a turn's prompt from the model's limits, and a long conversation that stays
inside its window by way of the rolling summary (fake peers, SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

from parley.llm_router.v1 import llm_router_pb2 as llm
from parley_conversation.context import Budget, Shares, budget_for, cost, measured_scale, size
from parley_conversation.conversations import ModelLimits, Role
from parley_conversation.events import Done
from parley_conversation.prompt import Turn, build_prompt
from parley_conversation.summaries import extractive, to_fold

from .fakes import Peers, Script, answer_events, prompt_tokens
from .replicas import ANN, replica


def test_the_budget_is_the_window_less_the_answer_shared_out() -> None:
    budget = budget_for(ModelLimits(128_000, 16_384), Shares())
    assert (budget.window, budget.answer, budget.prompt) == (128_000, 2048, 125_952)
    assert (budget.summary, budget.memory, budget.passages) == (1000, 500, 2000)
    small = budget_for(ModelLimits(4000, 16_384), Shares())
    # A quarter of a small window at most goes to the answer; the shares shrink with it.
    assert (small.answer, small.prompt, small.passages) == (1000, 3000, 1200)
    capped = budget_for(ModelLimits(1_000_000, 4096), Shares(cap=6000))
    assert capped.prompt == 6000
    assert budget_for(None, Shares()).window == 8192


def test_the_bound_never_undercounts_and_a_measured_scale_is_applied() -> None:
    assert size("abcd") == 4 + 8
    assert size("日本語") == 9 + 8  # UTF-8 bytes: no tokenizer makes more tokens than bytes
    assert cost("a" * 400, 0.25) == 102
    assert measured_scale(100, 1000) == 0.105
    assert measured_scale(5000, 1000) == 1.0


def test_history_is_trimmed_oldest_first_and_the_summary_rides_in_the_system_message() -> None:
    history = [
        Turn(Role.USER if i % 2 == 0 else Role.ASSISTANT, f"m{i} " + "x" * 400) for i in range(30)
    ]
    prompt = build_prompt(history, "now?", [], Budget.of(1200), summary="Earlier: leave.")
    assert prompt.history_left_out > 0
    assert prompt.messages[-2][1].startswith("m29")
    system = prompt.messages[0][1]
    assert "<conversation_summary>\nEarlier: leave.\n</conversation_summary>" in system
    assert all("conversation_summary" not in text for role, text in prompt.messages[1:])


def test_a_summary_folds_all_but_the_newest_messages() -> None:
    messages = [(i, Role.USER, "x" * 100) for i in range(1, 11)]
    assert to_fold(messages, keep_tokens=60, keep_messages=5, scale=0.25) == 8  # 27 each
    assert to_fold(messages, keep_tokens=10_000, keep_messages=4, scale=0.25) == 6
    text = extractive(
        "",
        [(1, Role.USER, "How long is leave? More words."), (2, Role.ASSISTANT, "25 days.")],
        500,
        0.25,
    )
    assert text == "- The user asked: How long is leave?\n- Parley answered: 25 days."


async def test_a_500_message_conversation_stays_inside_the_window(
    database_url: str, peers: Peers
) -> None:
    router = peers.router
    router.context_window, router.max_output_tokens = 3000, 500
    router.script = Script(answer_events("Noted: " + "the answer goes on for a while. " * 5))
    router.chat_answer = lambda request: "Summary: the user wrote many numbered messages."
    async with replica(database_url, peers) as node:
        cid = (await node.store.create(ANN, "Long", "", "", None)).id
        for turn in range(250):
            events = await node.send(cid, f"Message {turn}: " + "tell me more about it. " * 8)
            assert isinstance(events[-1], Done), events[-1]
        for _ in range(200):  # the last summary may still be on its way
            if not await node.tasks.unfinished(cid):
                break
            await asyncio.sleep(0.05)
        conversation, summary, rest = await node.store.unsummarised(ANN, cid, 1000)
    assert conversation.message_count == 500
    assert summary is not None
    assert (summary.first_seq, summary.last_seq > 400) == (1, True)
    assert summary.content == "Summary: the user wrote many numbered messages."
    assert len(rest) < 60
    streams = router.requests
    assert len(streams) == 250
    for request in streams:
        assert request.max_tokens == 500
        assert prompt_tokens(request.messages) + request.max_tokens <= 3000
    last = streams[-1]
    assert "<conversation_summary>" in last.messages[0].content[0].text
    assert last.messages[0].role == llm.ROLE_SYSTEM
    assert all("conversation_summary" not in m.content[0].text for m in last.messages[1:]), (
        "the summary is never a user message"
    )
    assert last.messages[-1].content[0].text.startswith("Message 249:")
    # Near the window the prompts were counted by llm-router, not guessed.
    assert router.counted
    # The summary was folded through the router, incrementally.
    summaries = [c for c in router.chats if "running summary" in c.messages[0].content[0].text]
    assert len(summaries) >= 2
    assert "Summary: the user wrote" in summaries[-1].messages[1].content[0].text
