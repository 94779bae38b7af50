"""Every Prometheus series of the retrieval service."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SEARCH_SECONDS = Histogram(
    "parley_retrieval_search_seconds",
    "Search latency, embedding included, by mode (dense, sparse, hybrid).",
    ["mode"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
INDEXED_CHUNKS = Counter("parley_retrieval_indexed_chunks_total", "Chunks embedded and stored.")
