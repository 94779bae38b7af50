"""Sniffing: what a document is comes from its bytes; a declared type only chooses among text
types, and one the bytes contradict is refused by name."""

from __future__ import annotations

import io
import zipfile

import pytest

from parley_ingest.sniffing import DOCX, HTML, MARKDOWN, PDF, TEXT, sniff
from parley_runtime.errors import InvalidArgument
from parley_testkit.files import docx, pdf

A_PDF = pdf(["Employees have 25 days of paid leave a year."])
A_DOCX = docx([("p", "Employees have 25 days of paid leave a year.")])


def _zip(name: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(name, "<x/>")
    return out.getvalue()


@pytest.mark.parametrize(
    ("content", "declared", "filename", "expected"),
    [
        (A_PDF, "", "", PDF),
        (A_PDF, "application/octet-stream", "scan.bin", PDF),
        (b"\n  " + A_PDF, "application/pdf", "", PDF),
        (A_DOCX, "", "", DOCX),
        (A_DOCX, DOCX, "handbook.docx", DOCX),
        (b"Plain words.", "", "", TEXT),
        (b"Plain words.", "text/plain; charset=utf-8", "", TEXT),
        (b"Plain words.", "", "notes.md", MARKDOWN),
        (b"Plain words.", "text/markdown", "", MARKDOWN),
        (b"# Leave\n\nBody.", "", "", MARKDOWN),
        (b"# Leave\n\nBody.", "text/plain", "", TEXT),  # the client chose among text types
        (b"<!DOCTYPE html><html><body><p>x</p></body></html>", "text/plain", "", HTML),
        (b"<!-- saved --><html><p>x</p></html>", "", "", HTML),
        (b"<p>A fragment.</p>", "text/html", "", HTML),
        (b"a < b and c > d", "text/html", "", TEXT),  # no markup: just text
        (b"id,name\n1,Ann\n", "text/csv", "", TEXT),
    ],
)
def test_the_bytes_decide_and_a_declared_type_chooses_among_texts(
    content: bytes, declared: str, filename: str, expected: str
) -> None:
    assert sniff(content, declared, filename) == expected


@pytest.mark.parametrize(
    ("content", "declared", "fragment"),
    [
        (A_PDF, "text/plain", "'text/plain' was declared, but the bytes are a PDF"),
        (A_DOCX, "application/pdf", "'application/pdf' was declared, but the bytes are a Word"),
        (b"Plain words.", "application/pdf", "but the bytes are text"),
        (b"Plain words.", DOCX, "but the bytes are text"),
    ],
)
def test_a_declared_type_the_bytes_contradict_is_refused(
    content: bytes, declared: str, fragment: str
) -> None:
    with pytest.raises(InvalidArgument, match=fragment) as raised:
        sniff(content, declared)
    assert raised.value.code == "content_type_mismatch"


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a PNG image"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "a JPEG image"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64, "a legacy Office document"),
        (_zip("xl/workbook.xml"), "an Excel workbook"),
        (_zip("ppt/presentation.xml"), "a PowerPoint presentation"),
        (_zip("src/main.py"), "a zip archive"),
        (b"PK\x03\x04 cut short", "a damaged zip archive"),
        ("\ufeffhello".encode("utf-16"), "UTF-16 or UTF-32 text"),
    ],
)
def test_other_kinds_of_file_are_refused_by_name(content: bytes, what: str) -> None:
    for declared in ("", "application/pdf"):  # what the file is comes first
        with pytest.raises(InvalidArgument, match=f"the file is {what}") as raised:
            sniff(content, declared)
        assert raised.value.code == "unsupported_content_type"
        assert "a knowledge base takes PDF, Word (.docx), HTML, Markdown" in raised.value.message
