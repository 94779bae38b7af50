"""Plain text and Markdown: UTF-8 (a byte-order mark is dropped), with Windows line ends."""

from __future__ import annotations

from parley_ingest.parsers import ParsedText, UnreadableDocument


def decode(content: bytes) -> str:
    """The bytes as UTF-8 text; :class:`UnreadableDocument` when they are not."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UnreadableDocument(
            f"content: not UTF-8 text (invalid byte at position {error.start})",
            code="invalid_encoding",
        ) from None
    if "\x00" in text:
        raise UnreadableDocument(
            "content: contains NUL bytes; not a text file", code="binary_content"
        )
    return text.replace("\r\n", "\n")


def parse_text(content: bytes, *, markdown: bool) -> ParsedText:
    return ParsedText(decode(content), markdown=markdown)
