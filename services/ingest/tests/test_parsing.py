"""Parsing: bytes and a content type in, text (with Markdown headings) out, or a clear refusal."""

from __future__ import annotations

import pytest

from parley_ingest.parsing import check_content_type, has_headings, html_to_text, to_text
from parley_runtime.errors import InvalidArgument


def test_html_becomes_visible_text_with_headings() -> None:
    html = (
        "<html><head><title>x</title><style>p{}</style></head><body><h2>Leave</h2>"
        "<p>25 &amp; more days.</p><script>alert(1)</script><ul><li>One</li><li>Two</li></ul>"
        "</body></html>"
    )
    assert html_to_text(html) == "## Leave\n\n25 & more days.\n\nOne\n\nTwo"


def test_text_and_markdown_are_read_as_utf8() -> None:
    assert to_text("é\r\nok".encode(), "text/plain; charset=utf-8") == "é\nok"
    assert to_text("\ufeff# Title\n\nBody".encode(), "text/markdown") == "# Title\n\nBody"


def test_bytes_that_are_not_utf8_text_are_refused_clearly() -> None:
    with pytest.raises(InvalidArgument, match="content: not UTF-8 text"):
        to_text(b"caf\xe9", "text/plain")
    with pytest.raises(InvalidArgument, match="content: contains NUL bytes"):
        to_text(b"a\x00b", "text/plain")


@pytest.mark.parametrize("content_type", ["application/pdf", "image/png", ""])
def test_unsupported_types_name_the_supported_ones(content_type: str) -> None:
    with pytest.raises(InvalidArgument, match="use one of text/plain, text/markdown, text/html"):
        check_content_type(content_type)


def test_only_plain_text_has_no_headings() -> None:
    assert not has_headings("text/plain")
    assert has_headings("text/markdown")
    assert has_headings("TEXT/HTML; charset=utf-8")
