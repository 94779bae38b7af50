"""Retrieval quality on a public test collection, through retrieval's own gRPC Search.

    uv run python bench/retrieval_quality.py                  # SciFact from shared/datasets
    uv run python bench/retrieval_quality.py --data DIR       # any collection in BEIR's layout
    uv run python bench/retrieval_quality.py --queries 50     # a quick look at 50 queries

The collection is read in BEIR's layout (``corpus.jsonl``, ``queries.jsonl``,
``qrels/test.tsv``; each file may be gzipped). Every document becomes one chunk (its title,
a blank line, its text; the model reads its first 256 tokens, keyword search all of it),
indexed through ``IndexChunks`` in calls of 256 into one knowledge base. The service runs in
this process on a loopback port (``parley_testkit.services.retrieval_service``: the embedded
engine in a temporary folder, default settings) and is called over real gRPC. Every test
query is then searched in each mode: dense, sparse (keyword, BM25), hybrid by reciprocal rank
fusion (dense weight 0.5) and weighted hybrids, top 50 (the contract's limit).

Beside the service's rows, three references computed here, not by the service: exact dense
search (every document's vector against the query's, no index: what the engine's
approximate search may lose), ``bm25s`` (Lucene's BM25, k1 1.2, b 0.75, English stop words
and Snowball stemmer: the well-known library's row) and reciprocal rank fusion of those two
(k 60). These go to recall@100, which the service's 50-chunk limit cannot. nDCG@10 and
recall@k are trec_eval's (linear gain; a query's recall is the share of its judged relevant
documents found in the top k), averaged over every query with judgements.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import io
import json
import math
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import bm25s
import numpy as np
import Stemmer

from parley.retrieval.v1 import retrieval_pb2 as pb
from parley.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from parley_embeddings import LocalEmbedder
from parley_runtime.context import Principal, principal_var
from parley_runtime.grpc_client import channel
from parley_testkit.services import retrieval_service

sys.path.insert(0, str(Path(__file__).parent))
from harness import ROOT, load_average

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "scifact"
KNOWLEDGE_BASE = "collection"
TOP_K = 50  # the most a Search returns
PER_CALL = 256
RRF_K = 60
CUTOFFS = (10, 50, 100)


@dataclass
class Collection:
    """Documents (id → title and text), test queries (id → text), judgements (query id →
    document id → relevance)."""

    documents: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _open(path: Path) -> IO[str]:
    gz = path.with_name(path.name + ".gz")
    if not path.exists() and gz.exists():
        return io.TextIOWrapper(gzip.open(gz), encoding="utf-8")
    return path.open(encoding="utf-8")


def _jsonl(path: Path) -> Iterator[dict[str, str]]:
    with _open(path) as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def load_collection(root: Path, split: str = "test") -> Collection:
    documents = {d["_id"]: (d.get("title", ""), d["text"]) for d in _jsonl(root / "corpus.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    with _open(root / "qrels" / f"{split}.tsv") as rows:
        for row in csv.DictReader(rows, delimiter="\t"):
            if int(row["score"]) > 0:
                qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    queries = {q["_id"]: q["text"] for q in _jsonl(root / "queries.jsonl") if q["_id"] in qrels}
    return Collection(documents, queries, {q: qrels[q] for q in queries})


def ndcg(ranking: list[str], relevant: dict[str, int], k: int = 10) -> float:
    gains = [relevant.get(doc, 0) for doc in ranking[:k]]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall(ranking: list[str], relevant: dict[str, int], k: int) -> float:
    return len(set(ranking[:k]) & relevant.keys()) / len(relevant)


@dataclass
class Row:
    """One way of ranking: the ranking of each query, as deep as ``depth``."""

    name: str
    rankings: dict[str, list[str]] = field(default_factory=dict)
    depth: int = TOP_K

    def scores(self, qrels: dict[str, dict[str, int]]) -> dict[str, float | None]:
        out: dict[str, float | None] = {
            "nDCG@10": statistics.mean(ndcg(self.rankings.get(q, []), r) for q, r in qrels.items())
        }
        for k in CUTOFFS:
            out[f"R@{k}"] = (
                statistics.mean(recall(self.rankings.get(q, []), r, k) for q, r in qrels.items())
                if k <= self.depth
                else None
            )
        return out


def fuse(rankings: list[list[str]], weights: list[float], depth: int) -> list[str]:
    """Weighted reciprocal rank fusion: score = Σ weight × 1 / (k + rank)."""
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + weight / (RRF_K + rank)
    return sorted(scores, key=scores.__getitem__, reverse=True)[:depth]


async def index(stub: pb_grpc.RetrievalStub, collection: Collection) -> float:
    """Index every document (one chunk each) through IndexChunks; return chunks a second."""
    ids = list(collection.documents)
    started = time.perf_counter()
    for n, start in enumerate(range(0, len(ids), PER_CALL)):
        chunks = []
        for doc_id in ids[start : start + PER_CALL]:
            title, text = collection.documents[doc_id]
            body = f"{title}\n\n{text}" if title else text
            chunks.append(pb.Chunk(chunk_id=doc_id, text=body[:20_000], position=0))
        await stub.IndexChunks(
            pb.IndexChunksRequest(
                knowledge_base_id=KNOWLEDGE_BASE,
                document_id=f"part-{n}",
                document_version=1,
                chunks=chunks,
            ),
            timeout=600,
        )
    return len(ids) / (time.perf_counter() - started)


async def search_rows(
    stub: pb_grpc.RetrievalStub, queries: dict[str, str], weights: list[float]
) -> list[Row]:
    modes: list[tuple[str, int, float | None]] = [
        ("service: dense", pb.SEARCH_MODE_DENSE, None),
        ("service: sparse (BM25)", pb.SEARCH_MODE_SPARSE, None),
        ("service: hybrid, RRF", pb.SEARCH_MODE_HYBRID, 0.5),
    ]
    modes += [(f"service: hybrid, dense weight {w}", pb.SEARCH_MODE_HYBRID, w) for w in weights]
    rows = [Row(name) for name, _, _ in modes]
    for query_id, text in queries.items():
        for row, (_, mode, weight) in zip(rows, modes, strict=True):
            request = pb.SearchRequest(
                knowledge_base_id=KNOWLEDGE_BASE, query=text, top_k=TOP_K, mode=mode
            )
            if weight is not None:
                request.dense_weight = weight
            response = await stub.Search(request)
            row.rankings[query_id] = [chunk.chunk_id for chunk in response.chunks]
    return rows


def reference_rows(
    embedder: LocalEmbedder, collection: Collection, depth: int = max(CUTOFFS)
) -> list[Row]:
    ids = list(collection.documents)
    texts = [
        f"{title}\n\n{text}" if title else text for title, text in collection.documents.values()
    ]
    query_ids = list(collection.queries)
    query_texts = [collection.queries[q] for q in query_ids]

    # The documents' vectors are in the embedder's cache from indexing: no second pass.
    vectors = np.asarray(embedder.embed_sync(texts), dtype=np.float32)
    exact = Row("exact dense (here, no index)", depth=depth)
    for query_id, query in zip(
        query_ids, np.asarray(embedder.embed_sync(query_texts)), strict=True
    ):
        order = np.argsort(-(vectors @ query))[:depth]
        exact.rankings[query_id] = [ids[i] for i in order]

    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    retriever.index(
        bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
        show_progress=False,
    )
    found, _ = retriever.retrieve(
        bm25s.tokenize(query_texts, stopwords="en", stemmer=stemmer, show_progress=False),
        k=depth,
        show_progress=False,
    )
    keyword = Row("bm25s (here)", depth=depth)
    for query_id, indexes in zip(query_ids, found, strict=True):
        keyword.rankings[query_id] = [ids[i] for i in indexes]

    fused = Row("RRF of exact dense and bm25s (here)", depth=depth)
    for query_id in query_ids:
        fused.rankings[query_id] = fuse(
            [exact.rankings[query_id], keyword.rankings[query_id]], [0.5, 0.5], depth
        )
    return [exact, keyword, fused]


def table(rows: list[Row], qrels: dict[str, dict[str, int]]) -> list[str]:
    header = ["nDCG@10", *(f"R@{k}" for k in CUTOFFS)]
    lines = [
        "| ranking | " + " | ".join(header) + " |",
        "|---|" + "---:|" * len(header),
    ]
    for row in rows:
        scores = row.scores(qrels)
        cells = [f"{scores[h]:.3f}" if scores[h] is not None else "—" for h in header]
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return lines


async def run(args: argparse.Namespace) -> None:
    collection = load_collection(args.data)
    if args.queries:
        kept = list(collection.queries)[: args.queries]
        collection.queries = {q: collection.queries[q] for q in kept}
        collection.qrels = {q: collection.qrels[q] for q in kept}
    print(
        f"{args.data.name}: {len(collection.documents)} documents, "
        f"{len(collection.queries)} test queries, "
        f"{sum(len(r) for r in collection.qrels.values())} judgements; load {load_average()}"
    )
    embedder = LocalEmbedder(cache_entries=len(collection.documents) + 1000)
    principal_var.set(Principal("bench", "bench"))
    async with (
        retrieval_service(embedder) as address,
        channel(address, "parley.retrieval.v1.Retrieval", default_timeout=600) as chan,
    ):
        stub = pb_grpc.RetrievalStub(chan)
        rate = await index(stub, collection)
        print(f"indexed at {rate:.1f} chunks/s through IndexChunks; load {load_average()}")
        rows = await search_rows(stub, collection.queries, args.weights)
    print(f"searched; load {load_average()}")
    rows += reference_rows(embedder, collection)
    lines = table(rows, collection.qrels)
    print("\n".join(lines))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "collection": args.data.name,
                    "queries": len(collection.queries),
                    "index_chunks_per_second": rate,
                    "rows": {row.name: row.scores(collection.qrels) for row in rows},
                    "load": load_average(),
                },
                indent=1,
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a BEIR-layout folder")
    parser.add_argument("--queries", type=int, default=0, help="only the first N test queries")
    parser.add_argument(
        "--weights",
        type=float,
        nargs="*",
        default=[0.3, 0.7],
        help="dense weights of the weighted hybrid rows",
    )
    parser.add_argument("--json", type=Path, help="also write the scores here")
    args = parser.parse_args()
    if not (args.data / "qrels").is_dir():
        sys.exit(
            f"{args.data}: no collection there (corpus.jsonl, queries.jsonl, qrels/test.tsv); "
            "see bench/README.md, 'Retrieval quality', for where SciFact comes from"
        )
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
