"""Turning document bytes into text. Pure: no I/O.

Plain text and Markdown are read as UTF-8 (Markdown keeps its headings, which chunking uses);
HTML is reduced to its visible text with the standard library's parser, block elements
becoming paragraph breaks and ``<h1>``–``<h6>`` becoming Markdown headings.
"""

from __future__ import annotations

from html.parser import HTMLParser

from parley_runtime.errors import InvalidArgument

SUPPORTED = ("text/plain", "text/markdown", "text/html")
_BLOCKS = {"p", "div", "section", "article", "li", "ul", "ol", "br", "tr", "table", "pre",
           "blockquote", "header", "footer", "main", "aside", "nav"}  # fmt: skip
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_HIDDEN = {"script", "style", "noscript", "template", "head"}


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag in _HEADINGS:
            self.parts.append("\n\n" + "#" * _HEADINGS[tag] + " ")
        elif tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _HEADINGS or tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    paragraphs = (" ".join(p.split()) for p in "".join(parser.parts).split("\n\n"))
    return "\n\n".join(p for p in paragraphs if p)


def check_content_type(content_type: str) -> str:
    base = content_type.split(";")[0].strip().lower()
    if base not in SUPPORTED:
        raise InvalidArgument(
            f"content_type: {content_type!r} is not supported; use one of {', '.join(SUPPORTED)}",
            code="unsupported_content_type",
        )
    return base


def to_text(content: bytes, content_type: str) -> str:
    """The document's text; INVALID_ARGUMENT when the bytes are not UTF-8 text."""
    kind = check_content_type(content_type)
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidArgument(
            f"content: not UTF-8 text (invalid byte at position {error.start})",
            code="invalid_encoding",
        ) from None
    if "\x00" in text:
        raise InvalidArgument("content: contains NUL bytes; not a text file", code="binary_content")
    return html_to_text(text) if kind == "text/html" else text.replace("\r\n", "\n")


def has_headings(content_type: str) -> bool:
    """Whether the parsed text marks headings Markdown's way (Markdown, and HTML as parsed)."""
    return check_content_type(content_type) != "text/plain"
