"""A user's documents exported and erased (ingest's ExportUserData and DeleteUserData) with the
real retrieval service: the chunks go from the index, the rows and jobs from ingest's
database, and nothing of another user or tenant is touched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from parley.ingest.v1 import ingest_pb2 as pb
from parley.ingest.v1 import ingest_pb2_grpc as pb_grpc
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_ingest.tables import DocumentRow, JobRow
from parley_runtime import db
from parley_runtime.grpc_client import channel
from parley_testkit import acting_as
from parley_testkit.services import document as doc
from parley_testkit.services import ingest_service, job_updates

LEAVE = "# Leave\n\nEmployees have 25 days of paid leave a year.\n\n# Travel\n\nBook trains."
EXPENSES = "# Expenses\n\nReceipts are filed within 30 days of the purchase."


@dataclass
class Running:
    ingest: pb_grpc.IngestStub
    retrieval: ret_grpc.RetrievalStub
    database_url: str


@pytest.fixture
async def running(database_url: str, retrieval_address: str) -> AsyncIterator[Running]:
    async with (
        channel(retrieval_address, "parley.retrieval.v1.Retrieval") as chan,
        ingest_service(database_url, retrieval_address) as ingest,
    ):
        yield Running(ingest, ret_grpc.RetrievalStub(chan), database_url)


async def _indexed(running: Running, request: pb.CreateDocumentRequest) -> pb.Document:
    created = await running.ingest.CreateDocument(request)
    states = await job_updates(running.ingest, created.job.id)
    assert states[-1].state == pb.JOB_STATE_SUCCEEDED
    return created.document


async def _chunks(running: Running, kb: str, query: str) -> list[str]:
    found = await running.retrieval.Search(
        ret.SearchRequest(knowledge_base_id=kb, query=query, top_k=20)
    )
    return [c.document_id for c in found.chunks]


async def _job_users(url: str) -> list[str]:
    engine = db.create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(JobRow.user_id).order_by(JobRow.user_id))
            return [r.user_id for r in rows]
    finally:
        await engine.dispose()


async def test_a_users_documents_are_exported_then_erased_everywhere(running: Running) -> None:
    leave = await _indexed(running, doc(LEAVE, title="Leave"))
    expenses = await _indexed(running, doc(EXPENSES, kb="finance", title="Expenses"))
    with acting_as("acme", "bob"):
        bobs = await _indexed(running, doc("# Bob\n\nBob's notes on leave.", title="Bob"))
        # Bob's own copy of a leave policy, in the same knowledge base.
        await _indexed(running, doc(LEAVE + "\n\nUpdated.", external_id="leave", title="Leave"))
    with acting_as("globex", "ann"):
        theirs = await _indexed(running, doc(LEAVE, title="Globex leave"))

    exported = [d async for d in running.ingest.ExportUserData(pb.ExportUserDataRequest())]
    assert [(d.id, d.title, d.knowledge_base_id) for d in exported] == [
        (leave.id, "Leave", "handbook"),
        (expenses.id, "Expenses", "finance"),
    ]
    assert leave.id in await _chunks(running, "handbook", "days of leave")

    deleted = await running.ingest.DeleteUserData(pb.DeleteUserDataRequest())
    assert (deleted.documents_deleted, deleted.jobs_deleted) == (2, 2)
    assert deleted.chunks_deleted >= 3  # two sections of the leave policy, one of expenses
    assert leave.id not in await _chunks(running, "handbook", "days of leave")
    assert await _chunks(running, "finance", "receipts") == []
    assert [d async for d in running.ingest.ExportUserData(pb.ExportUserDataRequest())] == []
    # Nobody else lost anything: bob's documents, globex's ann's.
    assert bobs.id in await _chunks(running, "handbook", "Bob's notes")
    with acting_as("globex", "ann"):
        assert theirs.id in await _chunks(running, "handbook", "days of leave")
    # No job row names ann of acme any more; bob's and globex's remain.
    users = await _job_users(running.database_url)
    assert users.count("ann") == 1  # globex's ann
    assert users.count("bob") == 2

    again = await running.ingest.DeleteUserData(pb.DeleteUserDataRequest())
    assert (again.documents_deleted, again.jobs_deleted, again.chunks_deleted) == (0, 0, 0)


async def test_a_job_of_a_surviving_document_passes_to_its_creator(running: Running) -> None:
    with acting_as("acme", "bob"):
        bobs = await _indexed(running, doc(LEAVE, external_id="leave", title="Leave"))
    # ann uploads the current version of bob's document: its current job names her.
    await _indexed(running, doc(LEAVE + "\n\nUpdated.", external_id="leave", title="Leave"))
    deleted = await running.ingest.DeleteUserData(pb.DeleteUserDataRequest())
    assert (deleted.documents_deleted, deleted.jobs_deleted) == (0, 0)
    engine = db.create_engine(running.database_url)
    try:
        async with engine.connect() as conn:
            current = (
                await conn.execute(
                    select(JobRow.user_id)
                    .join(DocumentRow, DocumentRow.job_id == JobRow.id)
                    .where(DocumentRow.id == bobs.id)
                )
            ).scalar_one()
            named = await conn.scalar(
                select(func.count()).select_from(JobRow).where(JobRow.user_id == "ann")
            )
    finally:
        await engine.dispose()
    assert (current, named) == ("bob", 0)
    with acting_as("acme", "bob"):
        # The document still works: the same bytes sent again find it.
        again = await running.ingest.CreateDocument(doc(LEAVE + "\n\nUpdated.", title="Leave"))
        assert (again.deduplicated, again.document.id) == (True, bobs.id)
