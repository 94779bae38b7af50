"""Users' memories over real gRPC with the local model, on each store (conftest): their own
collection, confined to the caller's tenant and user."""

from __future__ import annotations

import grpc
import pytest

from parley.retrieval.v1 import retrieval_pb2 as pb
from parley.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from parley_testkit import acting_as

FACTS = {
    "mem_1": "The user's name is Ann.",
    "mem_2": "The user is vegetarian.",
    "mem_3": "The user's favourite colour is teal.",
}


async def remember(stub: pb_grpc.RetrievalStub, facts: dict[str, str]) -> int:
    response = await stub.IndexMemories(
        pb.IndexMemoriesRequest(
            memories=[pb.MemoryEntry(memory_id=i, text=t) for i, t in facts.items()]
        )
    )
    return response.indexed


async def recall(stub: pb_grpc.RetrievalStub, query: str, **kw: object) -> list[pb.ScoredMemory]:
    request = pb.SearchMemoriesRequest(query=query, **kw)  # type: ignore[arg-type]
    return list((await stub.SearchMemories(request)).memories)


async def test_the_most_similar_memory_comes_first(retrieval: pb_grpc.RetrievalStub) -> None:
    assert await remember(retrieval, FACTS) == 3
    found = await recall(retrieval, "What should I cook for dinner? I don't eat meat.", top_k=3)
    assert found[0].memory_id == "mem_2"
    assert found[0].text == FACTS["mem_2"]
    assert [m.score for m in found] == sorted((m.score for m in found), reverse=True)
    assert (await recall(retrieval, "what is my name", top_k=1))[0].memory_id == "mem_1"


async def test_a_threshold_leaves_out_what_is_not_similar(retrieval: pb_grpc.RetrievalStub) -> None:
    await remember(retrieval, FACTS)
    loose = await recall(retrieval, "Which colour do I like best?", top_k=3)
    strict = await recall(retrieval, "Which colour do I like best?", score_threshold=0.5)
    assert len(loose) == 3
    assert [m.memory_id for m in strict] == ["mem_3"]
    assert all(m.score >= 0.5 for m in strict)


async def test_another_user_and_another_tenant_find_nothing(
    retrieval: pb_grpc.RetrievalStub,
) -> None:
    await remember(retrieval, FACTS)
    with acting_as("acme", "bob"):
        assert await recall(retrieval, "what is my name") == []
        # Bob's deletions do not reach Ann's memories.
        deleted = await retrieval.DeleteMemories(pb.DeleteMemoriesRequest(all=True))
        assert deleted.deleted == 0
        deleted = await retrieval.DeleteMemories(pb.DeleteMemoriesRequest(memory_ids=["mem_1"]))
        assert deleted.deleted == 0
    with acting_as("globex", "ann"):
        assert await recall(retrieval, "what is my name") == []
    assert len(await recall(retrieval, "what is my name", top_k=5)) == 3


async def test_memories_are_apart_from_knowledge_bases(retrieval: pb_grpc.RetrievalStub) -> None:
    await remember(retrieval, FACTS)
    # A knowledge base named like the user holds none of the user's memories.
    found = await retrieval.Search(pb.SearchRequest(knowledge_base_id="ann", query="name"))
    assert list(found.chunks) == []
    stats = await retrieval.GetCollectionStats(
        pb.GetCollectionStatsRequest(knowledge_base_id="ann")
    )
    assert stats.chunk_count == 0


async def test_indexing_an_id_again_replaces_its_text(retrieval: pb_grpc.RetrievalStub) -> None:
    await remember(retrieval, FACTS)
    await remember(retrieval, {"mem_3": "The user's favourite colour is orange."})
    found = await recall(retrieval, "favourite colour", top_k=5)
    assert len(found) == 3
    assert {m.memory_id: m.text for m in found}["mem_3"] == "The user's favourite colour is orange."


async def test_deleting_named_memories_and_all_of_them(retrieval: pb_grpc.RetrievalStub) -> None:
    await remember(retrieval, FACTS)
    with acting_as("acme", "bob"):
        await remember(retrieval, {"mem_9": "The user's name is Bob."})
    deleted = await retrieval.DeleteMemories(
        pb.DeleteMemoriesRequest(memory_ids=["mem_1", "mem_1", "mem_unknown"])
    )
    assert deleted.deleted == 1
    assert {m.memory_id for m in await recall(retrieval, "name", top_k=5)} == {"mem_2", "mem_3"}
    assert (await retrieval.DeleteMemories(pb.DeleteMemoriesRequest(all=True))).deleted == 2
    assert await recall(retrieval, "name", top_k=5) == []
    with acting_as("acme", "bob"):
        assert [m.memory_id for m in await recall(retrieval, "name")] == ["mem_9"]


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (
            pb.IndexMemoriesRequest(memories=[pb.MemoryEntry(memory_id="m", text=" ")]),
            "invalid_memory",
        ),
        (
            pb.IndexMemoriesRequest(memories=[pb.MemoryEntry(memory_id="", text="x")]),
            "invalid_memory",
        ),
        (
            pb.IndexMemoriesRequest(memories=[pb.MemoryEntry(memory_id="m", text="x" * 2001)]),
            "invalid_memory",
        ),
        (
            pb.IndexMemoriesRequest(
                memories=[
                    pb.MemoryEntry(memory_id="m", text="a"),
                    pb.MemoryEntry(memory_id="m", text="b"),
                ]
            ),
            "invalid_memory",
        ),
        (
            pb.IndexMemoriesRequest(
                memories=[pb.MemoryEntry(memory_id=f"m{i}", text="a") for i in range(101)]
            ),
            "too_many_memories",
        ),
        (pb.SearchMemoriesRequest(query=""), "empty_query"),
        (pb.SearchMemoriesRequest(query="x", top_k=51), "invalid_top_k"),
        (pb.SearchMemoriesRequest(query="x", score_threshold=2.0), "invalid_score_threshold"),
        (pb.DeleteMemoriesRequest(memory_ids=[""]), "invalid_memory"),
    ],
)
async def test_bad_requests_are_invalid_argument(
    retrieval: pb_grpc.RetrievalStub, request_: object, code: str
) -> None:
    method = {
        pb.IndexMemoriesRequest: retrieval.IndexMemories,
        pb.SearchMemoriesRequest: retrieval.SearchMemories,
        pb.DeleteMemoriesRequest: retrieval.DeleteMemories,
    }[type(request_)]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await method(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("parley-error-code", code) in tuple(raised.value.trailing_metadata() or ())
