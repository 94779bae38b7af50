"""An uploaded file's first bytes, screened before they go on to ingest.

Ingest reads a document's type from its bytes (all of them) and refuses what no knowledge base
takes, whatever the client declared. The gateway screens the first :data:`SNIFF_BYTES` as they
arrive, so that a file of a kind nobody takes is refused at once, before it is streamed on:
a known binary signature (an image, audio or video, an archive other than zip, an old Office
or RTF document, an executable), a UTF-16 or UTF-32 byte-order mark, or binary data (a NUL
byte) in what is not a PDF or a zip archive (a Word document is one). Such a file is a 415
``unsupported_content_type`` naming what it is. What passes (PDF, zip, text) goes to ingest
with the declared type and file name, which only choose among the types the bytes allow.
"""

from __future__ import annotations

import codecs

from parley_runtime.errors import InvalidArgument

SNIFF_BYTES = 8192
# Leading bytes of formats a knowledge base cannot take, and what they are.
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Office document (save it as .docx or PDF)"),
    (b"{\\rtf", "an RTF document (save it as .docx or PDF)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x00\x00\x01\x00", "an icon"),
    (b"\x1aE\xdf\xa3", "a Matroska or WebM video"),
    (b"\x7fELF", "an executable"),
    (b"\xcf\xfa\xed\xfe", "an executable"),
    (b"SQLite format 3\x00", "a SQLite database"),
    (b"\x00asm", "a WebAssembly module"),
)
# Signatures short enough to begin a text too: they name a file only when it is not text.
WEAK_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"BM", "a bitmap image"),
    (b"BZh", "a bzip2 archive"),
    (b"MZ", "an executable"),
    (b"RIFF", "an audio, video or WebP file"),
    (b"OggS", "an Ogg audio file"),
    (b"ID3", "an MP3 audio file"),
    (b"fLaC", "a FLAC audio file"),
)
_UNICODE_MARKS = (
    codecs.BOM_UTF32_LE,
    codecs.BOM_UTF32_BE,
    codecs.BOM_UTF16_LE,
    codecs.BOM_UTF16_BE,
)
# Formats ingest reads (it looks inside): a PDF, and a zip that may be a Word document.
PASSED = (b"%PDF-", b"PK\x03\x04")
# Declared types that say nothing about a file.
UNDECLARED = ("", "application/octet-stream", "binary/octet-stream")


def unsupported(what: str) -> InvalidArgument:
    """The refusal of a file that is ``what`` (errors.py makes its code a 415)."""
    return InvalidArgument(
        f"the file is {what}; a knowledge base takes PDF, Word (.docx), HTML, Markdown and "
        "UTF-8 text",
        code="unsupported_content_type",
    )


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
    for signature, what in SIGNATURES:
        if head.startswith(signature):
            raise unsupported(what)
    if head.startswith(_UNICODE_MARKS):
        raise unsupported("UTF-16 or UTF-32 text (convert it to UTF-8)")
    if b"\x00" in head or not _is_utf8(head, complete):
        for signature, what in WEAK_SIGNATURES:
            if head.startswith(signature):
                raise unsupported(what)
    if b"\x00" in head:
        raise unsupported("binary data")


def declared_type(content_type: str) -> str:
    """The type a part declares, as ingest takes it: without parameters, lower case, and
    empty when it says nothing (``application/octet-stream``)."""
    base = content_type.split(";")[0].strip().lower()
    return "" if base in UNDECLARED else base
