"""A follow-up is made standalone before retrieval: the rewritten query (and the score
threshold) go to retrieval, the query is stored with the answer; a slow or local model leaves
the message as written, or the recent questions joined (fake peers, SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from parley.retrieval.v1 import retrieval_pb2 as ret
from parley_conversation.conversations import Role
from parley_conversation.events import CitationsFound, Done
from parley_conversation.followups import cleaned, joined_query, rewrite_messages

from .fakes import LEAVE_CHUNK, Peers
from .replicas import ANN, replica

PARENTAL = ret.ScoredChunk(
    chunk_id="doc9:v1:0",
    document_id="doc9",
    text="Parental leave lasts sixteen weeks at full pay.",
    score=0.7,
    title="Parental leave",
    source_uri="parental.md",
)
STANDALONE = "How long is parental leave?"


def test_the_rewrite_request_carries_the_recent_history_as_data() -> None:
    history = [(Role.USER, f"q{i}") for i in range(10)]
    messages = rewrite_messages(history, "and then?")
    assert messages[0][0] == Role.SYSTEM
    assert "q3" not in messages[1][1]
    assert "User: q9" in messages[1][1]
    assert "Last message: and then?" in messages[1][1]
    assert cleaned('"How long is parental leave?"\nmore') == STANDALONE
    assert cleaned("Standalone search query: leave for contractors") == "leave for contractors"
    assert cleaned("   ") is None
    assert joined_query(
        [(Role.USER, "Parental leave?"), (Role.ASSISTANT, "Yes.")], "How long?"
    ) == ("Parental leave? How long?")


async def test_a_follow_up_retrieves_with_its_standalone_query(
    database_url: str, peers: Peers
) -> None:
    peers.retrieval.chunks = [LEAVE_CHUNK]  # what the message as written finds: not it
    peers.retrieval.by_query = {STANDALONE: [PARENTAL]}
    peers.router.chat_answer = lambda request: f"{STANDALONE}\n"
    async with replica(database_url, peers) as node:
        cid = (await node.store.create(ANN, "HR", "", "kb1", None)).id
        first = await node.send(cid, "Tell me about parental leave.")
        assert isinstance(first[-1], Done)
        assert first[-1].message.search_query == "Tell me about parental leave."
        assert not peers.router.chats  # no history: nothing to rewrite
        events = await node.send(cid, "How long is it?")
        stored = (await node.store.messages(ANN, cid, 10, 0))[-1]
    searched = peers.retrieval.requests[-1]
    assert (searched.query, searched.knowledge_base_id) == (STANDALONE, "kb1")
    assert searched.score_threshold == pytest.approx(0.2)
    (found,) = [e for e in events if isinstance(e, CitationsFound)]
    assert found.citations[0].title == "Parental leave"
    assert "sixteen weeks" in peers.router.requests[-1].messages[-2].content[0].text
    assert stored.search_query == STANDALONE
    (rewrite,) = peers.router.chats
    assert "User: Tell me about parental leave." in rewrite.messages[1].content[0].text
    assert rewrite.max_tokens > 0


async def test_a_slow_rewrite_searches_the_message_as_written(
    database_url: str, peers: Peers
) -> None:
    peers.router.chat_delay = 2.0
    async with replica(database_url, peers, rewrite_timeout_seconds=0.2) as node:
        cid = (await node.store.create(ANN, "HR", "", "kb1", None)).id
        await node.send(cid, "Tell me about parental leave.")
        events = await node.send(cid, "How long is it?")
    assert isinstance(events[-1], Done)
    assert peers.retrieval.requests[-1].query == "How long is it?"
    assert events[-1].message.search_query == "How long is it?"


async def test_with_the_local_model_the_recent_question_is_joined(
    database_url: str, peers: Peers
) -> None:
    peers.router.local_aliases = {"default"}
    async with replica(database_url, peers) as node:
        cid = (await node.store.create(ANN, "HR", "", "kb1", None)).id
        await node.send(cid, "Tell me about parental leave.")
        await node.send(cid, "How long is it?")
    assert peers.retrieval.requests[-1].query == "Tell me about parental leave. How long is it?"
    assert not peers.router.chats
