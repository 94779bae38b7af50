"""Queries embedded together: concurrent searches share one batch of the model.

A query's embedding is a few milliseconds of the model; under concurrent searches, embedding
each alone queues them behind each other (the model runs one batch at a time), while a batch
of eight short queries costs little more than one. So a query waits only for the batch
running when it arrives, and the queries that arrived meanwhile go together in the next. A
lone query is embedded at once.
"""

from __future__ import annotations

import asyncio

from parley_embeddings import Embedder

MAX_BATCH = 32


class QueryEmbeddings:
    """Embeds queries for searches, batching those that arrive together."""

    def __init__(self, embedder: Embedder, max_batch: int = MAX_BATCH) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self._waiting: list[tuple[str, asyncio.Future[list[float]]]] = []
        self._running: asyncio.Task[None] | None = None

    async def embed(self, query: str) -> list[float]:
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        self._waiting.append((query, future))
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch = [item for item in self._waiting[: self.max_batch] if not item[1].done()]
            del self._waiting[: self.max_batch]
            if not batch:
                continue
            try:
                vectors = await self.embedder.embed([query for query, _ in batch])
            except Exception as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), vector in zip(batch, vectors, strict=True):
                if not future.done():
                    future.set_result(vector)
