"""The embedded engine's store on a real folder: persistence across restarts, index builds
that switch generations while writes go on (publications of staged versions included), no
search ever seeing a version half published, a crashed worker started again, and the warning
about an index of the previous embedded store."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import pytest

from parley_retrieval.adapters.edge import CURRENT, EdgeChunks
from parley_retrieval.adapters.edge_protocol import ShardSettings
from parley_retrieval.chunks import ChunkQuery, Hit, MetadataFilter, SearchMode, StoredChunk
from parley_retrieval.main import store
from parley_retrieval.settings import Settings
from parley_retrieval.sparse import SparseEncoder

DIMENSIONS = 16
SETTINGS = ShardSettings(dimensions=DIMENSIONS, index_after_points=100)
ENCODER = SparseEncoder()


def vector(seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(0, 1) for _ in range(DIMENSIONS)]


def chunks(document: str, count: int, start: int = 0, version: int = 1) -> list[StoredChunk]:
    name = document if version == 1 else f"{document}:v{version}"
    return [
        StoredChunk(f"{name}:{i}", document, version, f"{document} passage {i}", "", "", i, {})
        for i in range(start, start + count)
    ]


async def put(
    store: EdgeChunks, batch: list[StoredChunk], tenant: str = "acme", staged: bool = False
) -> None:
    texts = [c.text for c in batch]
    await store.upsert(
        tenant,
        "kb",
        batch,
        [vector(hash(c.chunk_id) % 10_000) for c in batch],
        ENCODER.documents(texts),
        staged,
    )


async def nearest(store: EdgeChunks, seed: int, limit: int = 5) -> list[str]:
    query = ChunkQuery(mode=SearchMode.DENSE, limit=limit, dense=vector(seed))
    return [h.chunk.chunk_id for h in await store.search("acme", "kb", query)]


async def test_chunks_outlive_a_restart(tmp_path: Path) -> None:
    store = await EdgeChunks.open(str(tmp_path), "c", SETTINGS)
    await put(store, chunks("leave", 20))
    await store.delete_document("acme", "kb", "leave", keep_version=2)  # every chunk is v1
    await put(store, chunks("travel", 10))
    before = await nearest(store, 3)
    await store.close()

    reopened = await EdgeChunks.open(str(tmp_path), "c", SETTINGS)
    try:
        assert await reopened.stats("acme", "kb") == (10, 1)
        assert await nearest(reopened, 3) == before
        assert (tmp_path / "c" / CURRENT).read_text().strip() == "gen-000001"
    finally:
        await reopened.close()


async def test_an_index_build_switches_generation_without_stopping_searches_or_writes(
    tmp_path: Path,
) -> None:
    store = await EdgeChunks.open(str(tmp_path), "c", SETTINGS)
    try:
        await put(store, chunks("a", 150))  # over index_after_points: a build starts
        assert store._build is not None
        # Writes while it builds go to the live generation and are replayed into the new one.
        await put(store, chunks("b", 30))
        assert await store.delete_document("acme", "kb", "a", keep_version=None) == 150
        await put(store, chunks("a", 5, start=1000))
        searched = 0
        while not store._build.done():
            assert len(await nearest(store, searched)) == 5
            searched += 1
            await asyncio.sleep(0.01)
        await store.wait_for_builds()
        assert store.builds == 1
        assert searched > 0
        assert (tmp_path / "c" / CURRENT).read_text().strip() == "gen-000002"
        assert sorted(p.name for p in (tmp_path / "c").glob("gen-*")) == ["gen-000002"]
        assert await store.stats("acme", "kb") == (35, 2)
        assert set(await nearest(store, 1, limit=50)) == {
            c.chunk_id for c in chunks("b", 30) + chunks("a", 5, start=1000)
        }
    finally:
        await store.close()
    reopened = await EdgeChunks.open(str(tmp_path), "c", SETTINGS)
    try:
        assert await reopened.stats("acme", "kb") == (35, 2)
    finally:
        await reopened.close()


async def test_publications_and_discards_during_a_build_are_replayed_into_the_new_generation(
    tmp_path: Path,
) -> None:
    store = await EdgeChunks.open(str(tmp_path), "c", SETTINGS)
    try:
        await put(store, chunks("a", 150))  # over index_after_points: a build starts
        assert store._build is not None
        await put(store, chunks("b", 10), staged=True)
        await put(store, chunks("b", 10, start=10, version=2), staged=True)
        await put(store, chunks("c", 7), staged=True)
        await put(store, chunks("c", 3, start=7), staged=True)
        assert not store._build.done(), "the writes above must land while the build runs"
        assert await store.stats("acme", "kb") == (150, 1)  # staged chunks are not counted
        assert await store.publish("acme", "kb", "b", 2) == 10  # version 1's staged ones go
        assert await store.discard("acme", "kb", "c", 1) == 10
        await store.wait_for_builds()
        assert store.builds == 1
        assert await store.stats("acme", "kb") == (160, 2)
        found = await store.search(
            "acme",
            "kb",
            ChunkQuery(
                mode=SearchMode.DENSE,
                limit=50,
                dense=vector(1),
                filters=[MetadataFilter("document_id", ("b", "c"))],
            ),
        )
        assert {(h.chunk.document_id, h.chunk.document_version) for h in found} == {("b", 2)}
        assert len(found) == 10
    finally:
        await store.close()
    reopened = await EdgeChunks.open(str(tmp_path), "c", SETTINGS)
    try:
        assert await reopened.stats("acme", "kb") == (160, 2)
        assert await reopened.discard("acme", "kb", "c", 1) == 0  # gone before the switch
    finally:
        await reopened.close()


async def test_no_search_sees_a_version_half_published(tmp_path: Path) -> None:
    # Big enough a threshold that no build runs: this is about the live worker alone.
    store = await EdgeChunks.open(
        str(tmp_path), "c", ShardSettings(dimensions=DIMENSIONS, index_after_points=100_000)
    )
    per_version = 300  # large enough that each of a publication's two updates takes a while
    query = ChunkQuery(
        mode=SearchMode.DENSE,
        limit=per_version + 10,
        dense=vector(7),
        filters=[MetadataFilter("document_id", ("d",))],
    )
    seen: list[tuple[int, set[int]]] = []
    publishing = True

    async def search_meanwhile() -> None:
        while publishing:
            hits = await store.search("acme", "kb", query)
            seen.append((len(hits), {h.chunk.document_version for h in hits}))

    try:
        await put(store, chunks("d", per_version))
        searches = asyncio.gather(*(search_meanwhile() for _ in range(4)))
        for version in range(2, 12):
            await put(store, chunks("d", per_version, version=version), staged=True)
            await store.publish("acme", "kb", "d", version)
            await asyncio.sleep(0.005)
        publishing = False
        await searches
        # A search sent once the last publication has returned finds its version. (The
        # searches above may end in any order: one sent before it can be the last to end.)
        after = await store.search("acme", "kb", query)
    finally:
        await store.close()
    assert len(seen) > 20
    # Every search found one whole version: never two at once, never none.
    assert [s for s in seen if s[0] != per_version or len(s[1]) != 1] == []
    assert {h.chunk.document_version for h in after} == {11}
    assert len(after) == per_version


def ranked(hits: list[Hit]) -> tuple[list[float], set[str]]:
    """A search's answer up to ties: its scores in order, and the chunks scored above the
    last one. Chunks tied at the cut-off may come in either order, and either may be left
    out (fusion by reciprocal rank gives equal scores often)."""
    scores = [round(hit.score, 9) for hit in hits]
    last = scores[-1] if scores else 0.0
    above = {hit.chunk.chunk_id for hit, score in zip(hits, scores, strict=True) if score > last}
    return scores, above


async def test_concurrent_searches_go_to_the_engine_together_with_their_own_answers(
    tmp_path: Path,
) -> None:
    store = await EdgeChunks.open(str(tmp_path), "c", SETTINGS)
    try:
        await put(store, chunks("doc", 60))
        modes = [SearchMode.DENSE, SearchMode.SPARSE, SearchMode.HYBRID]
        queries = [
            ChunkQuery(
                mode=modes[seed % 3],
                limit=3,
                dense=vector(seed),
                sparse=ENCODER.query(f"passage {seed}"),
            )
            for seed in range(12)
        ]
        alone = [await store.search("acme", "kb", q) for q in queries]
        calls: list[str] = []
        forward = store._searches._call

        async def recorded(method: str, *args: object) -> object:
            calls.append(method)
            return await forward(method, *args)

        store._searches._call = recorded
        # A query the engine refuses (a vector of the wrong size) fails only itself.
        bad = ChunkQuery(mode=SearchMode.DENSE, limit=3, dense=[1.0, 2.0])
        together = await asyncio.gather(
            *(store.search("acme", "kb", q) for q in [*queries, bad]), return_exceptions=True
        )
        assert "search_batch" in calls
        assert len(calls) < len(queries) + 1
        for batched, single in zip(together[:-1], alone, strict=True):
            assert isinstance(batched, list)
            assert ranked(batched) == ranked(single)
        assert isinstance(together[-1], Exception)
    finally:
        await store.close()


async def test_a_stopped_engine_is_started_again(tmp_path: Path) -> None:
    store = await EdgeChunks.open(str(tmp_path), "c", SETTINGS)
    try:
        await put(store, chunks("a", 10))
        assert store._live is not None
        store._live.process.kill()
        await store._live.process.wait()
        await asyncio.sleep(0.05)
        assert not store._live.alive
        assert len(await nearest(store, 1)) == 5  # the call starts it again from its folder
        assert await store.ready()
        store._live.process.kill()
        await store._live.process.wait()
        assert await store.ready()  # the readiness check starts it again too
    finally:
        await store.close()


async def test_an_index_of_the_previous_embedded_store_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "meta.json").write_text('{"collections": {}}')
    settings = Settings(qdrant_path=str(tmp_path), embeddings_provider="local")
    with caplog.at_level(logging.WARNING, logger="parley.retrieval"):
        opened = await store(settings)
    try:
        assert any("re-index" in r.getMessage() for r in caplog.records)
    finally:
        await opened.close()
