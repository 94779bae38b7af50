"""Indexing and search over real gRPC with the local model, on each store (conftest)."""

from __future__ import annotations

import grpc
import pytest

from parley.retrieval.v1 import retrieval_pb2 as pb
from parley.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from parley_embeddings import LocalEmbedder
from parley_runtime.context import principal_var
from parley_testkit import acting_as

DOCS = {
    "leave": ["Employees have 25 days of paid leave a year.", "Unused leave expires in March."],
    "travel": ["Book trains for journeys under 500 km.", "Flights need a manager's approval."],
    "it": ["Laptops are replaced every four years.", "Report lost devices to the helpdesk."],
}


async def index(
    stub: pb_grpc.RetrievalStub,
    doc: str,
    version: int = 1,
    replace: bool = False,
    kb: str = "handbook",
    texts: list[str] | None = None,
) -> pb.IndexChunksResponse:
    response: pb.IndexChunksResponse = await stub.IndexChunks(
        pb.IndexChunksRequest(
            knowledge_base_id=kb,
            document_id=doc,
            document_version=version,
            title=doc.title(),
            replace=replace,
            chunks=[
                pb.Chunk(
                    chunk_id=f"{doc}:v{version}:{i}", text=t, position=i, metadata={"team": doc}
                )
                for i, t in enumerate(texts or DOCS[doc])
            ],
        )
    )
    return response


async def search(stub: pb_grpc.RetrievalStub, query: str, **kw: object) -> pb.SearchResponse:
    request = pb.SearchRequest(knowledge_base_id="handbook", query=query, **kw)  # type: ignore[arg-type]
    response: pb.SearchResponse = await stub.Search(request)
    return response


async def test_search_finds_the_relevant_document(retrieval: pb_grpc.RetrievalStub) -> None:
    for doc in DOCS:
        assert (await index(retrieval, doc)).indexed == 2
    found = await search(retrieval, "How many vacation days do I get?", top_k=3)
    assert found.chunks[0].document_id == "leave"
    assert found.chunks[0].text == DOCS["leave"][0]
    assert found.chunks[0].title == "Leave"
    assert found.chunks[0].metadata["team"] == "leave"
    scores = [c.score for c in found.chunks]
    assert scores == sorted(scores, reverse=True)
    assert found.embedding_model == LocalEmbedder.model


async def test_threshold_and_filters_narrow_the_results(retrieval: pb_grpc.RetrievalStub) -> None:
    for doc in DOCS:
        await index(retrieval, doc)
    assert len((await search(retrieval, "trains", top_k=10)).chunks) == 6
    strict = await search(retrieval, "trains", top_k=10, score_threshold=0.3)
    assert 0 < len(strict.chunks) < 6
    only_it = await search(
        retrieval, "trains", top_k=10, filters=[pb.FieldCondition(key="team", equals="it")]
    )
    assert {c.document_id for c in only_it.chunks} == {"it"}
    two = await search(
        retrieval,
        "anything",
        top_k=10,
        filters=[
            pb.FieldCondition(key="document_id", any_of=pb.StringList(values=["it", "leave"]))
        ],
    )
    assert {c.document_id for c in two.chunks} == {"it", "leave"}


async def test_another_tenant_sees_and_deletes_nothing(retrieval: pb_grpc.RetrievalStub) -> None:
    await index(retrieval, "leave")
    with acting_as("globex", "eve"):
        assert list((await search(retrieval, "leave")).chunks) == []
        deleted = await retrieval.DeleteDocument(
            pb.DeleteDocumentRequest(knowledge_base_id="handbook", document_id="leave")
        )
        assert deleted.deleted_chunks == 0
    assert len((await search(retrieval, "leave")).chunks) == 2


async def test_delete_replace_and_stats(retrieval: pb_grpc.RetrievalStub) -> None:
    await index(retrieval, "leave")
    await index(retrieval, "travel")
    stats = await retrieval.GetCollectionStats(
        pb.GetCollectionStatsRequest(knowledge_base_id="handbook")
    )
    assert (stats.chunk_count, stats.document_count, stats.dimensions) == (4, 2, 384)
    await index(retrieval, "leave", version=2, replace=True, texts=["Leave is now 30 days."])
    texts = [c.text for c in (await search(retrieval, "leave days", top_k=10)).chunks]
    assert "Leave is now 30 days." in texts
    assert DOCS["leave"][0] not in texts
    deleted = await retrieval.DeleteDocument(
        pb.DeleteDocumentRequest(knowledge_base_id="handbook", document_id="travel")
    )
    assert deleted.deleted_chunks == 2
    stats = await retrieval.GetCollectionStats(
        pb.GetCollectionStatsRequest(knowledge_base_id="handbook")
    )
    assert (stats.chunk_count, stats.document_count) == (1, 1)


async def test_indexing_the_same_chunks_again_does_not_duplicate(
    retrieval: pb_grpc.RetrievalStub,
) -> None:
    await index(retrieval, "leave")
    await index(retrieval, "leave")
    assert len((await search(retrieval, "leave", top_k=10)).chunks) == 2


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (pb.SearchRequest(query="x"), "knowledge_base_id: required"),
        (pb.SearchRequest(knowledge_base_id="kb", query="  "), "query: must not be empty"),
        (pb.SearchRequest(knowledge_base_id="kb", query="x", top_k=51), "between 1 and 50"),
        (
            pb.SearchRequest(knowledge_base_id="kb", query="x", mode=pb.SearchMode.ValueType(9)),
            "mode: unknown value 9",
        ),
        (pb.SearchRequest(knowledge_base_id="kb", query="x", dense_weight=1.5), "dense_weight"),
        (pb.SearchRequest(knowledge_base_id="kb", query="x", diversity=-0.1), "diversity"),
        (pb.SearchRequest(knowledge_base_id="kb", query="x", score_threshold=2), "score_threshold"),
        (
            pb.SearchRequest(
                knowledge_base_id="kb", query="x", filters=[pb.FieldCondition(key="a")]
            ),
            "filters[0]",
        ),
    ],
)
async def test_bad_searches_are_invalid_argument(
    retrieval: pb_grpc.RetrievalStub, request_: pb.SearchRequest, fragment: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await retrieval.Search(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (raised.value.details() or "")


async def test_bad_chunks_are_invalid_argument(retrieval: pb_grpc.RetrievalStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await index(retrieval, "leave", texts=["ok", "   "])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "chunks[1].text" in (raised.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await retrieval.IndexChunks(
            pb.IndexChunksRequest(
                knowledge_base_id="kb",
                document_id="d",
                chunks=[pb.Chunk(chunk_id=str(i), text="t") for i in range(513)],
            )
        )
    assert "at most 512" in (raised.value.details() or "")


async def test_without_a_principal_it_is_unauthenticated(retrieval: pb_grpc.RetrievalStub) -> None:
    token = principal_var.set(None)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await search(retrieval, "x")
    finally:
        principal_var.reset(token)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
