"""What a document is, read from its bytes: the client's word is never trusted. Pure.

The bytes decide between the families: a PDF (``%PDF-``), a Word document (a zip archive
holding ``word/document.xml``), or UTF-8 text; anything else is refused, named when it is a
common kind of file (``parley_runtime.filetypes``, shared with the gateway's screening).
Among text types, a page that starts like an HTML document is HTML; a declared type (or a
file name) chooses between Markdown and plain text, and a text with Markdown headings and
nothing declared is Markdown. A declared type the bytes contradict (a PDF sent as
``text/plain``, text sent as ``application/pdf``) is refused as ``content_type_mismatch``
rather than guessed at: the client learns its mistake.
"""

from __future__ import annotations

import io
import re
import zipfile

from parley_runtime.errors import InvalidArgument
from parley_runtime.filetypes import UNDECLARED, refuse_known, unsupported

TEXT, MARKDOWN, HTML = "text/plain", "text/markdown", "text/html"
PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
SUPPORTED = (TEXT, MARKDOWN, HTML, PDF, DOCX)
_NAMES = {TEXT: "text", MARKDOWN: "Markdown", HTML: "HTML", PDF: "a PDF", DOCX: "a Word document"}
_ZIPPED = {
    "xl/workbook.xml": "an Excel workbook",
    "ppt/presentation.xml": "a PowerPoint presentation",
    "content.xml": "an OpenDocument file (save it as .docx or PDF)",
}
_HTML_START = re.compile(
    r"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b",
    re.IGNORECASE | re.DOTALL,
)
_HTML_TAG = re.compile(
    r"<(?:p|div|h[1-6]|table|ul|ol|li|section|article|main|span|a|br|pre)\b[^>]*>", re.IGNORECASE
)
_MARKDOWN_HEADING = re.compile(r"^#{1,6} \S", re.MULTILINE)
_MARKDOWN_NAMES = (".md", ".markdown", ".mdown", ".mkd")


def _unsupported(what: str) -> InvalidArgument:
    return unsupported(what, "content")


def _family(content: bytes) -> str:
    """PDF, DOCX or TEXT (text still to be told apart), from the bytes alone."""
    if content.lstrip(b"\t\n\r ").startswith(b"%PDF-"):
        return PDF
    if content.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(content)) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, ValueError):
            raise _unsupported("a damaged zip archive") from None
        if "word/document.xml" in names:
            return DOCX
        for name, what in _ZIPPED.items():
            if name in names:
                raise _unsupported(what)
        raise _unsupported("a zip archive")
    refuse_known(content, "content")
    return TEXT


def _text_type(head: str, declared: str, filename: str) -> str:
    if _HTML_START.match(head) or (declared == HTML and _HTML_TAG.search(head)):
        return HTML
    if declared == MARKDOWN or filename.lower().endswith(_MARKDOWN_NAMES):
        return MARKDOWN
    if declared in UNDECLARED and _MARKDOWN_HEADING.search(head):
        return MARKDOWN
    return TEXT


def sniff(content: bytes, declared: str = "", filename: str = "") -> str:
    """The content type of ``content``, one of :data:`SUPPORTED` (see the module docstring).
    ``declared`` is the client's type (parameters such as ``charset`` are ignored)."""
    declared = declared.split(";")[0].strip().lower()
    family = _family(content)
    said = _family_of(declared)
    if said is not None and said != family:
        raise InvalidArgument(
            f"content_type: {declared!r} was declared, but the bytes are {_NAMES[family]}; "
            "send its type, or none",
            code="content_type_mismatch",
        )
    if family != TEXT:
        return family
    # Text is told apart on its start; the whole is checked as UTF-8 when it is parsed.
    head = content[:65536].decode("utf-8", errors="ignore")
    return _text_type(head, declared, filename)


def _family_of(declared: str) -> str | None:
    """The family a declared type claims, or None when it claims nothing we take."""
    if declared in (PDF, DOCX):
        return declared
    if declared.startswith("text/"):
        return TEXT
    return None
