"""Document bytes to text, one module per format (``text``, ``html``, ``pdf``, ``word``).
Pure: no I/O, no network.

Every parser returns a :class:`ParsedText` and reports a file it cannot read as an
:class:`UnreadableDocument` whose code says why, so a failed document reads clearly:

- ``invalid_encoding``, ``binary_content``: text that is not UTF-8, or has NUL bytes
- ``empty_document``: nothing to index (a text with only blanks, an empty Word document)
- ``pdf_encrypted``: a PDF that needs a password to open
- ``pdf_no_text``: a PDF without a text layer (scanned pages: run OCR first)
- ``pdf_unreadable``, ``docx_unreadable``: a damaged file, or one too large once unpacked
"""

from __future__ import annotations

from dataclasses import dataclass

from parley_runtime.errors import InvalidArgument

# Separates pages in the text of a paged format; chunking counts pages by it.
PAGE_BREAK = "\f"


@dataclass(frozen=True, slots=True)
class ParsedText:
    """A document's text. ``markdown``: headings are marked Markdown's way (``# Title``), so
    chunking follows its sections. ``paged``: pages are separated by :data:`PAGE_BREAK`."""

    text: str
    markdown: bool = False
    paged: bool = False


class UnreadableDocument(InvalidArgument):
    """The bytes are of a supported type, but no text can be had from them (see the codes in
    the module docstring)."""

    default_code = "unreadable_document"
