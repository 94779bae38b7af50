"""Kinds of file a knowledge base cannot take, known by their first bytes. Pure.

The gateway screens an upload's first bytes with these as they arrive; ingest reads the whole
document's type from its bytes. Both refuse the same files, with the same words.
"""

from __future__ import annotations

import codecs

from parley_runtime.errors import InvalidArgument

# What a knowledge base takes, as a person would read it in a refusal.
TAKEN = "PDF, Word (.docx), HTML, Markdown and UTF-8 text"
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
UNICODE_MARKS = (
    codecs.BOM_UTF32_LE,
    codecs.BOM_UTF32_BE,
    codecs.BOM_UTF16_LE,
    codecs.BOM_UTF16_BE,
)
WIDE_TEXT = "UTF-16 or UTF-32 text (convert it to UTF-8)"
# Declared types that say nothing about a file.
UNDECLARED = ("", "application/octet-stream", "binary/octet-stream")


def unsupported(what: str, field: str = "") -> InvalidArgument:
    """The refusal of a file that is ``what``, about request field ``field`` when given (its
    code ``unsupported_content_type`` is a 415 at the gateway)."""
    where = f"{field}: " if field else ""
    return InvalidArgument(
        f"{where}the file is {what}; a knowledge base takes {TAKEN}",
        code="unsupported_content_type",
    )


def refuse_known(head: bytes, field: str = "") -> None:
    """Refuse ``head`` when it begins like a file of a kind no knowledge base takes (the
    strong signatures, and UTF-16 or UTF-32 text)."""
    for signature, what in SIGNATURES:
        if head.startswith(signature):
            raise unsupported(what, field)
    if head.startswith(UNICODE_MARKS):
        raise unsupported(WIDE_TEXT, field)


def declared_type(content_type: str) -> str:
    """A declared type as it is compared: without parameters, lower case, and empty when it
    says nothing (``application/octet-stream``)."""
    base = content_type.split(";")[0].strip().lower()
    return "" if base in UNDECLARED else base
