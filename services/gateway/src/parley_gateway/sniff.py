"""An uploaded file's first bytes, screened before they go on to ingest.

Ingest reads a document's type from its bytes (all of them) and refuses what no knowledge base
takes, whatever the client declared. The gateway screens the first :data:`SNIFF_BYTES` as they
arrive, so that a file of a kind nobody takes is refused at once, before it is streamed on:
a known binary signature (an image, audio or video, an archive other than zip, an old Office
or RTF document, an executable), a UTF-16 or UTF-32 byte-order mark, or binary data (a NUL
byte) in what is not a PDF or a zip archive (a Word document is one). Such a file is a 415
``unsupported_content_type`` naming what it is (``parley_runtime.filetypes``, which ingest
shares). What passes (PDF, zip, text) goes to ingest
with the declared type and file name, which only choose among the types the bytes allow.
"""

from __future__ import annotations

import codecs

from parley_runtime.filetypes import WEAK_SIGNATURES, declared_type, refuse_known, unsupported

__all__ = ["SNIFF_BYTES", "declared_type", "screen"]

SNIFF_BYTES = 8192
# Formats ingest reads (it looks inside): a PDF, and a zip that may be a Word document.
PASSED = (b"%PDF-", b"PK\x03\x04")


def _is_utf8(head: bytes, complete: bool) -> bool:
    """Whether ``head`` is UTF-8; a sequence cut at the end of a partial head is fine."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=complete)
    except UnicodeDecodeError:
        return False
    return True


def screen(head: bytes, *, complete: bool) -> None:
    """Refuse a file that begins with ``head`` (the whole file when ``complete``) when it is
    of a kind no knowledge base takes (see the module docstring)."""
    if head.lstrip(b"\t\n\r ").startswith(PASSED):
        return
    refuse_known(head)
    if b"\x00" in head or not _is_utf8(head, complete):
        for signature, what in WEAK_SIGNATURES:
            if head.startswith(signature):
                raise unsupported(what)
    if b"\x00" in head:
        raise unsupported("binary data")
