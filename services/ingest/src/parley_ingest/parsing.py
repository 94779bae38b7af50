"""A document's bytes to its text, by content type (one parser per format in ``parsers/``).
Pure: no I/O.

The content type is the one :func:`~parley_ingest.sniffing.sniff` read from the bytes when the
document was stored. Text types are checked at upload (a file that is not UTF-8 text is
refused at once); PDF and Word files are opened only by the job, whose failure then carries
the parser's code (``pdf_encrypted``, ``pdf_no_text``, ...).
"""

from __future__ import annotations

from parley_ingest.parsers import ParsedText
from parley_ingest.parsers.html import parse_html
from parley_ingest.parsers.pdf import parse_pdf
from parley_ingest.parsers.text import parse_text
from parley_ingest.parsers.word import parse_docx
from parley_ingest.sniffing import DOCX, HTML, MARKDOWN, PDF, TEXT


def parse(content: bytes, content_type: str) -> ParsedText:
    """The document's text; :class:`~parley_ingest.parsers.UnreadableDocument` when there is
    none to be had."""
    if content_type == PDF:
        return parse_pdf(content)
    if content_type == DOCX:
        return parse_docx(content)
    if content_type == HTML:
        return parse_html(content)
    if content_type in (TEXT, MARKDOWN):
        return parse_text(content, markdown=content_type == MARKDOWN)
    raise ValueError(f"no parser for {content_type!r}")  # sniff() returns none such


def is_text(content_type: str) -> bool:
    """Whether the type is a text one, cheap enough to check in full at upload."""
    return content_type in (TEXT, MARKDOWN, HTML)
