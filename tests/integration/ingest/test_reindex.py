"""Indexing again from the bytes ingest keeps, with the real retrieval service: after a change
of chunking (ingest started again with smaller chunks) and after a change of embedding model
(a retrieval whose collection is empty), each document gets a new version whose chunks
replace the old ones; the operator's command queues the same for every tenant, straight on
the database, and a running replica takes the jobs up."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from parley.ingest.v1 import ingest_pb2 as pb
from parley.ingest.v1 import ingest_pb2_grpc as pb_grpc
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_embeddings import Embedder
from parley_ingest import reindex
from parley_ingest.settings import Settings
from parley_runtime.grpc_client import channel
from parley_testkit.services import document as doc
from parley_testkit.services import ingest_service, job_updates, retrieval_service

RULES = "\n\n".join(
    f"Rule {i} of the leave policy: staff in group {i} get {20 + i} days of paid leave a year."
    for i in range(10)
)


@pytest.fixture
async def retrieval(retrieval_address: str) -> AsyncIterator[ret_grpc.RetrievalStub]:
    async with channel(retrieval_address, "parley.retrieval.v1.Retrieval") as chan:
        yield ret_grpc.RetrievalStub(chan)


async def chunk_ids(retrieval: ret_grpc.RetrievalStub, kb: str = "handbook") -> set[str]:
    found = await retrieval.Search(
        ret.SearchRequest(
            knowledge_base_id=kb, query="paid leave", top_k=50, mode=ret.SEARCH_MODE_DENSE
        )
    )
    return {c.chunk_id for c in found.chunks}


async def indexed(ingest: pb_grpc.IngestStub, request: pb.CreateDocumentRequest) -> str:
    created = await ingest.CreateDocument(request)
    assert (await job_updates(ingest, created.job.id))[-1].state == pb.JOB_STATE_SUCCEEDED
    return str(created.document.id)


async def test_a_reindex_after_a_chunking_change_replaces_each_documents_chunks(
    database_url: str, retrieval_address: str, retrieval: ret_grpc.RetrievalStub
) -> None:
    async with ingest_service(database_url, retrieval_address) as ingest:
        rules = await indexed(ingest, doc(RULES))
        short = await indexed(ingest, doc("Sick leave needs a note after three days."))
        elsewhere = await indexed(ingest, doc(RULES, kb="other"))
    assert await chunk_ids(retrieval) == {f"{rules}:v1:0", f"{short}:v1:0"}

    smaller = {"chunk_size_chars": 200, "chunk_overlap_chars": 0}
    async with ingest_service(database_url, retrieval_address, **smaller) as ingest:
        queued = await ingest.ReindexDocuments(
            pb.ReindexDocumentsRequest(knowledge_base_id="handbook")
        )
        assert queued.queued == 2
        assert [(d.document_id, d.version) for d in queued.documents] == [(rules, 2), (short, 2)]
        for reindexed in queued.documents:
            states = await job_updates(ingest, reindexed.job_id)
            assert states[-1].state == pb.JOB_STATE_SUCCEEDED
        document = await ingest.GetDocument(pb.GetDocumentRequest(document_id=rules))
        assert (document.version, document.status, document.chunk_count) == (
            2,
            pb.DOCUMENT_STATUS_READY,
            5,
        )
        other = await ingest.GetDocument(pb.GetDocumentRequest(document_id=elsewhere))
        assert other.version == 1  # another knowledge base is left alone
    assert await chunk_ids(retrieval) == {f"{rules}:v2:{i}" for i in range(5)} | {f"{short}:v2:0"}
    assert await chunk_ids(retrieval, "other") == {f"{elsewhere}:v1:0"}


async def test_a_reindex_fills_a_retrieval_whose_collection_is_new(
    database_url: str, retrieval_address: str, local_embedder: Embedder
) -> None:
    async with ingest_service(database_url, retrieval_address) as ingest:
        rules = await indexed(ingest, doc(RULES))
        other = await indexed(ingest, doc(RULES, kb="other"))
    # A new embedding model: retrieval starts an empty collection.
    async with (
        retrieval_service(local_embedder) as fresh,
        channel(fresh, "parley.retrieval.v1.Retrieval") as chan,
        ingest_service(database_url, fresh) as ingest,
    ):
        retrieval = ret_grpc.RetrievalStub(chan)
        assert await chunk_ids(retrieval) == set()
        queued = await ingest.ReindexDocuments(
            pb.ReindexDocumentsRequest(knowledge_base_id="handbook", document_id=rules)
        )
        assert queued.queued == 1
        await job_updates(ingest, queued.documents[0].job_id)
        assert await chunk_ids(retrieval) == {f"{rules}:v2:0"}
        for request in (
            pb.ReindexDocumentsRequest(knowledge_base_id="handbook", document_id="doc_nope"),
            # A document of another knowledge base is not one of this one's.
            pb.ReindexDocumentsRequest(knowledge_base_id="handbook", document_id=other),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await ingest.ReindexDocuments(request)
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        nothing = await ingest.ReindexDocuments(
            pb.ReindexDocumentsRequest(knowledge_base_id="no-such-knowledge-base")
        )
        assert (nothing.queued, list(nothing.documents)) == (0, [])


async def test_the_operators_reindex_is_taken_up_by_a_running_replica(
    database_url: str, retrieval_address: str, retrieval: ret_grpc.RetrievalStub
) -> None:
    # A short lease: the replica looks for queued jobs every half of it.
    async with ingest_service(database_url, retrieval_address, job_lease_seconds=1) as ingest:
        rules = await indexed(ingest, doc(RULES))
        args = argparse.Namespace(all=True, tenant=None, knowledge_base=None, dry_run=False)
        assert await reindex.run(Settings(database_url=database_url), args) == 0
        async with asyncio.timeout(15):
            while True:
                document = await ingest.GetDocument(pb.GetDocumentRequest(document_id=rules))
                if document.version == 2 and document.status == pb.DOCUMENT_STATUS_READY:
                    break
                await asyncio.sleep(0.1)
    assert await chunk_ids(retrieval) == {f"{rules}:v2:0"}
