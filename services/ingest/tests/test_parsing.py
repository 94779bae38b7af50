"""Parsing: a document's bytes in, its text out (pages, headings), or a refusal with a code
that says what is wrong with the file. The PDFs and Word documents are real files, written
here with pypdf and python-docx."""

from __future__ import annotations

import io
import zipfile

import pytest

from parley_ingest.parsers import PAGE_BREAK, ParsedText, UnreadableDocument
from parley_ingest.parsers.html import visible_text
from parley_ingest.parsers.word import MAX_UNPACKED_BYTES
from parley_ingest.parsing import parse
from parley_ingest.sniffing import DOCX, HTML, MARKDOWN, PDF, TEXT
from parley_testkit.files import docx, pdf


def test_text_and_markdown_are_read_as_utf8() -> None:
    assert parse("é\r\nok".encode(), TEXT) == ParsedText("é\nok", markdown=False)
    assert parse("\ufeff# Title\n\nBody".encode(), MARKDOWN) == ParsedText(
        "# Title\n\nBody", markdown=True
    )


def test_bytes_that_are_not_utf8_text_are_refused_clearly() -> None:
    with pytest.raises(UnreadableDocument, match="content: not UTF-8 text") as raised:
        parse(b"caf\xe9", TEXT)
    assert raised.value.code == "invalid_encoding"
    with pytest.raises(UnreadableDocument, match="content: contains NUL bytes") as raised:
        parse(b"a\x00b", TEXT)
    assert raised.value.code == "binary_content"


def test_a_pdf_is_read_page_by_page() -> None:
    parsed = parse(
        pdf(
            [
                "Leave policy\nEmployees have 25 days of paid leave.",
                "Travel (trains)\nSecond class.",
            ]
        ),
        PDF,
    )
    assert parsed.paged
    assert not parsed.markdown
    first, second = parsed.text.split(PAGE_BREAK)
    assert "Employees have 25 days of paid leave." in first
    assert "Travel (trains)" in second
    assert "25 days" not in second


def test_a_pdf_encrypted_only_against_editing_opens_without_a_password() -> None:
    parsed = parse(pdf(["Open to every reader."], owner_password="editor"), PDF)
    assert "Open to every reader." in parsed.text


@pytest.mark.parametrize(
    ("content", "code", "fragment"),
    [
        (pdf(["Secret plans."], password="s3cret"), "pdf_encrypted", "protected by a password"),
        (pdf(["", ""]), "pdf_no_text", "no text layer"),
        (pdf(["", "", "7"]), "pdf_no_text", "run OCR"),  # a page number is not a text layer
        (b"%PDF-1.7\n1 0 obj garbage", "pdf_unreadable", "cannot be read"),
    ],
    ids=["password", "scan", "scan-with-page-number", "damaged"],
)
def test_a_pdf_without_readable_text_fails_with_its_reason(
    content: bytes, code: str, fragment: str
) -> None:
    with pytest.raises(UnreadableDocument, match=fragment) as raised:
        parse(content, PDF)
    assert raised.value.code == code


def test_a_word_document_keeps_headings_lists_and_tables_in_order() -> None:
    parsed = parse(
        docx(
            [
                ("title", "Handbook"),
                ("h1", "Leave"),
                ("p", "Employees have 25 days of paid leave a year."),
                [["Grade", "Days"], ["Senior", "30"]],
                ("li", "Ask your manager first"),
                ("h2", "Carry-over"),
                ("p", "# of days carried over: five at most."),
            ]
        ),
        DOCX,
    )
    assert parsed.markdown
    assert parsed.text.split("\n\n") == [
        "# Handbook",
        "## Leave",
        "Employees have 25 days of paid leave a year.",
        "Grade | Days",
        "Senior | 30",
        "- Ask your manager first",
        "### Carry-over",
        " # of days carried over: five at most.",  # body text, not a heading
    ]


def test_a_word_document_that_is_empty_or_damaged_fails_with_its_reason() -> None:
    with pytest.raises(UnreadableDocument) as raised:
        parse(docx([]), DOCX)
    assert raised.value.code == "empty_document"
    whole = docx([("p", "Some text.")])
    with pytest.raises(UnreadableDocument, match="cannot be read") as raised:
        parse(whole[: len(whole) // 2], DOCX)
    assert raised.value.code == "docx_unreadable"


def test_a_word_document_that_unpacks_too_large_is_refused_unread() -> None:
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"\0" * (MAX_UNPACKED_BYTES + 1))
    assert len(bomb.getvalue()) < 1024 * 1024  # small as sent
    with pytest.raises(UnreadableDocument, match="unpacks to more than 256 MiB") as raised:
        parse(bomb.getvalue(), DOCX)
    assert raised.value.code == "docx_unreadable"


def test_html_loses_its_boilerplate_and_keeps_its_headings() -> None:
    page = (
        "<!doctype html><html><head><title>Intranet</title><script>track()</script></head>"
        "<body><nav><a href='/'>Home</a> | <a href='/people'>People</a> | Log in</nav>"
        "<main><h1>Leave policy</h1><p>Employees have <b>25 days</b> of paid leave a year; "
        "they book it in the HR tool two weeks ahead.</p><h2>Travel</h2><p>Trains in second "
        "class for trips under four hours; flights need a manager's approval.</p></main>"
        "<footer>Copyright 2026 Acme Corp. Privacy. Cookies.</footer></body></html>"
    )
    parsed = parse(page.encode(), HTML)
    assert parsed.markdown
    assert parsed.text.startswith("# Leave policy\n\nEmployees have 25 days of paid leave")
    assert "## Travel" in parsed.text
    for boilerplate in ("Log in", "Copyright", "track()", "Intranet"):
        assert boilerplate not in parsed.text


def test_a_short_page_loses_its_boilerplate_too() -> None:
    page = (
        "<html><body><nav>Home | People | Log in</nav><main><h1>Travel</h1><p>Trains in "
        "second class for trips under four hours.</p></main><footer>Copyright Acme</footer>"
        "</body></html>"
    )
    assert parse(page.encode(), HTML).text == (
        "# Travel\n\nTrains in second class for trips under four hours."
    )


def test_an_html_fragment_without_main_text_keeps_its_visible_text() -> None:
    assert parse(b"<nav>Menu</nav><p>Short note.</p>", HTML).text == "Short note."
    html = (
        "<html><head><title>x</title><style>p{}</style></head><body><h2>Leave</h2>"
        "<p>25 &amp; more days.</p><script>alert(1)</script><ul><li>One</li><li>Two</li></ul>"
        "</body></html>"
    )
    assert visible_text(html) == "## Leave\n\n25 & more days.\n\nOne\n\nTwo"
