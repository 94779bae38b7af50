"""Re-ranking a search's candidates with a stronger model (a cross-encoder): the interface.

No re-ranking model ships in a package this project can install offline, so the service
re-ranks nothing: :class:`NoReranking` is wired in. A re-ranker asks for more candidates than
the search returns, scores each against the query, and returns the best ``limit``.
"""

from __future__ import annotations

from typing import Protocol

from parley_retrieval.chunks import Hit


class Reranker(Protocol):
    """Orders a search's candidates by a finer relevance than the store's."""

    def candidates(self, limit: int) -> int:
        """How many candidates to fetch for ``limit`` results."""
        ...

    async def rerank(self, query: str, hits: list[Hit], limit: int) -> list[Hit]:
        """The best ``limit`` of ``hits`` for ``query``, best first."""
        ...


class NoReranking:
    """Keeps the store's ranking (the default)."""

    def candidates(self, limit: int) -> int:
        return limit

    async def rerank(self, query: str, hits: list[Hit], limit: int) -> list[Hit]:
        return hits[:limit]
