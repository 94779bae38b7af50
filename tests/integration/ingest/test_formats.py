"""PDF, Word and HTML documents through ingest into the real retrieval service: streamed up in
pieces, parsed, chunked and found by search, a PDF's passages naming their page. The files are
real, written in the test with pypdf and python-docx."""

from __future__ import annotations

from collections.abc import AsyncIterator

from parley.ingest.v1 import ingest_pb2 as pb
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_ingest.sniffing import DOCX, PDF
from parley_runtime.grpc_client import channel
from parley_testkit.files import docx, pdf
from parley_testkit.services import ingest_service, job_updates

# Pages of about 1,000 characters: each chunk (1,200 at most) starts on a page of its own.
FILLER = "\n".join(["Figures in this section are audited and rounded to the nearest unit."] * 13)
REPORT = [
    f"Annual report\nRevenue grew in every region this year.\n{FILLER}",
    f"Staff\nThe company employed 412 people at the end of the year.\n{FILLER}",
    f"Outlook\nA new office opens in Lisbon in the spring.\n{FILLER}",
]


async def _pieces(
    content: bytes, meta: pb.DocumentMetadata, size: int = 700
) -> AsyncIterator[pb.UploadDocumentRequest]:
    yield pb.UploadDocumentRequest(document=meta)
    for start in range(0, len(content), size):
        yield pb.UploadDocumentRequest(content=content[start : start + size])


async def test_a_streamed_pdf_is_found_with_the_page_of_its_passage(
    database_url: str, retrieval_address: str
) -> None:
    content = pdf(REPORT)
    async with (
        ingest_service(database_url, retrieval_address) as ingest,
        channel(retrieval_address, "parley.retrieval.v1.Retrieval") as chan,
    ):
        # No type declared, a file name that says nothing: the bytes say PDF.
        meta = pb.DocumentMetadata(knowledge_base_id="reports", filename="report-2026")
        created = await ingest.UploadDocument(_pieces(content, meta))
        assert len(content) > 700 * 2  # it did come in several pieces
        assert (created.document.content_type, created.document.size_bytes) == (PDF, len(content))
        states = await job_updates(ingest, created.job.id)
        assert states[-1].state == pb.JOB_STATE_SUCCEEDED, states[-1].error
        found = await ret_grpc.RetrievalStub(chan).Search(
            ret.SearchRequest(knowledge_base_id="reports", query="how many employees", top_k=1)
        )
    [best] = found.chunks
    assert "412 people" in best.text
    assert best.metadata["page"] == "2"
    assert (best.title, best.source_uri) == ("report-2026", "report-2026")


async def test_word_and_html_documents_are_found_by_their_text(
    database_url: str, retrieval_address: str
) -> None:
    handbook = docx(
        [
            ("title", "Handbook"),
            ("h1", "Leave"),
            ("p", "Employees have 25 days of paid leave a year."),
            [["Grade", "Extra days"], ["Senior", "5"]],
        ]
    )
    page = (
        "<html><body><nav>Home | People | Log in</nav><main><h1>Travel</h1><p>Trains in "
        "second class for trips under four hours; flights need a manager's approval.</p>"
        "</main><footer>Copyright Acme</footer></body></html>"
    )
    async with (
        ingest_service(database_url, retrieval_address) as ingest,
        channel(retrieval_address, "parley.retrieval.v1.Retrieval") as chan,
    ):
        for content, declared in ((handbook, DOCX), (page.encode(), "text/html")):
            created = await ingest.CreateDocument(
                pb.CreateDocumentRequest(
                    document=pb.DocumentMetadata(knowledge_base_id="hr", content_type=declared),
                    content=content,
                )
            )
            states = await job_updates(ingest, created.job.id)
            assert states[-1].state == pb.JOB_STATE_SUCCEEDED, states[-1].error
        search = ret_grpc.RetrievalStub(chan).Search
        leave = await search(ret.SearchRequest(knowledge_base_id="hr", query="senior extra days"))
        travel = await search(ret.SearchRequest(knowledge_base_id="hr", query="booking a flight"))
    assert "Senior | 5" in leave.chunks[0].text
    assert leave.chunks[0].metadata["section"] == "Handbook > Leave"
    assert "flights need a manager's approval" in travel.chunks[0].text
    assert all("Log in" not in c.text and "Copyright" not in c.text for c in travel.chunks)
