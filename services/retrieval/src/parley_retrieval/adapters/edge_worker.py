"""The embedded engine's process: one Qdrant Edge shard, driven over its stdin and stdout.

    python -m parley_retrieval.adapters.edge_worker

Why a process of its own: qdrant-edge 0.9 releases the GIL while it searches and counts, but
holds it while it writes, flushes, loads a shard and builds an HNSW index (measured: an
upsert of 512 chunks, a flush, loading a shard of 20,000 points and an index build held it for
0.2 s, 1 s, 1.8 s and 20 s or more). In the service's process that would stop every RPC and
health check meanwhile; here it only delays this engine's own searches during writes, and an
index build runs in a second worker (see :mod:`~parley_retrieval.adapters.edge`).

Requests (see :mod:`~parley_retrieval.adapters.edge_protocol`) are read on the main thread
and run on a small pool of threads, so searches run side by side; writes arrive one at a time
(the service waits for each). Chunks are stored as :mod:`~parley_retrieval.adapters.points`
lays them out. Publishing a version takes two engine updates (its chunks unstaged, the other
versions deleted): searches and counts wait while it runs, so none sees the one without the
other (:class:`Gate`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import qdrant_edge as qe

from parley_retrieval import ranking
from parley_retrieval.adapters import edge_protocol
from parley_retrieval.adapters.edge_protocol import ShardSettings
from parley_retrieval.adapters.points import (
    DENSE,
    DOCUMENT,
    KNOWLEDGE_BASE,
    SPARSE,
    STAGED,
    TENANT,
    VERSION,
    chunk,
    field,
    payload,
    point_id,
)
from parley_retrieval.chunks import ChunkQuery, Hit, MetadataFilter, SearchMode, StoredChunk
from parley_retrieval.sparse import SparseVector
from parley_runtime.logs import setup_logging

log = logging.getLogger("parley.retrieval.engine")
# Points per engine write: the engine holds the GIL while it writes, so searches wait at most
# one such slice (about 15 ms on a quiet machine) instead of a whole IndexChunks call.
WRITE_SLICE = 64


def shard_config(settings: ShardSettings) -> qe.EdgeConfig:
    """A new shard's configuration: the two vectors, the HNSW graph, and the size from which
    the optimizers index a segment."""
    threshold_kb = max(1, settings.index_after_points * settings.dimensions * 4 // 1024)
    return qe.EdgeConfig(
        vectors={DENSE: qe.EdgeVectorParams(size=settings.dimensions, distance=qe.Distance.Cosine)},
        sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        hnsw_config=qe.HnswIndexConfig(
            m=settings.hnsw_m, ef_construct=settings.hnsw_ef_construct, full_scan_threshold=10_000
        ),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=threshold_kb),
    )


def _match(key: str, values: list[str]) -> qe.FieldCondition:
    if len(values) == 1:
        return qe.FieldCondition(key, match=qe.MatchValue(values[0]))
    return qe.FieldCondition(key, match=qe.MatchAny(values))


def _scope(tenant_id: str, knowledge_base_id: str) -> list[Any]:
    return [_match(TENANT, [tenant_id]), _match(KNOWLEDGE_BASE, [knowledge_base_id])]


def _version(version: int) -> qe.FieldCondition:
    return qe.FieldCondition(VERSION, match=qe.MatchValue(version))


def _unstaged() -> qe.IsEmptyCondition:
    """A point without the ``staged`` field. qdrant-edge 0.9 reads a match on ``True`` as one
    on the integer 1, which no bool matches: the field's presence is tested instead (a point
    is staged with ``true`` and published by removing the field)."""
    return qe.IsEmptyCondition(STAGED)


def _staged() -> qe.Filter:
    return qe.Filter(must_not=[_unstaged()])


def _searchable(tenant_id: str, knowledge_base_id: str, *more: Any) -> qe.Filter:
    """The scope's points that searches and counts may see: every one not staged."""
    return qe.Filter(must=[*_scope(tenant_id, knowledge_base_id), *more, _unstaged()])


def _sparse(vector: SparseVector) -> qe.SparseVector:
    return qe.SparseVector(list(vector.indices), list(vector.values))


def _condition(condition: MetadataFilter) -> qe.FieldCondition:
    return _match(field(condition.key), list(condition.values))


class Gate:
    """Reads (searches, counts) pass side by side; a publication passes alone, once the reads
    under way are done, and reads arriving meanwhile wait for it."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._readers = 0
        self._alone = False

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._changed:
            while self._alone:
                self._changed.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._changed:
                self._readers -= 1
                if not self._readers:
                    self._changed.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        with self._changed:
            while self._alone:
                self._changed.wait()
            self._alone = True
            while self._readers:
                self._changed.wait()
        try:
            yield
        finally:
            with self._changed:
                self._alone = False
                self._changed.notify_all()


class Engine:
    """One shard and the store's operations on it (the worker's side of
    :class:`~parley_retrieval.adapters.edge.EdgeChunks`)."""

    def __init__(self, path: Path, settings: ShardSettings) -> None:
        self.path = path
        self.settings = settings
        self.gate = Gate()
        if (path / "segments").exists():
            self.shard = qe.EdgeShard.load(str(path))
        else:
            self.shard = qe.EdgeShard.create(str(path), shard_config(settings))
            for name, tenant in ((TENANT, True), (KNOWLEDGE_BASE, False), (DOCUMENT, False)):
                index = qe.KeywordIndexParams(is_tenant=tenant)
                self.shard.update(qe.UpdateOperation.create_field_index(name, index))
        if STAGED not in self.shard.info().payload_schema:  # also in shards made before it
            staged = qe.UpdateOperation.create_field_index(STAGED, qe.BoolIndexParams())
            self.shard.update(staged)

    def upsert(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        chunks: list[StoredChunk],
        vectors: list[list[float]],
        sparse: list[SparseVector],
        staged: bool = False,
    ) -> None:
        points = [
            qe.Point(
                point_id(tenant_id, knowledge_base_id, c.chunk_id),
                {DENSE: vector, SPARSE: _sparse(keywords)},
                payload(tenant_id, knowledge_base_id, c, staged),
            )
            for c, vector, keywords in zip(chunks, vectors, sparse, strict=True)
        ]
        # Staged: a searchable point of the same id is left alone (points.py says why).
        condition = _staged() if staged else None
        for start in range(0, len(points), WRITE_SLICE):
            piece = points[start : start + WRITE_SLICE]
            self.shard.update(qe.UpdateOperation.upsert_points(piece, condition))

    def search(self, tenant_id: str, knowledge_base_id: str, query: ChunkQuery) -> list[Hit]:
        request = self._query(tenant_id, knowledge_base_id, query)
        with self.gate.reading():
            found = self.shard.query(request)
        return _finish(found, query)

    def search_batch(
        self, searches: list[tuple[str, str, ChunkQuery]]
    ) -> list[tuple[str | None, list[Hit]]]:
        """Several searches in one engine call, each answered with its error (None) and its
        hits. The engine holds the GIL while it queries, so concurrent searches would run one
        after another anyway, and in a batch of eight each costs about half of a search alone
        (``query_batch``). A batch the engine refuses is run one search at a time, so a bad
        query fails only itself."""
        requests = [self._query(*search) for search in searches]
        try:
            with self.gate.reading():
                found = self.shard.query_batch(qe.QueryBatchRequest(requests))
        except Exception:
            log.warning("a batch of searches failed; running them one by one", exc_info=True)
            return [self._one(search) for search in searches]
        queries = [query for _, _, query in searches]
        pairs = zip(found, queries, strict=True)
        return [(None, _finish(points, query)) for points, query in pairs]

    def _one(self, search: tuple[str, str, ChunkQuery]) -> tuple[str | None, list[Hit]]:
        try:
            return None, self.search(*search)
        except Exception as error:
            return f"{type(error).__name__}: {error}", []

    def _query(self, tenant_id: str, knowledge_base_id: str, query: ChunkQuery) -> Any:
        where = _searchable(tenant_id, knowledge_base_id, *(_condition(f) for f in query.filters))
        depth = ranking.candidates(query)
        dense_params = qe.SearchParams(hnsw_ef=max(self.settings.hnsw_ef, depth))
        # IDF over the searched knowledge base: another tenant's documents never count.
        corpus = _searchable(tenant_id, knowledge_base_id)
        sparse_params = qe.SearchParams(idf=qe.IdfParams(corpus=corpus))
        dense_vector = query.dense or []

        def dense(limit: int) -> qe.Prefetch:
            return qe.Prefetch(
                limit,
                query=qe.Query.Nearest(dense_vector, using=DENSE),
                params=dense_params,
                filter=where,
                score_threshold=query.threshold,
            )

        def keywords(limit: int) -> qe.Prefetch:
            vector = _sparse(query.sparse or SparseVector((), ()))
            return qe.Prefetch(
                limit,
                query=qe.Query.Nearest(vector, using=SPARSE),
                params=sparse_params,
                filter=where,
            )

        vectors = ranking.needs_vectors(query)
        weights = list(ranking.fusion_weights(query.dense_weight))
        fusion: Any = qe.Fusion.Rrf(k=query.fusion_k, weights=weights)
        keyword_vector = _sparse(query.sparse or SparseVector((), ()))
        shown: Any = [DENSE] if vectors else False
        request: dict[str, Any] = {
            "limit": depth if vectors else query.limit,
            "filter": where,
            "with_payload": True,
            "with_vector": shown,
        }
        if query.diversity is not None:
            # Maximal marginal relevance over the mode's candidates, by the dense vector.
            if query.mode is SearchMode.HYBRID:
                both = [dense(depth), keywords(depth)]
                stage = qe.Prefetch(depth, query=fusion, prefetches=both, filter=where)
            else:
                stage = dense(depth) if query.mode is SearchMode.DENSE else keywords(depth)
            mmr = qe.Mmr(dense_vector, 1.0 - query.diversity, depth, using=DENSE)
            request |= {"query": mmr, "prefetches": [stage]}
        elif query.mode is SearchMode.HYBRID:
            request |= {"query": fusion, "prefetches": [dense(depth), keywords(depth)]}
        elif query.mode is SearchMode.SPARSE:
            request |= {
                "query": qe.Query.Nearest(keyword_vector, using=SPARSE),
                "params": sparse_params,
            }
        else:
            request |= {
                "query": qe.Query.Nearest(dense_vector, using=DENSE),
                "params": dense_params,
                "score_threshold": query.threshold,
            }
        return qe.QueryRequest(**request)

    def delete_document(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        document_id: str,
        keep_version: int | None = None,
    ) -> int:
        must = [*_scope(tenant_id, knowledge_base_id), _match(DOCUMENT, [document_id])]
        must_not: list[Any] | None = None if keep_version is None else [_version(keep_version)]
        return self._delete(qe.Filter(must=must, must_not=must_not))

    def delete_scope(self, tenant_id: str, knowledge_base_id: str) -> int:
        return self._delete(qe.Filter(must=_scope(tenant_id, knowledge_base_id)))

    def publish(
        self, tenant_id: str, knowledge_base_id: str, document_id: str, version: int
    ) -> int:
        """Unstage the version's chunks and delete the document's other versions, with no
        search or count in between; return how many chunks were deleted."""
        document = [*_scope(tenant_id, knowledge_base_id), _match(DOCUMENT, [document_id])]
        staged = qe.Filter(must=[*document, _version(version)], must_not=[_unstaged()])
        others = qe.Filter(must=document, must_not=[_version(version)])
        removed = self.shard.count(qe.CountRequest(exact=True, filter=others))
        with self.gate.alone():
            # Unstaged first: a crash between the two leaves both versions, not neither.
            self.shard.update(qe.UpdateOperation.delete_payload_by_filter(staged, [STAGED]))
            if removed:
                self.shard.update(qe.UpdateOperation.delete_points_by_filter(others))
        return removed

    def discard(
        self, tenant_id: str, knowledge_base_id: str, document_id: str, version: int
    ) -> int:
        must = [*_scope(tenant_id, knowledge_base_id), _match(DOCUMENT, [document_id])]
        return self._delete(qe.Filter(must=[*must, _version(version)], must_not=[_unstaged()]))

    def _delete(self, selector: qe.Filter) -> int:
        count = self.shard.count(qe.CountRequest(exact=True, filter=selector))
        if count:
            self.shard.update(qe.UpdateOperation.delete_points_by_filter(selector))
        return count

    def stats(self, tenant_id: str, knowledge_base_id: str) -> tuple[int, int]:
        searchable = _searchable(tenant_id, knowledge_base_id)
        with self.gate.reading():
            chunks = self.shard.count(qe.CountRequest(exact=True, filter=searchable))
            facet = qe.FacetRequest(DOCUMENT, limit=1_000_000, exact=True, filter=searchable)
            documents = self.shard.facet(facet)
        return chunks, len(documents)

    def unindexed(self) -> int:
        """Dense vectors not yet in an HNSW graph (the engine counts sparse ones as indexed
        from the start)."""
        info = self.shard.info()
        return max(0, 2 * info.points_count - info.indexed_vectors_count)

    def build(self) -> int:
        """Build the HNSW graphs and merge segments as the optimizers plan, then persist;
        returns the vectors still unindexed."""
        self.shard.optimize()
        self.shard.flush()
        return self.unindexed()

    def close(self) -> None:
        self.shard.flush()
        self.shard.close()


def _dense_of(point: qe.ScoredPoint) -> list[float] | None:
    vector: Any = point.vector
    found = vector.get(DENSE) if isinstance(vector, dict) else None
    return [float(x) for x in found] if isinstance(found, list) else None


def _finish(found: Any, query: ChunkQuery) -> list[Hit]:
    """The hits of a query's points, ranked as both stores rank them."""
    vectors = ranking.needs_vectors(query)
    candidates = [
        (chunk(p.payload or {}), float(p.score), _dense_of(p) if vectors else None) for p in found
    ]
    return ranking.finish(candidates, query)


def serve(incoming: IO[bytes], outgoing: IO[bytes], threads: int = 4) -> None:
    """Answer requests until ``close`` or the end of ``incoming``. The first request must be
    ``open`` (a folder and :class:`ShardSettings`)."""
    engine: Engine | None = None
    lock = threading.Lock()

    def answer(request_id: int, error: str | None, result: Any) -> None:
        frame = edge_protocol.encode((request_id, error, result))
        with lock:
            outgoing.write(frame)
            outgoing.flush()

    def run(request_id: int, method: str, args: tuple[Any, ...]) -> None:
        try:
            result = getattr(engine, method)(*args)
        except Exception as error:  # reported to the service, which raises it there
            log.exception("engine call failed", extra={"method": method})
            answer(request_id, f"{type(error).__name__}: {error}", None)
        else:
            answer(request_id, None, result)

    with ThreadPoolExecutor(threads, thread_name_prefix="engine") as pool:
        while True:
            try:
                request_id, method, args = edge_protocol.read(incoming)
            except EOFError:
                break
            if method == "open":
                try:
                    engine = Engine(Path(args[0]), args[1])
                except Exception as error:
                    answer(request_id, f"{type(error).__name__}: {error}", None)
                    return
                answer(request_id, None, engine.unindexed())
            elif method == "close":
                # ``close(False)``: a shard being replaced, whose folder goes next; unflushed.
                pool.shutdown(wait=True)
                if engine is not None and args[0]:
                    engine.close()
                answer(request_id, None, None)
                os._exit(0)
            else:
                pool.submit(run, request_id, method, args)
    if engine is not None:
        engine.close()


def main() -> None:
    setup_logging("retrieval", os.environ.get("LOG_LEVEL", "INFO"))
    if os.environ.get("PARLEY_ENGINE_NICE"):
        os.nice(int(os.environ["PARLEY_ENGINE_NICE"]))
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
