"""What a turn asks retrieval for: the mode and the similarity threshold of the settings."""

from __future__ import annotations

import pytest

from parley.retrieval.v1 import retrieval_pb2 as ret
from parley_conversation.adapters.retrieval import Retrieval
from parley_conversation.settings import Settings

from .fakes import Peers


async def test_searches_carry_the_mode_and_the_threshold(peers: Peers) -> None:
    retrieval = Retrieval(peers.address, 5.0, mode="sparse", score_threshold=0.35)
    try:
        await retrieval.search("handbook", "leave days", 4)
    finally:
        await retrieval.close()
    [request] = peers.retrieval.requests
    asked = (request.knowledge_base_id, request.query, request.top_k)
    assert asked == ("handbook", "leave days", 4)
    assert request.mode == ret.SEARCH_MODE_SPARSE
    assert request.HasField("score_threshold")
    assert abs(request.score_threshold - 0.35) < 1e-6


async def test_without_a_threshold_none_is_sent(peers: Peers) -> None:
    retrieval = Retrieval(peers.address, 5.0)
    try:
        await retrieval.search("handbook", "leave days", 4)
    finally:
        await retrieval.close()
    [request] = peers.retrieval.requests
    assert request.mode == ret.SEARCH_MODE_HYBRID
    assert not request.HasField("score_threshold")


def test_the_defaults_are_hybrid_with_a_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.retrieval_mode == "hybrid"
    assert settings.retrieval_score_threshold == 0.2
    monkeypatch.setenv("RETRIEVAL_SCORE_THRESHOLD", "")
    assert Settings().retrieval_score_threshold is None
    monkeypatch.setenv("RETRIEVAL_SCORE_THRESHOLD", "0.4")
    assert Settings().retrieval_score_threshold == 0.4
