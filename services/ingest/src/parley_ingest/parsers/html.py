"""HTML: the page's main text, its boilerplate (navigation, headers, footers, cookie banners)
removed by trafilatura, its headings kept as Markdown headings. A page trafilatura finds no
main text in (a fragment, a page of links) falls back to its visible text, read with the
standard library's parser: block elements become paragraph breaks, ``<h1>``–``<h6>`` Markdown
headings, and ``<nav>``, ``<footer>`` and ``<aside>`` are left out.
"""

from __future__ import annotations

import re
from functools import cache
from html.parser import HTMLParser
from typing import Any

from parley_ingest.parsers import ParsedText
from parley_ingest.parsers.text import decode

_BLOCKS = {"p", "div", "section", "article", "li", "ul", "ol", "br", "tr", "table", "pre",
           "blockquote", "header", "main"}  # fmt: skip
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_HIDDEN = {"script", "style", "noscript", "template", "head", "nav", "footer", "aside"}
# trafilatura's Markdown marks emphasis; a passage reads (and embeds) better without it.
_EMPHASIS = re.compile(r"(?<![\w*])(\*{1,2})(\S(?:.*?\S)?)\1(?![\w*])")


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


def visible_text(html: str) -> str:
    """All of the page's visible text, paragraphs separated by blank lines."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    paragraphs = (" ".join(p.split()) for p in "".join(parser.parts).split("\n\n"))
    return "\n\n".join(p for p in paragraphs if p)


@cache
def _config() -> Any:
    from trafilatura.settings import use_config

    config = use_config()
    # Its defaults suit web crawls: a main text under 250 characters is not taken (it then
    # returns the whole page, menus and all), nor a file over 20 MB (ingest has its limit).
    config.set("DEFAULT", "MIN_EXTRACTED_SIZE", "25")
    config.set("DEFAULT", "MAX_FILE_SIZE", str(1 << 30))
    return config


def main_text(html: str) -> str:
    """The page's main text without its boilerplate, as Markdown; "" when none is found."""
    import trafilatura  # imported on use: it costs a second at start

    found = trafilatura.extract(
        html,
        config=_config(),
        output_format="markdown",
        include_formatting=True,  # keeps headings (and paragraph breaks)
        include_tables=True,
        include_comments=False,
        include_links=False,
        include_images=False,
        favor_recall=True,
        deduplicate=False,
    )
    return _EMPHASIS.sub(r"\2", found).strip() if found else ""


def parse_html(content: bytes) -> ParsedText:
    html = decode(content)
    return ParsedText(main_text(html) or visible_text(html), markdown=True)
