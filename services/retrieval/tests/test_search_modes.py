"""Dense, keyword and hybrid search, fusion weights, diversity and the similarity threshold,
over real gRPC on each store (see conftest)."""

from __future__ import annotations

import math

import pytest

from parley.retrieval.v1 import retrieval_pb2 as pb
from parley.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from parley_embeddings import Embedder
from parley_testkit import acting_as

HANDBOOK = {
    "badges": "Lost badges are replaced by the front desk in building Quillfeather within a day.",
    "leave": "Employees have 25 days of paid vacation a year; unused days expire in March.",
    "travel": "Trains are booked for journeys under 500 km; flights need a manager's approval.",
    "laptops": "Laptops are replaced every four years and returned to IT when people leave.",
    "parking": "Parking spaces are assigned by seniority; visitors park in the west lot.",
    "security": "Report a lost access card at once so that security can disable it.",
    # Shares a keyword with the threshold test's query, not its meaning.
    "birthdays": "Birthday cards for colleagues are signed in the kitchen on Fridays.",
}


async def index_handbook(stub: pb_grpc.RetrievalStub, kb: str = "handbook") -> None:
    for doc, text in HANDBOOK.items():
        await stub.IndexChunks(
            pb.IndexChunksRequest(
                knowledge_base_id=kb,
                document_id=doc,
                document_version=1,
                chunks=[pb.Chunk(chunk_id=f"{doc}:0", text=text)],
            )
        )


async def search(stub: pb_grpc.RetrievalStub, query: str, **fields: object) -> pb.SearchResponse:
    request = pb.SearchRequest(knowledge_base_id="handbook", query=query, **fields)  # type: ignore[arg-type]
    response: pb.SearchResponse = await stub.Search(request)
    return response


def docs(found: pb.SearchResponse) -> list[str]:
    return [c.document_id for c in found.chunks]


async def test_keyword_search_finds_exactly_the_chunks_holding_the_words(
    retrieval: pb_grpc.RetrievalStub,
) -> None:
    await index_handbook(retrieval)
    found = await search(retrieval, "Quillfeather", mode=pb.SEARCH_MODE_SPARSE, top_k=10)
    assert docs(found) == ["badges"]
    assert found.mode == pb.SEARCH_MODE_SPARSE
    # Stemmed: "replacing" and "replaced" are one word; stop words count for nothing.
    found = await search(retrieval, "the replacing of it", mode=pb.SEARCH_MODE_SPARSE, top_k=10)
    assert set(docs(found)) == {"badges", "laptops"}


async def test_only_stop_words_find_nothing_by_keyword_and_hybrid_falls_back_to_dense(
    retrieval: pb_grpc.RetrievalStub,
) -> None:
    await index_handbook(retrieval)
    assert docs(await search(retrieval, "what is it", mode=pb.SEARCH_MODE_SPARSE)) == []
    found = await search(retrieval, "what is it", mode=pb.SEARCH_MODE_HYBRID, top_k=3)
    assert found.mode == pb.SEARCH_MODE_DENSE
    assert len(found.chunks) == 3


async def test_hybrid_is_the_default_and_fuses_both_rankings(
    retrieval: pb_grpc.RetrievalStub,
) -> None:
    await index_handbook(retrieval)
    query = "replace a lost badge in Quillfeather"
    hybrid = await search(retrieval, query, top_k=3)
    assert hybrid.mode == pb.SEARCH_MODE_HYBRID
    # First in both rankings: the fused score's ceiling.
    assert docs(hybrid)[0] == "badges"
    assert hybrid.chunks[0].score == pytest.approx(1.0)
    scores = [c.score for c in hybrid.chunks]
    assert scores == sorted(scores, reverse=True)
    assert all(0 < s <= 1 for s in scores)
    dense = await search(retrieval, query, top_k=3, mode=pb.SEARCH_MODE_DENSE)
    sparse = await search(retrieval, query, top_k=3, mode=pb.SEARCH_MODE_SPARSE)
    # A weight of 1 (or 0) leaves one ranking alone.
    only_dense = await search(retrieval, query, top_k=3, dense_weight=1.0)
    only_sparse = await search(retrieval, query, top_k=len(sparse.chunks), dense_weight=0.0)
    assert docs(only_dense) == docs(dense)
    assert docs(only_sparse) == docs(sparse)


async def test_threshold_is_a_similarity_in_every_mode(
    retrieval: pb_grpc.RetrievalStub, local_embedder: Embedder
) -> None:
    await index_handbook(retrieval)
    query = "lost badge or access card"
    [query_vector] = await local_embedder.embed([query])
    vectors = dict(zip(HANDBOOK, await local_embedder.embed(list(HANDBOOK.values())), strict=True))

    def similarity(doc: str) -> float:
        a, b = vectors[doc], query_vector
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
            sum(x * x for x in a) * sum(y * y for y in b)
        )

    ranked = sorted(HANDBOOK, key=similarity, reverse=True)
    cut = (similarity(ranked[1]) + similarity(ranked[2])) / 2  # keeps exactly two
    assert "birthdays" in docs(await search(retrieval, query, mode=pb.SEARCH_MODE_SPARSE))
    assert similarity("birthdays") < cut
    for mode in (pb.SEARCH_MODE_DENSE, pb.SEARCH_MODE_SPARSE, pb.SEARCH_MODE_HYBRID):
        everything = await search(retrieval, query, mode=mode, top_k=10)
        kept = await search(retrieval, query, mode=mode, top_k=10, score_threshold=cut)
        expected = [d for d in docs(everything) if similarity(d) >= cut]
        assert docs(kept) == expected, mode
        assert set(docs(kept)) <= set(ranked[:2])
        assert docs(await search(retrieval, query, mode=mode, score_threshold=-1)) == docs(
            await search(retrieval, query, mode=mode)
        )


async def test_diversity_prefers_chunks_unlike_those_chosen(
    retrieval: pb_grpc.RetrievalStub,
) -> None:
    near_duplicates = [
        "Employees have 25 days of paid vacation a year.",
        "Employees get 25 days of paid vacation every year.",
        "Every employee has 25 paid vacation days a year.",
    ]
    await retrieval.IndexChunks(
        pb.IndexChunksRequest(
            knowledge_base_id="handbook",
            document_id="copies",
            chunks=[pb.Chunk(chunk_id=f"c{i}", text=t) for i, t in enumerate(near_duplicates)],
        )
    )
    await index_handbook(retrieval)
    query = "how many vacation days do employees have"
    plain = await search(retrieval, query, mode=pb.SEARCH_MODE_DENSE, top_k=3)
    diverse = await search(retrieval, query, mode=pb.SEARCH_MODE_DENSE, top_k=3, diversity=0.8)
    assert docs(plain).count("copies") >= 2
    assert docs(diverse).count("copies") == 1
    for mode in (pb.SEARCH_MODE_SPARSE, pb.SEARCH_MODE_HYBRID):
        found = await search(retrieval, query, mode=mode, top_k=3, diversity=0.8)
        assert docs(found).count("copies") <= 1, mode
        assert all(-1 <= c.score <= 1 for c in found.chunks)  # similarities, after diversity


async def test_keywords_of_another_tenant_or_knowledge_base_never_match(
    retrieval: pb_grpc.RetrievalStub,
) -> None:
    await index_handbook(retrieval, kb="other")
    with acting_as("globex", "eve"):
        await index_handbook(retrieval)
    for mode in (pb.SEARCH_MODE_SPARSE, pb.SEARCH_MODE_HYBRID, pb.SEARCH_MODE_DENSE):
        assert docs(await search(retrieval, "Quillfeather badge", mode=mode)) == []


async def test_keyword_weights_count_only_the_searched_knowledge_base(
    retrieval: pb_grpc.RetrievalStub,
) -> None:
    await index_handbook(retrieval)
    before = await search(retrieval, "lost badge", mode=pb.SEARCH_MODE_SPARSE)
    # Another tenant makes "badge" a common word; acme's ranking and scores do not move.
    with acting_as("globex", "eve"):
        await retrieval.IndexChunks(
            pb.IndexChunksRequest(
                knowledge_base_id="handbook",
                document_id="badges",
                chunks=[pb.Chunk(chunk_id=f"b{i}", text=f"Badge {i} badge") for i in range(20)],
            )
        )
    after = await search(retrieval, "lost badge", mode=pb.SEARCH_MODE_SPARSE)
    assert docs(after) == docs(before)
    assert [c.score for c in after.chunks] == pytest.approx([c.score for c in before.chunks])
