"""Every Prometheus series of the retrieval service (the runtime adds those of its gRPC
server)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SEARCH_SECONDS = Histogram(
    "parley_retrieval_search_seconds",
    "Search latency, embedding included, by mode (dense, sparse, hybrid).",
    ["mode"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
INDEXED_CHUNKS = Counter("parley_retrieval_indexed_chunks_total", "Chunks embedded and stored.")
SEARCHES = Counter(
    "parley_retrieval_searches_total",
    "Searches by mode and result (hits, empty).",
    ["mode", "result"],
)
EMBEDDING_SECONDS = Histogram(
    "parley_retrieval_embedding_seconds",
    "Time to embed one batch, by kind (query, documents).",
    ["kind"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# Exported from the start, at zero.
for _mode in ("dense", "sparse", "hybrid"):
    SEARCH_SECONDS.labels(_mode)
    for _result in ("hits", "empty"):
        SEARCHES.labels(_mode, _result)
EMBED_QUERY = EMBEDDING_SECONDS.labels("query")
EMBED_DOCUMENTS = EMBEDDING_SECONDS.labels("documents")
