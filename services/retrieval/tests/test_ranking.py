"""Fusion weights, the fused score's scale, and what a search keeps of its candidates."""

from __future__ import annotations

import pytest

from parley_retrieval.chunks import ChunkQuery, SearchMode, StoredChunk
from parley_retrieval.ranking import candidates, finish, fused_ceiling, fusion_weights


def chunk(name: str) -> StoredChunk:
    return StoredChunk(name, "d", 1, name, "", "", 0, {})


def test_weights_scale_the_larger_to_one() -> None:
    assert fusion_weights(0.5) == (1.0, 1.0)
    assert fusion_weights(0.8) == pytest.approx((1.0, 0.25))
    assert fusion_weights(0.0) == (0.0, 1.0)


def test_the_fused_ceiling_is_first_place_in_every_ranking() -> None:
    assert fused_ceiling((1.0, 1.0), 60) == pytest.approx(2 / 60)
    assert fused_ceiling((1.0, 0.0), 60) == pytest.approx(1 / 60)
    assert fused_ceiling((1.0, 0.5), 2) == pytest.approx(1 / 2 + 1 / 3)


def test_rankings_are_read_deeper_than_the_answer_unless_plain_dense() -> None:
    assert candidates(ChunkQuery(SearchMode.DENSE, 5)) == 5
    assert candidates(ChunkQuery(SearchMode.HYBRID, 5)) == 40
    assert candidates(ChunkQuery(SearchMode.DENSE, 30, diversity=0.5)) == 120
    assert candidates(ChunkQuery(SearchMode.SPARSE, 50)) == 200


def test_finish_scales_fused_scores_then_applies_the_threshold_and_the_limit() -> None:
    query = ChunkQuery(SearchMode.HYBRID, 2, dense=[1.0, 0.0], threshold=0.5)
    found = [
        (chunk("near"), 2 / 60, [1.0, 0.0]),
        (chunk("far"), 1.5 / 60, [0.0, 1.0]),  # similarity 0: dropped
        (chunk("close"), 1 / 60, [0.8, 0.6]),
        (chunk("spare"), 0.5 / 60, [1.0, 0.0]),  # beyond the limit
    ]
    hits = finish(found, query)
    assert [h.chunk.chunk_id for h in hits] == ["near", "close"]
    assert [h.score for h in hits] == pytest.approx([1.0, 0.5])


def test_after_diversity_a_score_is_the_similarity() -> None:
    query = ChunkQuery(SearchMode.DENSE, 5, dense=[3.0, 4.0], diversity=0.5)
    [hit] = finish([(chunk("a"), 0.1, [0.6, 0.8])], query)
    assert hit.score == pytest.approx(1.0)
