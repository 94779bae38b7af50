"""Queries embedded together: concurrent searches share one batch of the model.

A query's embedding is a few milliseconds of the model; under concurrent searches, embedding
each alone queues them behind each other (the model runs one batch at a time), while a batch
of eight short queries costs little more than one. So a query waits only for the batch
running when it arrives, and the queries that arrived meanwhile go together in the next. A
lone query is embedded at once. While tracing, a search's wait for its vector is the span
``embed query`` (in the search's trace), and each batch the span ``embed queries`` (in the
trace of the search that started it), linked to the ``embed query`` of every search it
serves.
"""

from __future__ import annotations

import asyncio
import time

from opentelemetry import trace

from parley_embeddings import Embedder
from parley_retrieval.metrics import EMBED_QUERY
from parley_runtime import telemetry

MAX_BATCH = 32

_tracer = trace.get_tracer("parley.retrieval")


class QueryEmbeddings:
    """Embeds queries for searches, batching those that arrive together."""

    def __init__(self, embedder: Embedder, max_batch: int = MAX_BATCH) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self._waiting: list[tuple[str, asyncio.Future[list[float]], trace.SpanContext]] = []
        self._running: asyncio.Task[None] | None = None

    async def embed(self, query: str) -> list[float]:
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        with telemetry.span(_tracer, "embed query") as span:
            self._waiting.append((query, future, span.get_span_context()))
            if self._running is None or self._running.done():
                self._running = asyncio.create_task(self._drain())
            return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch = [item for item in self._waiting[: self.max_batch] if not item[1].done()]
            del self._waiting[: self.max_batch]
            if not batch:
                continue
            links = [trace.Link(waiter) for _, _, waiter in batch if waiter.is_valid]
            try:
                with telemetry.span(
                    _tracer,
                    "embed queries",
                    {"parley.embedding.batch_size": len(batch)},
                    links=links,
                ):
                    started = time.perf_counter()
                    vectors = await self.embedder.embed([query for query, _, _ in batch])
                    EMBED_QUERY.observe(time.perf_counter() - started, telemetry.exemplar())
            except Exception as error:
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future, _), vector in zip(batch, vectors, strict=True):
                if not future.done():
                    future.set_result(vector)
