"""A tenant's knowledge bases listed with their documents' counts, and indexing again from the
stored bytes: ``ReindexDocuments`` over real gRPC (no retrieval behind it: its jobs fail, which
is what a retry by re-index needs), and the operator's ``parley-ingest reindex`` on the
database, in-process and as the command a process runs."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.ingest.v1 import ingest_pb2 as pb
from parley.ingest.v1 import ingest_pb2_grpc as pb_grpc
from parley_ingest import reindex
from parley_ingest.adapters.store import IngestStore, NewDocument
from parley_ingest.main import MIGRATIONS, VERSION_TABLE
from parley_ingest.settings import Settings
from parley_runtime import db
from parley_runtime.context import Principal
from parley_testkit import acting_as
from parley_testkit.services import document as doc
from parley_testkit.services import ingest_service, job_updates

NOWHERE = "127.0.0.1:1"  # no retrieval service listens here: its calls fail at once


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    with acting_as("acme", "ann"):
        yield


@pytest.fixture
async def ingest(database_url: str) -> AsyncIterator[pb_grpc.IngestStub]:
    # One attempt: a job fails as soon as retrieval does not answer.
    async with ingest_service(database_url, NOWHERE, job_max_attempts=1) as stub:
        yield stub


async def ended(ingest: pb_grpc.IngestStub, job_id: str) -> pb.Job:
    return (await asyncio.wait_for(job_updates(ingest, job_id), 10))[-1]


async def test_knowledge_bases_are_listed_by_name_with_their_documents_by_status(
    ingest: pb_grpc.IngestStub,
) -> None:
    for kb, count in (("handbook", 3), ("benefits", 1), ("zoning", 2)):
        for i in range(count):
            created = await ingest.CreateDocument(doc(f"Document {i} of {kb}.", kb=kb))
            await ended(ingest, created.job.id)
    with acting_as("globex", "eve"):
        await ingest.CreateDocument(doc("Globex's own.", kb="secrets"))
        theirs = await ingest.ListKnowledgeBases(pb.ListKnowledgeBasesRequest())
        assert [k.id for k in theirs.knowledge_bases] == ["secrets"]

    listed = await ingest.ListKnowledgeBases(pb.ListKnowledgeBasesRequest())
    assert [(k.id, k.document_count) for k in listed.knowledge_bases] == [
        ("benefits", 1),
        ("handbook", 3),
        ("zoning", 2),
    ]
    handbook = listed.knowledge_bases[1]
    # With no retrieval behind it, every job failed.
    assert (handbook.failed_count, handbook.ready_count, handbook.pending_count) == (3, 0, 0)
    assert handbook.update_time.seconds > 0
    assert listed.next_page_token == ""

    names: list[str] = []
    token = ""
    while True:
        page = await ingest.ListKnowledgeBases(
            pb.ListKnowledgeBasesRequest(page_size=2, page_token=token)
        )
        names += [k.id for k in page.knowledge_bases]
        token = page.next_page_token
        if not token:
            break
    assert names == ["benefits", "handbook", "zoning"]
    for bad in (
        pb.ListKnowledgeBasesRequest(page_size=201),
        pb.ListKnowledgeBasesRequest(page_token="not-a-token"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await ingest.ListKnowledgeBases(bad)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_reindex_retries_a_failed_document_under_a_new_version(
    ingest: pb_grpc.IngestStub,
) -> None:
    created = await ingest.CreateDocument(doc("Leave is 25 days."))
    failed = await ended(ingest, created.job.id)
    assert (failed.state, failed.error_code) == (pb.JOB_STATE_FAILED, "retrieval_unavailable")
    await ingest.CreateDocument(doc("Another knowledge base's.", kb="other"))

    queued = await ingest.ReindexDocuments(pb.ReindexDocumentsRequest(knowledge_base_id="handbook"))
    assert queued.queued == 1
    [again] = queued.documents
    assert (again.document_id, again.version) == (created.document.id, 2)
    assert again.job_id != created.job.id
    document = await ingest.GetDocument(pb.GetDocumentRequest(document_id=created.document.id))
    assert (document.version, document.job_id) == (2, again.job_id)
    assert document.status in (pb.DOCUMENT_STATUS_PENDING, pb.DOCUMENT_STATUS_PROCESSING)
    assert (await ended(ingest, again.job_id)).state == pb.JOB_STATE_FAILED  # tried again

    with acting_as("globex", "eve"):  # another tenant's documents are not in reach
        nothing = await ingest.ReindexDocuments(
            pb.ReindexDocumentsRequest(knowledge_base_id="handbook")
        )
        assert nothing.queued == 0
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await ingest.ReindexDocuments(
                pb.ReindexDocumentsRequest(
                    knowledge_base_id="handbook", document_id=created.document.id
                )
            )
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ingest.ReindexDocuments(pb.ReindexDocumentsRequest())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "knowledge_base_id: required" in (raised.value.details() or "")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await db.upgrade(MIGRATIONS, database_url, VERSION_TABLE)
    engine = db.create_engine(database_url)
    yield engine
    await engine.dispose()


async def stored(store: IngestStore, tenant: str, kb: str, text: str) -> str:
    created = await store.create(
        Principal(tenant, "ann"),
        NewDocument(kb, "", "", "text/plain", {}, ""),
        text.encode(),
        hashlib.sha256(text.encode()).hexdigest(),
    )
    return created.document.id


def options(**given: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "all": False,
        "tenant": None,
        "knowledge_base": None,
        "dry_run": False,
    }
    return argparse.Namespace(**(values | given))


async def test_the_operators_reindex_queues_every_tenants_documents(
    database_url: str, engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    store = IngestStore(engine)
    acme = [await stored(store, "acme", "handbook", f"Rule {i}.") for i in range(3)]
    acme_other = await stored(store, "acme", "other", "Elsewhere.")
    globex = await stored(store, "globex", "handbook", "Globex's rule.")
    deleting = await stored(store, "globex", "handbook", "Being deleted.")
    await store.mark_deleting(Principal("globex", "eve"), deleting)
    settings = Settings(database_url=database_url)

    assert await reindex.run(settings, options(all=True, dry_run=True)) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "acme\thandbook\t3",
        "acme\tother\t1",
        "globex\thandbook\t1",
        "dry run: would queue 5 jobs in 3 knowledge bases",
    ]
    assert (await store.document(Principal("acme", "ann"), acme[0])).version == 1

    assert await reindex.run(settings, options(tenant="acme", knowledge_base="handbook")) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("queued 3 jobs in 1 knowledge")
    for document_id in acme:
        document = await store.document(Principal("acme", "ann"), document_id)
        job = await store.job(Principal("acme", "ann"), document.job_id)
        assert (document.version, document.status, job.state, job.version) == (
            2,
            "pending",
            "queued",
            2,
        )
    assert (await store.document(Principal("acme", "ann"), acme_other)).version == 1

    assert await reindex.run(settings, options(all=True)) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("queued 5 jobs in 3 knowledge")
    versions = {
        document_id: (await store.document(Principal(tenant, "ann"), document_id)).version
        for tenant, document_id in [
            *(("acme", d) for d in acme),
            ("acme", acme_other),
            ("globex", globex),
            ("globex", deleting),
        ]
    }
    assert versions == {acme[0]: 3, acme[1]: 3, acme[2]: 3, acme_other: 2, globex: 2, deleting: 1}
    assert set(await store.unfinished()) >= {
        (await store.document(Principal("acme", "ann"), d)).job_id for d in acme
    }


async def test_the_reindex_command_runs_as_a_process(
    engine: AsyncEngine, database_url: str
) -> None:
    await stored(IngestStore(engine), "acme", "handbook", "Rule 1.")
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "parley_ingest.main", "reindex"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args], env=env, capture_output=True, text=True, timeout=60
        )

    done = await asyncio.to_thread(run, "--all", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "acme\thandbook\t1",
        "dry run: would queue 1 jobs in 1 knowledge bases",
    ]
    # Every tenant's documents only when asked for: a command naming no scope is refused.
    refused = await asyncio.to_thread(run)
    assert refused.returncode == 2
    assert "one of the arguments --all --tenant is required" in refused.stderr


async def test_the_reindex_command_refuses_an_empty_tenant(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(database_url=database_url)
    assert await reindex.run(settings, options(tenant=" ")) == 2
    assert "--tenant needs a tenant id" in capsys.readouterr().err
