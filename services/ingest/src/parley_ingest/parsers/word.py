"""DOCX (Word 2007 and later): paragraphs and tables in document order (python-docx).

Headings become Markdown headings (the Title style at level 1, "Heading N" under it), so
chunking follows the document's sections; list items become "- " lines; a table becomes one
line per row, its cells separated by " | " (a merged cell once). Page headers and footers,
comments and text boxes are left out. The archive is checked before it is unpacked: a
document that expands past :data:`MAX_UNPACKED_BYTES` is refused, whatever its size as sent.
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

from parley_ingest.parsers import ParsedText, UnreadableDocument

MAX_UNPACKED_BYTES = 256 * 1024 * 1024
_HEADING_STYLE = re.compile(r"^heading (\d)$", re.IGNORECASE)
_MARKDOWN_LINE = re.compile(r"^#")


def _unreadable(why: str) -> UnreadableDocument:
    return UnreadableDocument(f"the Word document cannot be read: {why}", code="docx_unreadable")


def _paragraph(paragraph: Any) -> str:
    text = " ".join(paragraph.text.split())
    if not text:
        return ""
    style = (paragraph.style.name if paragraph.style is not None else "") or ""
    if style.lower() == "title":
        return f"# {text}"
    if heading := _HEADING_STYLE.match(style):
        return "#" * min(int(heading.group(1)) + 1, 6) + f" {text}"
    if style.lower().startswith("list"):
        return f"- {text}"
    # Body text that happens to start like a heading stays body text.
    return f" {text}" if _MARKDOWN_LINE.match(text) else text


def _table(table: Any) -> list[str]:
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = " ".join(cell.text.split())
            if text and (not cells or cells[-1] != text):  # a merged cell repeats its text
                cells.append(text)
        if cells:
            rows.append(" | ".join(cells))
    return rows


def parse_docx(content: bytes) -> ParsedText:
    import docx  # imported on use, as every format's library
    from docx.table import Table

    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            unpacked = sum(item.file_size for item in archive.infolist())
        if unpacked > MAX_UNPACKED_BYTES:
            raise _unreadable(f"it unpacks to more than {MAX_UNPACKED_BYTES // (1024 * 1024)} MiB")
        document = docx.Document(io.BytesIO(content))
        blocks: list[str] = []
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                blocks += _table(item)
            elif text := _paragraph(item):
                blocks.append(text)
    except UnreadableDocument:
        raise
    except Exception as error:  # an untrusted file breaks a parser in many ways
        raise _unreadable(f"damaged, or not a Word document ({type(error).__name__})") from None
    if not blocks:
        raise UnreadableDocument("the Word document has no text", code="empty_document")
    return ParsedText("\n\n".join(blocks), markdown=True)
