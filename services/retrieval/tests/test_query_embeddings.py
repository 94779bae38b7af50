"""Concurrent queries share a batch of the model; a lone query does not wait."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from parley_retrieval.query_embeddings import QueryEmbeddings


class CountingEmbedder:
    model = "counting"
    dimensions = 1

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.batches.append(list(texts))
        await asyncio.sleep(0.01)
        if self.fail_on in texts:
            raise RuntimeError("model failed")
        return [[float(len(t))] for t in texts]


async def test_queries_that_arrive_together_go_in_one_batch() -> None:
    model = CountingEmbedder()
    queries = QueryEmbeddings(model)
    texts = [f"q{'x' * i}" for i in range(8)]
    vectors = await asyncio.gather(*(queries.embed(t) for t in texts))
    assert vectors == [[float(len(t))] for t in texts]
    assert [len(b) for b in model.batches] == [8]
    # While a batch runs, those that arrive wait for it and then go together.
    running = asyncio.ensure_future(queries.embed("first"))
    await asyncio.sleep(0.002)
    later = await asyncio.gather(*(queries.embed(t) for t in ("a", "bb", "ccc")))
    assert await running == [5.0]
    assert later == [[1.0], [2.0], [3.0]]
    assert [len(b) for b in model.batches[1:]] == [1, 3]
    assert await queries.embed("alone") == [5.0]
    assert model.batches[-1] == ["alone"]


async def test_a_failed_batch_fails_its_queries_only() -> None:
    model = CountingEmbedder(fail_on="bad")
    queries = QueryEmbeddings(model)
    first = asyncio.ensure_future(queries.embed("ok"))
    await asyncio.sleep(0)
    bad, good = queries.embed("bad"), queries.embed("fine")
    results = await asyncio.gather(bad, good, return_exceptions=True)
    assert isinstance(results[0], RuntimeError)
    assert isinstance(results[1], RuntimeError)
    assert await first == [2.0]
    assert await queries.embed("later") == [5.0]


async def test_a_cancelled_query_does_not_break_the_others() -> None:
    queries = QueryEmbeddings(CountingEmbedder())
    first = asyncio.ensure_future(queries.embed("one"))
    await asyncio.sleep(0)
    gone = asyncio.ensure_future(queries.embed("two"))
    kept = asyncio.ensure_future(queries.embed("three"))
    await asyncio.sleep(0)
    gone.cancel()
    assert await first == [3.0]
    assert await kept == [5.0]
    with pytest.raises(asyncio.CancelledError):
        await gone
