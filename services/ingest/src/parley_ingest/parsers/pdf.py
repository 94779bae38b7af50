"""PDF: the text layer of every page (pypdf), pages separated by a page break so chunks know
the page they start on.

A PDF that opens without a password (one encrypted only against editing or printing does) is
read; one that needs a password is ``pdf_encrypted``. A PDF whose pages hold (almost) no text
is a scan, ``pdf_no_text``: its words are pictures, which only OCR can read. A page that cannot
be read is skipped; a file that cannot be opened at all is ``pdf_unreadable``.
"""

from __future__ import annotations

import io
import logging

from parley_ingest.parsers import PAGE_BREAK, ParsedText, UnreadableDocument

# Fewer letters and digits than this per page, on average, is a scan: its only text is a
# page number or a stamp.
MIN_CHARACTERS_PER_PAGE = 8

log = logging.getLogger("parley.ingest.parsing")


def parse_pdf(content: bytes) -> ParsedText:
    from pypdf import PdfReader  # imported on use, as every format's library
    from pypdf.errors import DependencyError

    try:
        reader = PdfReader(io.BytesIO(content), strict=False)
        if reader.is_encrypted:
            try:
                opened = bool(reader.decrypt(""))  # 0: not opened; else which password did
            except DependencyError:  # AES without a cryptography library: cannot open it
                opened = False
            if not opened:
                raise UnreadableDocument(
                    "the PDF is protected by a password; upload a copy without it",
                    code="pdf_encrypted",
                )
        pages = list(reader.pages)
    except UnreadableDocument:
        raise
    except Exception as error:  # an untrusted file breaks a parser in many ways
        raise UnreadableDocument(
            f"the PDF cannot be read (damaged, or not a PDF): {type(error).__name__}",
            code="pdf_unreadable",
        ) from None
    texts: list[str] = []
    for number, page in enumerate(pages, start=1):
        try:
            text = page.extract_text()
        except Exception as error:  # one damaged page does not lose the others
            log.warning(
                "skipped an unreadable PDF page", extra={"page": number, "error": repr(error)}
            )
            text = ""
        texts.append(text.replace("\x00", "").replace(PAGE_BREAK, " "))
    if not pages:
        raise UnreadableDocument("the PDF has no pages", code="pdf_unreadable")
    characters = sum(ch.isalnum() for text in texts for ch in text)
    if characters < MIN_CHARACTERS_PER_PAGE * len(pages):
        raise UnreadableDocument(
            f"the PDF has no text layer ({len(pages)} pages of images, a scan?); "
            "run OCR on it and upload the result",
            code="pdf_no_text",
        )
    return ParsedText(PAGE_BREAK.join(texts), paged=True)
