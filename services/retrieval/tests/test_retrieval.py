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


async def stage(
    stub: pb_grpc.RetrievalStub,
    doc: str,
    version: int,
    texts: list[str],
    start: int = 0,
    *,
    replace: bool = False,
) -> pb.IndexChunksResponse:
    """One call of a version sent in several: staged, or (``replace``) the publishing one."""
    response: pb.IndexChunksResponse = await stub.IndexChunks(
        pb.IndexChunksRequest(
            knowledge_base_id="handbook",
            document_id=doc,
            document_version=version,
            staged=not replace,
            replace=replace,
            chunks=[
                pb.Chunk(chunk_id=f"{doc}:v{version}:{start + i}", text=t, position=start + i)
                for i, t in enumerate(texts)
            ],
        )
    )
    return response


async def found_ids(stub: pb_grpc.RetrievalStub, query: str) -> dict[str, set[str]]:
    """The chunk ids each mode finds for ``query`` (all of them, up to 20)."""
    modes = {"dense": pb.SEARCH_MODE_DENSE, "sparse": pb.SEARCH_MODE_SPARSE}
    modes["hybrid"] = pb.SEARCH_MODE_HYBRID
    return {
        name: {c.chunk_id for c in (await search(stub, query, top_k=20, mode=mode)).chunks}
        for name, mode in modes.items()
    }


async def counted(stub: pb_grpc.RetrievalStub) -> tuple[int, int]:
    stats = await stub.GetCollectionStats(
        pb.GetCollectionStatsRequest(knowledge_base_id="handbook")
    )
    return stats.chunk_count, stats.document_count


async def test_staged_chunks_are_found_by_nothing_until_their_version_is_published(
    retrieval: pb_grpc.RetrievalStub,
) -> None:
    await index(retrieval, "leave", replace=True)
    old = {"leave:v1:0", "leave:v1:1"}
    assert (
        await stage(retrieval, "leave", 2, ["Leave is now 30 days.", "Leave days carry over."])
    ).indexed == 2
    await stage(retrieval, "leave", 2, ["Unused leave days expire in June."], start=2)
    await stage(retrieval, "travel", 1, ["Leave days cannot be spent on travel."])
    # Neither the new version nor a document only staged shows, in any mode or count.
    assert await found_ids(retrieval, "leave days") == {"dense": old, "sparse": old, "hybrid": old}
    assert await counted(retrieval) == (2, 1)

    published = await stage(
        retrieval, "leave", 2, ["Sick leave needs a note."], start=3, replace=True
    )
    assert published.indexed == 1
    new = {f"leave:v2:{i}" for i in range(4)}
    assert await found_ids(retrieval, "leave days") == {"dense": new, "sparse": new, "hybrid": new}
    assert await counted(retrieval) == (4, 1)  # travel is still staged
    # Staged again once published (a job's retry): the searchable chunk stays as it was.
    await stage(retrieval, "leave", 2, ["Written again by a retry."])
    texts = {c.chunk_id: c.text for c in (await search(retrieval, "leave", top_k=20)).chunks}
    assert texts["leave:v2:0"] == "Leave is now 30 days."
    assert await counted(retrieval) == (4, 1)

    # A third version staged and given up: its chunks go, the published ones stay.
    await stage(retrieval, "leave", 3, ["Leave is 35 days."])
    discarded = await retrieval.DeleteDocument(
        pb.DeleteDocumentRequest(
            knowledge_base_id="handbook", document_id="leave", staged_version=3
        )
    )
    assert discarded.deleted_chunks == 1
    again = await retrieval.DeleteDocument(
        pb.DeleteDocumentRequest(
            knowledge_base_id="handbook", document_id="leave", staged_version=2
        )
    )
    assert again.deleted_chunks == 0  # version 2 is published: nothing of it is staged
    assert (await found_ids(retrieval, "leave days"))["dense"] == new
    # Deleting the document takes staged chunks too: travel's, published later, find nothing.
    deleted = await retrieval.DeleteDocument(
        pb.DeleteDocumentRequest(knowledge_base_id="handbook", document_id="travel")
    )
    assert deleted.deleted_chunks == 1
    await stage(retrieval, "travel", 1, [], replace=True)
    assert await counted(retrieval) == (4, 1)


async def test_a_publication_removes_every_other_version_staged_or_not(
    retrieval: pb_grpc.RetrievalStub,
) -> None:
    await index(retrieval, "leave", replace=True)
    await stage(retrieval, "leave", 2, ["A version whose job was superseded."])
    await stage(retrieval, "leave", 3, ["Leave is now 30 days."], replace=True)
    assert await found_ids(retrieval, "leave") == {
        "dense": {"leave:v3:0"},
        "sparse": {"leave:v3:0"},
        "hybrid": {"leave:v3:0"},
    }
    # Nothing of version 2 is left to discard: the publication removed it.
    gone = await retrieval.DeleteDocument(
        pb.DeleteDocumentRequest(
            knowledge_base_id="handbook", document_id="leave", staged_version=2
        )
    )
    assert gone.deleted_chunks == 0
    with acting_as("globex", "eve"):  # another tenant publishes nothing of acme's
        await stage(retrieval, "leave", 2, [], replace=True)
    assert await counted(retrieval) == (1, 1)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await retrieval.IndexChunks(
            pb.IndexChunksRequest(
                knowledge_base_id="handbook",
                document_id="leave",
                document_version=4,
                staged=True,
                replace=True,
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "staged and replace" in (raised.value.details() or "")


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
