"""The arithmetic of a search that both stores share: how deep each ranking is read, the
weights of a hybrid fusion and the scale of its score, and the similarity threshold applied to
chunks that a keyword ranking found.

Reciprocal rank fusion as Qdrant computes it, with a weight ``w`` per ranking: a chunk at
0-based rank ``r`` gains ``1 / ((r + 1) / w + k - 1)``; with every weight 1 that is the plain
``1 / (k + r + 1)``. The weights here are scaled so the larger is 1, so a dense weight of 0.5
is the plain fusion; a fused score is divided by the most a chunk can gain (first in every
ranking), so it reads from 0 to 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from parley_retrieval.chunks import ChunkQuery, Hit, SearchMode, StoredChunk

# The most candidates a ranking is read to before fusion, diversity or a threshold.
MAX_CANDIDATES = 200


def candidates(query: ChunkQuery) -> int:
    """How deep each ranking is read: deeper than the answer, so fusion can lift a chunk that
    one ranking placed low, diversity has alternatives, and a threshold leaves enough."""
    if query.mode is SearchMode.DENSE and query.diversity is None:
        return query.limit
    return min(MAX_CANDIDATES, max(4 * query.limit, 40))


def fusion_weights(dense_weight: float) -> tuple[float, float]:
    """(dense, sparse) weights for ``dense_weight`` in [0, 1], the larger scaled to 1."""
    dense, sparse = dense_weight, 1.0 - dense_weight
    top = max(dense, sparse)
    return dense / top, sparse / top


def fused_ceiling(weights: tuple[float, ...], k: int) -> float:
    """The fused score of a chunk first in every ranking (the scale of a fused score)."""
    return sum(1.0 / (1.0 / w + k - 1) for w in weights if w > 0)


def needs_vectors(query: ChunkQuery) -> bool:
    """Whether the store must return each candidate's embedding: to score diversity's
    results by similarity, or to hold keyword-found chunks to the similarity threshold."""
    return query.diversity is not None or (
        query.threshold is not None and query.mode is not SearchMode.DENSE
    )


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity (the engine stores vectors normalised; the query may not be)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norms if norms else 0.0


Candidate = tuple[StoredChunk, float, list[float] | None]


def finish(found: Sequence[Candidate], query: ChunkQuery) -> list[Hit]:
    """The store's ranked candidates (chunk, engine score, embedding if asked for) as hits.

    A fused score is scaled to 0..1; after diversity, which leaves no meaningful engine score,
    a hit's score is its similarity to the query; the threshold drops chunks less similar to
    the query than it; then the first ``limit`` are kept, in the engine's order.
    """
    scale = 1.0
    if query.mode is SearchMode.HYBRID and query.diversity is None:
        scale = 1.0 / fused_ceiling(fusion_weights(query.dense_weight), query.fusion_k)
    hits: list[Hit] = []
    for chunk, score, vector in found:
        similarity = cosine(vector, query.dense) if vector is not None and query.dense else None
        if query.threshold is not None and similarity is not None and similarity < query.threshold:
            continue
        if query.diversity is not None and similarity is not None:
            score = similarity
        else:
            score *= scale
        hits.append(Hit(chunk, score))
        if len(hits) == query.limit:
            break
    return hits
